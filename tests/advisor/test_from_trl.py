"""TRL `trl sft --config` files (ScriptArguments + SFTConfig + ModelConfig, as trl/scripts/sft.py parses
them) and a plain TrainingArguments file: TRL's and transformers' defaults, PEFT's default targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from advisor.config.trainers import common, read

EX = Path(__file__).resolve().parents[1] / "fixtures" / "trainers" / "trl"


def test_full_sft_takes_sftconfig_and_modelconfig_defaults():
    s = read(EX / "sft_full.yaml")
    assert s.tool == "trl"
    v = s.values
    assert (v["model"], v["method"]) == ("qwen2.5-0.5b", "full")
    assert (v["train.micro_batch_size"], v["train.grad_accum"], v["train.epochs"], v["train.packing"]) == (
        2,
        8,
        1.0,
        True,
    )
    defaulted = {d["as"]: d["why"] for d in s.defaulted}
    assert "train.seq_len=1024" in defaulted and "train.gradient_checkpointing=true" in defaulted
    # ModelConfig loads the weights in float32 and SFTConfig turns bf16 autocast on: fp32 master weights
    assert v["train.precision"] == "amp_bf16" and "float32" in defaulted["train.precision=amp_bf16"]


def test_lora_takes_peft_default_targets_and_explicit_dtype():
    s = read(EX / "sft_lora.yaml")
    v = s.values
    assert v["model"] == "qwen2.5-7b" and v["model.max_position_embeddings"] == 32768  # the instruct upload
    assert (v["method"], v["method.r"], v["method.alpha"], v["method.dropout"]) == ("lora", 32, 16, 0.05)
    assert v["method.target_modules"] == ["q_proj", "v_proj"]  # PEFT's default for qwen2
    assert v["train.precision"] == "bf16" and v["train.attention"] == "flash"


def test_qlora_json_with_fsdp_and_a_mirror():
    s = read(EX / "sft_qlora_fsdp.json")
    v = s.values
    assert v["model"] == "llama-3.1-8b" and v["model.path"] == "unsloth/Meta-Llama-3.1-8B-Instruct"
    assert (v["method"], v["method.double_quant"], v["method.target_modules"]) == (
        "qlora",
        True,
        "all-linear",
    )
    assert (v["train.seq_len"], v["train.optimizer"], v["parallel"]) == (2048, "paged_adamw_8bit", "fsdp")
    assert "lora_modules_to_save" in {n["key"] for n in s.not_modelled}


def test_training_arguments_file_is_refused_for_what_it_cannot_say():
    s = read(EX / "training_args.json")
    refused = {r["key"]: r for r in s.refused}
    assert refused["model_name_or_path"]["missing"] and refused["max_length"]["resolve"] == ["train.seq_len"]
    assert refused["optim"]["resolve"] == ["train.optimizer"]  # adafactor's states are not AdamW's
    assert "offload" in next(r["why"] for k, r in refused.items() if k.startswith("deepspeed"))
    defaulted = {d["as"] for d in s.defaulted}
    assert not any(d.startswith("train.lr") for d in defaulted)  # given: 3e-5


def test_peft_default_targets_are_peft_own():
    pytest.importorskip("peft")
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_map

    for arch, targets in common.PEFT_DEFAULT_TARGETS.items():
        assert list(targets) == list(peft_map[arch]), arch


def test_optimizer_names_are_transformers_own():
    from transformers.training_args import OptimizerNames

    assert set(common.OPTIMIZERS) <= {o.value for o in OptimizerNames}
    assert set(common.OPTIMIZER_NAMES.values()) <= {o.value for o in OptimizerNames}

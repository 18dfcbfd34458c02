"""axolotl's own example configs (tests/fixtures/trainers/axolotl, copied from axolotl 0.19.0's sdist)
read into tunewise settings, with what is defaulted, not modelled or refused."""

from __future__ import annotations

from pathlib import Path

from advisor.config.trainers import read

EX = Path(__file__).resolve().parents[1] / "fixtures" / "trainers" / "axolotl" / "examples"


def _keys(items: list[dict]) -> set[str]:
    return {i["key"] for i in items}


def test_lora_single_gpu_reads_every_modelled_setting():
    s = read(EX / "llama-3" / "lora-1b.yml")
    assert s.tool == "axolotl"
    v = s.values
    assert v["model"] == "llama-3.2-1b" and v["model.path"] == "NousResearch/Llama-3.2-1B"  # a mirror
    assert (v["method"], v["method.r"], v["method.alpha"], v["method.dropout"]) == ("lora", 16, 32, 0.05)
    assert v["method.target_modules"] == [
        "gate_proj",
        "down_proj",
        "up_proj",
        "q_proj",
        "v_proj",
        "k_proj",
        "o_proj",
    ]
    assert (v["train.seq_len"], v["train.packing"]) == (2048, True)
    assert (v["train.micro_batch_size"], v["train.grad_accum"], v["train.epochs"]) == (2, 2, 1.0)
    assert v["train.optimizer"] == "adamw_8bit" and v["train.lr"] == 0.0002  # YAML's 0.0002
    assert v["train.precision"] == "bf16" and v["train.gradient_checkpointing"] is True
    assert v["train.attention"] == "flash"  # attn_implementation: flash_attention_2
    assert v["train.warmup_ratio"] == 0.1
    assert not s.refused
    assert "tf32" not in _keys(s.not_modelled)  # tf32: false changes nothing
    assert {"wandb_project", "logging_steps", "special_tokens"} <= set(s.no_effect)
    assert "datasets" in _keys(s.not_modelled)  # a Hub dataset: sized from data.rows × avg_tokens


def test_qlora_reads_4bit_and_the_loaders_quantization_defaults():
    s = read(EX / "llama-3" / "qlora.yml")
    v = s.values
    assert v["model"] == "llama-3.1-8b" and v["model.max_position_embeddings"] == 8192  # Llama 3, not 3.1
    assert (v["method"], v["method.r"], v["method.alpha"], v["method.target_modules"]) == (
        "qlora",
        32,
        16,
        "all-linear",
    )
    assert v["train.optimizer"] == "paged_adamw_32bit"
    defaulted = {d["as"]: d["why"] for d in s.defaulted}
    assert "axolotl's QLoRA loader" in defaulted["method.quant_type=nf4"]
    assert "method.double_quant=true" in defaulted


def test_full_fine_tune_without_adapter():
    s = read(EX / "llama-3" / "fft-8b.yaml")
    v = s.values
    assert v["method"] == "full" and "method.r" not in v
    assert v["model"] == "llama-3.1-8b" and "model.max_position_embeddings" not in v  # Meta-Llama-3.1-8B
    assert (v["train.seq_len"], v["train.micro_batch_size"], v["train.grad_accum"]) == (8192, 1, 8)
    assert v["train.optimizer"] == "paged_adamw_8bit" and v["train.lr"] == 2e-5  # the YAML text "2e-5"


def test_8bit_loading_and_modules_to_save_are_never_silently_modelled():
    s = read(EX / "llama-3" / "lora-8b.yml")
    (ref,) = s.refused
    assert ref["key"] == "load_in_8bit" and ref["resolve"] == ["method"] and "8-bit" in ref["why"]
    mts = next(n for n in s.not_modelled if n["key"] == "lora_modules_to_save")
    assert mts["value"] == ["embed_tokens", "lm_head"] and "train in full" in mts["why"]


def test_fsdp_with_parameter_offload_is_refused_and_deepspeed_stage_read():
    s = read(EX / "llama-3" / "qlora-fsdp-70b.yaml")
    assert s.values["model"] == "llama-3.1-70b"  # casperhansen/llama-3-70b-fp16, a known re-upload
    (ref,) = s.refused
    assert ref["key"] == "fsdp_config.fsdp_offload_params" and ref["resolve"] == ["parallel"]
    ds = read(EX / "llama-3" / "lora-1b-ray.yml")  # deepspeed: deepspeed_configs/zero3.json
    assert ds.values["parallel"] == "zero3" and not ds.refused
    assert any(n["key"] == "gpu.count" for n in ds.not_modelled)  # the launcher decides it


def test_unknown_hub_model_is_refused_with_the_keys_that_name_one():
    s = read(EX / "qwen2" / "qlora-fsdp.yaml")  # Qwen/Qwen2-7B: not in the catalog, not cached here
    refused = {r["key"]: r for r in s.refused}
    assert (
        refused["base_model"]["resolve"] == ["model", "model.config_path"]
        and refused["base_model"]["missing"]
    )
    assert "fsdp_config.fsdp_offload_params" in refused

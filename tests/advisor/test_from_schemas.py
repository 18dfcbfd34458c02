"""The importers' defaults are the tools' own: held to tests/fixtures/trainers/schemas.json, which
scripts/trainer_schemas.py reads from the real packages (axolotl 0.19.0, LLaMA-Factory 0.9.5, TRL 1.16.0),
and to the packages themselves where they import (TRL: the dev extra installs it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from advisor.config.trainers import common, read

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "trainers"
SCHEMAS = json.loads((FIX / "schemas.json").read_text())
OPT = common.OPTIMIZERS.get


def _defaults(tmp_path: Path, text: str) -> dict:
    f = tmp_path / "minimal.yaml"
    f.write_text(text)
    return read(f).values


# (their field, our key, their default → ours)
AXOLOTL = [
    ("sequence_len", "train.seq_len", int),
    ("micro_batch_size", "train.micro_batch_size", int),
    ("gradient_accumulation_steps", "train.grad_accum", int),
    ("num_epochs", "train.epochs", float),
    ("optimizer", "train.optimizer", OPT),
    ("lora_dropout", "method.dropout", float),
    ("gradient_checkpointing", "train.gradient_checkpointing", bool),
    ("sample_packing", "train.packing", bool),
    ("bf16", "train.precision", lambda v: "bf16" if v == "auto" else None),
]
LLAMAFACTORY = [
    ("lora_rank", "method.r", int),
    ("lora_alpha", "method.alpha", lambda v: v),  # None: 2 × rank, tunewise's null
    ("lora_dropout", "method.dropout", float),
    ("lora_target", "method.target_modules", lambda v: "all-linear" if v == "all" else v),
    ("cutoff_len", "train.seq_len", int),
    ("per_device_train_batch_size", "train.micro_batch_size", int),
    ("gradient_accumulation_steps", "train.grad_accum", int),
    ("num_train_epochs", "train.epochs", float),
    ("learning_rate", "train.lr", float),
    ("optim", "train.optimizer", OPT),
    ("flash_attn", "train.attention", lambda v: {"auto": "sdpa"}[v]),
    ("quantization_type", "method.quant_type", str),
    ("double_quantization", "method.double_quant", bool),
    ("disable_gradient_checkpointing", "train.gradient_checkpointing", lambda v: not v),
    ("seed", "seed", int),
    ("finetuning_type", "method", lambda v: "qlora" if v == "lora" else v),  # the file below quantizes
    ("packing", "train.packing", lambda v: bool(v)),  # None: only for stage pt
]
TRL = [
    ("lora_r", "method.r", int),
    ("lora_alpha", "method.alpha", float),
    ("lora_dropout", "method.dropout", float),
    ("max_length", "train.seq_len", int),
    ("packing", "train.packing", bool),
    ("gradient_checkpointing", "train.gradient_checkpointing", bool),
    ("learning_rate", "train.lr", float),
    ("per_device_train_batch_size", "train.micro_batch_size", int),
    ("gradient_accumulation_steps", "train.grad_accum", int),
    ("num_train_epochs", "train.epochs", float),
    ("optim", "train.optimizer", OPT),
    ("use_bnb_nested_quant", "method.double_quant", bool),
    ("bnb_4bit_quant_type", "method.quant_type", str),
    ("seed", "seed", int),
    ("dtype", "train.precision", lambda v: {"float32": "bf16"}[v]),  # fp32 load, but QLoRA computes in bf16
]


@pytest.mark.parametrize(
    "tool,text,table",
    [
        ("axolotl", "base_model: Qwen/Qwen2.5-0.5B\nadapter: lora\nlora_r: 8\n", AXOLOTL),
        (
            "llamafactory",
            "model_name_or_path: Qwen/Qwen2.5-0.5B\nstage: sft\nquantization_bit: 4\n",
            LLAMAFACTORY,
        ),
        ("trl", "model_name_or_path: Qwen/Qwen2.5-0.5B\nuse_peft: true\nload_in_4bit: true\n", TRL),
    ],
)
def test_defaults_are_the_tools_own(tmp_path, tool, text, table):
    fields = SCHEMAS[tool]["fields"]
    values = _defaults(tmp_path, text)
    for theirs, ours, convert in table:
        assert values[ours] == convert(fields[theirs]), (theirs, fields[theirs], ours, values[ours])


def test_trainingarguments_defaults_for_a_plain_trainer_file(tmp_path):
    ta = SCHEMAS["trl"]["training_arguments"]
    v = _defaults(
        tmp_path, "model_name_or_path: Qwen/Qwen2.5-0.5B\noutput_dir: o\nper_device_train_batch_size: 2\n"
    )
    assert v["train.lr"] == ta["learning_rate"]
    assert v["train.gradient_checkpointing"] is False and ta["gradient_checkpointing"] in (False, None)


def _live(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(not _live("trl"), reason="trl is not installed (the dev extra installs it)")
def test_the_recorded_trl_schema_is_trls():
    import dataclasses
    from importlib.metadata import version

    from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, SFTConfig

    rec = SCHEMAS["trl"]
    live = {
        f.name
        for c in (ScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig)
        for f in dataclasses.fields(c)
    }
    if version("trl") == rec["version"]:
        assert live == set(rec["fields"])
    for theirs, _, _ in TRL:  # the fields the importer maps exist in whatever TRL is installed
        assert theirs in live, theirs

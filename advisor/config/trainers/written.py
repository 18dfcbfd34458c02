"""What an export writes for a tool: the config file (and the files it names), the command that runs
it, and what the file cannot say. Shared by the per-tool `export` functions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from advisor.config.schema import RunConfig
from advisor.config.trainers.common import OPTIMIZER_NAMES
from advisor.errors import ConfigError


@dataclass
class Export:
    """Files by name (relative to the export folder), the one to run, and how to run it."""

    tool: str
    main: str  # the config file's name
    files: dict[str, str] = field(default_factory=dict)
    command: str = ""  # runs the config (with {config} for the config file's path)
    notes: list[str] = field(default_factory=list)
    messages_file: str | None = None  # the config names data.path's rows as chat messages, in this file


def dump_yaml(doc: dict[str, Any], header: str) -> str:
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body


def deepspeed_file(parallel: str) -> str:
    """A DeepSpeed config for zero2 / zero3 (no offload; batch sizes from the trainer's arguments)."""
    stage = {"zero2": 2, "zero3": 3}[parallel]
    doc = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": {"stage": stage, "overlap_comm": True, "contiguous_gradients": True},
    }
    return json.dumps(doc, indent=2) + "\n"


def trainer_parallel(
    cfg: RunConfig, folder: Path, name: str, files: dict[str, str], fsdp_config: dict[str, Any]
) -> dict[str, Any]:
    """transformers Trainer arguments for cfg's multi-GPU parallelism (TRL and LLaMA-Factory read the
    same keys): zero2/zero3 → a DeepSpeed file written beside the config, fsdp → FSDP2 full_shard."""
    if cfg.gpu.count <= 1:
        return {}
    if cfg.parallel in ("zero2", "zero3"):
        files[f"{name}.deepspeed.json"] = deepspeed_file(cfg.parallel)
        return {"deepspeed": str(folder.resolve() / f"{name}.deepspeed.json")}
    if cfg.parallel == "fsdp":
        return {"fsdp": "full_shard auto_wrap", "fsdp_config": fsdp_config}
    return {}


def optimizer_name(cfg: RunConfig) -> str:
    return OPTIMIZER_NAMES[cfg.train.optimizer]


def alpha_int(cfg: RunConfig, tool: str) -> int:
    """LoRA alpha as the integer these tools take (tunewise's null = 2 × r)."""
    a = cfg.method.alpha_eff
    if a != int(a):
        raise ConfigError(f"method.alpha={a}: {tool} takes an integer LoRA alpha")
    return int(a)


def data_format(cfg: RunConfig) -> str:
    """`instruction` or `chat` (the caller resolves `auto` from the rows before exporting)."""
    return "chat" if cfg.data.format == "chat" else "instruction"


def refuse(tool: str, key: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"{key}={value}: cannot be written for {tool}: {why}")

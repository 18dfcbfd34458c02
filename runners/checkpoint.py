"""Resumable checkpoints in OUT_DIR/checkpoint/state.pt, written atomically (tmp file + os.replace).

The file holds only what `torch.load(weights_only=True)` reads: the trainable parameters by name (all of
them for full fine-tuning, the adapter for LoRA/QLoRA), optimizer / scheduler / grad-scaler state, the
torch RNG states, the optimizer step reached (which fixes the data position: the micro-batch stream is
deterministic), the eval curve so far and the measurements so far. A checkpoint is used only by a
run whose resolved config is the same (its hash is stored alongside).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from runners.model import Model

FILE = "state.pt"


@dataclass
class Trainables:
    """What training changes, and so what a checkpoint saves and restores."""

    model: Model
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None  # amp_fp16 only


@dataclass(frozen=True)
class Checkpoints:
    """Where and how often a run saves its checkpoint."""

    folder: Path  # OUT_DIR/checkpoint
    key: str  # config_key(cfg.to_dict()): a checkpoint resumes only the same config
    every_steps: int


def config_key(cfg_dict: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg_dict, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save(where: Checkpoints, parts: Trainables, step: int, state: dict[str, Any]) -> None:
    where.folder.mkdir(parents=True, exist_ok=True)
    blob = {
        "config_key": where.key,
        "step": step,
        "trainable": {n: p.detach() for n, p in parts.model.named_parameters() if p.requires_grad},
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "rng_python": list(random.getstate()[1]),
        "state": json.dumps(state),
    }
    tmp = where.folder / (FILE + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, where.folder / FILE)


def load(folder: Path, key: str) -> dict[str, Any] | None:
    """The checkpoint of this config, or None (no checkpoint, or one from another config)."""
    path = folder / FILE
    if not path.exists():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("config_key") != key:
        return None
    blob["state"] = json.loads(blob["state"])
    return blob


def restore(blob: dict[str, Any], parts: Trainables) -> int:
    """Load the checkpoint into the live objects; returns the step to continue from."""
    params = dict(parts.model.named_parameters())
    with torch.no_grad():
        for name, value in blob["trainable"].items():
            params[name].copy_(value.to(params[name].device))
    parts.optimizer.load_state_dict(blob["optimizer"])
    parts.scheduler.load_state_dict(blob["scheduler"])
    if parts.scaler is not None and blob.get("scaler"):
        parts.scaler.load_state_dict(blob["scaler"])
    torch.set_rng_state(blob["rng_torch"])
    if blob["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng_cuda"])
    if blob.get("rng_python"):
        random.setstate((3, tuple(blob["rng_python"]), None))
    return int(blob["step"])

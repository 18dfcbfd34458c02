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
from pathlib import Path

import torch

FILE = "state.pt"


def config_key(cfg_dict: dict) -> str:
    return hashlib.sha256(json.dumps(cfg_dict, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save(folder: Path, *, key: str, model, optimizer, scheduler, scaler, step: int, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    blob = {
        "config_key": key,
        "step": step,
        "trainable": {n: p.detach() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "rng_python": list(random.getstate()[1]),
        "state": json.dumps(state),
    }
    tmp = folder / (FILE + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, folder / FILE)


def load(folder: Path, key: str) -> dict | None:
    """The checkpoint of this config, or None (no checkpoint, or one from another config)."""
    path = folder / FILE
    if not path.exists():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("config_key") != key:
        return None
    blob["state"] = json.loads(blob["state"])
    return blob


def restore(blob: dict, *, model, optimizer, scheduler, scaler) -> int:
    """Load the checkpoint into the live objects; returns the step to continue from."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in blob["trainable"].items():
            params[name].copy_(value.to(params[name].device))
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    if scaler is not None and blob.get("scaler"):
        scaler.load_state_dict(blob["scaler"])
    torch.set_rng_state(blob["rng_torch"])
    if blob["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng_cuda"])
    if blob.get("rng_python"):
        random.setstate((3, tuple(blob["rng_python"]), None))
    return int(blob["step"])

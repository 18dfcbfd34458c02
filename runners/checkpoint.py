"""Resumable checkpoints in OUT_DIR/checkpoint/state.pt, written atomically (tmp file + os.replace).

The file holds only what `torch.load(weights_only=True)` reads: the trainable parameters by name (all of
them for full fine-tuning, the adapter for LoRA/QLoRA), optimizer / scheduler / grad-scaler state, the
torch RNG states, the optimizer step reached (which fixes the data position: the micro-batch stream is
deterministic), the eval curve so far and the measurements so far. A checkpoint is used only by a
run whose resolved config is the same (its hash is stored alongside).

A cell on N processes (runners.parallel) saves a sharded checkpoint with torch.distributed.checkpoint
instead: the trainable parameters and the optimizer state as `get_state_dict` gives them (each rank
writes its shards; DDP's replicas once) into OUT_DIR/checkpoint/step-K/, each rank's RNG, scheduler and
scaler state beside them (`rank<r>.pt`), then — once every rank has written — rank 0 renames the folder
from `step-K.tmp` and points OUT_DIR/checkpoint/sharded.json (config hash, step, progress) at it. A
kill at any moment leaves the previous complete checkpoint in force.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from runners.parallel.group import PEER_FAILED, SINGLE, Group, PeerFailed

if TYPE_CHECKING:
    from runners.model import Model

FILE = "state.pt"
SHARDED = "sharded.json"  # the sharded checkpoint in force: {config_key, step, folder, world, state}


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


def save(
    where: Checkpoints, parts: Trainables, step: int, state: dict[str, Any], group: Group = SINGLE
) -> None:
    """Save the run's resumable state after optimizer step `step` (every rank calls it)."""
    if group.world > 1:
        _save_sharded(where, parts, step, state, group)
        return
    where.folder.mkdir(parents=True, exist_ok=True)
    blob = {
        "config_key": where.key,
        "step": step,
        "trainable": {n: p.detach() for n, p in parts.model.named_parameters() if p.requires_grad},
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        **_rng_state(),
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
    _set_rng_state(blob)
    return int(blob["step"])


def resume(where: Checkpoints, parts: Trainables, group: Group = SINGLE) -> dict[str, Any] | None:
    """Restore this config's checkpoint into the live objects; the progress state it holds, or None
    (no checkpoint, or one from another config)."""
    if group.world > 1:
        return _resume_sharded(where, parts, group)
    blob = load(where.folder, where.key)
    if blob is None:
        return None
    restore(blob, parts)
    return dict(blob["state"])


def _rng_state() -> dict[str, Any]:
    return {
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "rng_python": list(random.getstate()[1]),
    }


def _set_rng_state(blob: dict[str, Any]) -> None:
    torch.set_rng_state(blob["rng_torch"])
    if blob["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng_cuda"])
    if blob.get("rng_python"):
        random.setstate((3, tuple(blob["rng_python"]), None))


def _options(strict: bool = True) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # frozen base weights never change: only what trains is saved (LoRA: the adapter's shards), and
    # loading it leaves the frozen ones as loaded
    return StateDictOptions(ignore_frozen_params=True, strict=strict)


@contextlib.contextmanager
def _own_errors(group: Group, doing: str) -> Iterator[None]:
    """torch.distributed.checkpoint raises one CheckpointException (a BaseException) on every rank
    when any rank fails: here the failing rank raises its own error, the others PeerFailed."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        yield
    except CheckpointException as e:
        mine = e.failures.get(group.rank)
        if mine is not None:
            raise RuntimeError(f"{doing}: {type(mine[0]).__name__}: {mine[0]}") from None
        raise PeerFailed(f"{doing} {PEER_FAILED} (rank {', '.join(map(str, sorted(e.failures)))})") from None


def _save_sharded(
    where: Checkpoints, parts: Trainables, step: int, state: dict[str, Any], group: Group
) -> None:
    import shutil

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    tmp = where.folder / f"step-{step}.tmp"
    if group.main:
        shutil.rmtree(tmp, ignore_errors=True)  # a save a kill interrupted
        tmp.mkdir(parents=True)
    group.barrier()
    model_sd, optim_sd = get_state_dict(parts.model, parts.optimizer, options=_options())
    with _own_errors(group, "saving the sharded checkpoint"):
        dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=tmp)
    extras = {
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        **_rng_state(),
    }
    torch.save(extras, tmp / f"rank{group.rank}.pt")
    group.barrier()
    if group.main:
        final = where.folder / f"step-{step}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        doc = {
            "config_key": where.key,
            "step": step,
            "folder": final.name,
            "world": group.world,
            "state": state,
        }
        path = where.folder / SHARDED
        path.with_name(SHARDED + ".tmp").write_text(json.dumps(doc))
        os.replace(path.with_name(SHARDED + ".tmp"), path)
        for old in where.folder.glob("step-*"):
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)
    group.barrier()


def _resume_sharded(where: Checkpoints, parts: Trainables, group: Group) -> dict[str, Any] | None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    try:
        doc = json.loads((where.folder / SHARDED).read_text())
    except (OSError, ValueError):
        return None
    if doc.get("config_key") != where.key or doc.get("world") != group.world:
        return None
    folder = where.folder / str(doc["folder"])
    model_sd, optim_sd = get_state_dict(parts.model, parts.optimizer, options=_options())
    with _own_errors(group, "loading the sharded checkpoint"):
        dcp.load({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=folder)
    set_state_dict(
        parts.model,
        parts.optimizer,
        model_state_dict=model_sd,
        optim_state_dict=optim_sd,
        options=_options(strict=False),
    )
    extras = torch.load(folder / f"rank{group.rank}.pt", map_location="cpu", weights_only=True)
    parts.scheduler.load_state_dict(extras["scheduler"])
    if parts.scaler is not None and extras.get("scaler"):
        parts.scaler.load_state_dict(extras["scaler"])
    _set_rng_state(extras)
    return dict(doc["state"])

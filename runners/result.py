"""What one cell hands back: typed in process, OUT_DIR/result.json on disk (docs/internals.md).

`Progress` is what the training loop has counted so far (checkpointed); at the end it becomes
`Measured`. `CellResult.to_dict()` is result.json: `{"status", "reason", "measured": {...},
"provenance": {...}}`, `measured` with design.md's keys and docs/internals.md's additions, in the
order they always had. No torch here: the sweep and the protocol's error path can import it without
loading a model library.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["complete", "pruned", "oom", "failed"]
# measured.wall_s's parts (advisor.estimator.timing models each): start = process start and imports;
# load = tokenizer, data, model, optimizer; train = the optimizer steps (checkpoints excluded); eval =
# the evals' forward passes; metric = the task metric's generation; checkpoint = resumable
# checkpoints; save = the adapter / merged weights at the end
WALL_PARTS = ("start", "load", "train", "eval", "metric", "checkpoint", "save")


@dataclass(frozen=True)
class Metric:
    """A task metric measured on the validation split (runners.metric)."""

    name: str  # train.metric, e.g. exact_match
    value: float  # exact_match: the fraction of rows answered exactly
    rows: int  # validation rows scored
    fields: dict[str, float] | None = None  # per-key accuracy of JSON answers (runners.metric)


@dataclass(frozen=True)
class Provenance:
    """Where a measurement came from."""

    versions: dict[str, str | None]  # torch, transformers, peft, bitsandbytes, accelerate, python
    device: str  # the GPU's name, or `cpu: <model name>`
    seed: int
    git_revision: str | None


@dataclass
class Progress:
    """What a run has measured so far (kept in checkpoints, read after oom/failure too)."""

    step: int = 0
    loss: float | None = None
    eval_curve: list[list[float]] = field(default_factory=list)
    train_tokens: int = 0
    batch_tokens: int = 0  # real + padding tokens of every trained micro-batch
    timed_tokens: int = 0
    timed_s: float = 0.0
    wall_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(WALL_PARTS, 0.0))
    static_bytes: dict[str, int] | None = None

    def to_state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Progress:
        return cls(**d)


@dataclass
class Measured:
    """result.json's `measured`. Memory peaks are the run's (training and evals; on CPU the live-bytes
    counter's tracked steps), None where the run ended before they were read."""

    allocated_gib: float | None  # peak live tensor bytes: torch.cuda.max_memory_allocated; CPU: LiveBytes
    reserved_gib: float | None  # torch.cuda.max_memory_reserved (None on CPU)
    device_gib: float | None  # NVML device peak, what nvidia-smi shows (None on CPU)
    rss_gib: float | None  # the process's resident set peak
    tokens_per_s: float | None  # non-padding training tokens per second over the timed steps
    train_tokens: int  # non-padding tokens trained on
    padding_fraction: float | None  # padding tokens / all tokens of the trained micro-batches
    wall_s: dict[str, float]  # seconds by part (WALL_PARTS): start … save; the advisor models the same
    usd: float  # wall-clock hours × cfg.price.usd_per_gpu_hour × gpu.count
    eval_loss: float | None  # the last eval's loss
    eval_curve: list[list[float]]  # [step, fraction of planned steps, eval_loss] per eval
    metric: float | None  # the task metric's value (None with train.metric=none)
    metric_name: str | None
    metric_rows: int | None  # validation rows the metric scored
    trainable_params: int | None
    adapter_bytes: int | None  # bytes of OUT_DIR/adapter/ (None for full fine-tuning)
    steps: int  # optimizer steps done
    planned_steps: int | None
    static_bytes: dict[str, int] | None  # weights, gradients, optimizer: measured after the first step
    truncated_examples: int | None  # training examples cut at train.seq_len
    resumed_from_step: int | None  # the checkpoint's step when this run resumed one
    # a cell on N processes (runners.parallel): the peak fields above are the largest rank's,
    # static_bytes rank 0's (per-rank, as the advisor predicts per GPU), tokens_per_s the group's
    world_size: int = 1  # processes (gpu.count)
    ranks: list[dict[str, Any]] | None = None  # RankMemory.to_dict() per rank (one for one process)
    devices: list[str] | None = None  # the device slots the worker gave the cell (CUDA_VISIBLE_DEVICES)
    metric_fields: dict[str, float] | None = None  # per-field accuracy beside the metric (runners.metric)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def empty(cls) -> Measured:
        """Nothing measured yet (a group whose rank 0 never reported)."""
        values: dict[str, Any] = {
            f.name: None for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
        }
        values.update(train_tokens=0, wall_s={}, usd=0.0, eval_curve=[], steps=0)
        return cls(**values)


@dataclass
class RankMemory:
    """One rank's memory in `measured.ranks`: its peaks and what it held."""

    rank: int
    allocated_gib: float | None  # this rank's peak live tensor bytes (CUDA allocator / LiveBytes)
    reserved_gib: float | None
    device_gib: float | None
    rss_gib: float | None
    static_bytes: dict[str, int] | None  # weights, gradients, optimizer: this rank's shards
    # live bytes at this rank's peak by what created them (runners.measure.LiveBytes categories:
    # weights, gradients, optimizer, forward, backward, eval); None on CUDA
    live_bytes: dict[str, int] | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CellResult:
    """One cell's outcome; `measured` is None only when the config could not be read."""

    status: Status
    reason: str | None  # one line for oom/failed (the traceback goes to OUT_DIR/error.log)
    measured: Measured | None = None
    provenance: Provenance | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "measured": self.measured.to_dict() if self.measured is not None else {},
            "provenance": dataclasses.asdict(self.provenance) if self.provenance is not None else {},
        }

    def write(self, out_dir: Path) -> None:
        """OUT_DIR/result.json, atomically (a reader never sees half a file)."""
        write_json(out_dir / "result.json", self.to_dict())


def write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)

"""The `sweep:` section of the config as a frozen dataclass, validated with every problem at once."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from advisor.errors import Problems
from runners.protocol import HEARTBEAT_S
from sweep.study import PRUNERS

# a stall window must span a few of the runner's heartbeats (its progress reports): 3 × 5 s
MIN_STALL_MINUTES = 3 * HEARTBEAT_S / 60


@dataclass(frozen=True)
class SweepSettings:
    dir: Path  # the sweep folder (records, study.db, cells/, report)
    storage: str  # Optuna RDB URL
    study_name: str  # derived from the sweep folder's name and the matrix
    matrix_name: str
    yes: bool = False  # skip the confirmation prompt
    dry_run: bool = False  # print the plan only
    workers: int = 1  # local worker processes
    seeds: int = 1  # seeds per cell
    lr_trials: int = 1  # learning-rate trials per cell
    pruner: str = "median"
    heartbeat_timeout_s: float = 60.0  # a running cell silent this long (and its pid gone) is retried
    poll_s: float = 1.0  # how often an idle worker looks for claimable cells
    prescreen: bool = True  # false = run infeasible cells too and ignore the budget (benchmarks only)
    cell_stall_minutes: float | None = 30.0  # a runner without progress this long is killed (None = never)
    cell_timeout_minutes: float | None = None  # wall-clock cap per cell attempt (None = none)

    def runner_limits(self) -> dict[str, float | None]:
        """The stall watchdog's limits in seconds, as `sweep.cellrun.run_runner` takes them."""
        return {
            "stall_s": None if self.cell_stall_minutes is None else self.cell_stall_minutes * 60,
            "timeout_s": None if self.cell_timeout_minutes is None else self.cell_timeout_minutes * 60,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dir"] = str(self.dir)
        return d


def _pos_int(p: Problems, key: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        p.add(key, v, "must be a positive integer")
        return 1
    return v


def _minutes(p: Problems, key: str, v: Any, least: float) -> float | None:
    """null (no limit) or a number of minutes, fractions allowed: ≥ `least`, or > 0 when `least` is 0."""
    if v is None:
        return None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v >= least if least else v > 0)
    if not ok:
        bound = f"≥ {least:g} (three of the runner's {HEARTBEAT_S:g} s progress reports)" if least else "> 0"
        p.add(key, v, f"must be null (no limit) or a number of minutes {bound}")
        return None
    return float(v)


def default_dir(matrix_name: str, model_name: str, gpu_name: str) -> Path:
    return Path("outputs") / "sweeps" / f"{matrix_name}-{model_name}-{gpu_name}"


def settings_from(cfg_dict: dict[str, Any]) -> SweepSettings:
    s = dict(cfg_dict.get("sweep") or {})
    p = Problems()
    matrix_name = str((cfg_dict.get("matrix") or {}).get("name") or "matrix")
    model_name = str((cfg_dict.get("model") or {}).get("name") or "model")
    gpu_name = str((cfg_dict.get("gpu") or {}).get("name") or "gpu")
    known = set(SweepSettings.__dataclass_fields__) - {"study_name", "matrix_name"}
    for k in sorted(set(s) - known):
        p.add(f"sweep.{k}", s[k], "unknown key", sorted(known))
    d = Path(s["dir"]) if s.get("dir") else default_dir(matrix_name, model_name, gpu_name)
    storage = s.get("storage") or f"sqlite:///{d.resolve() / 'study.db'}"
    if "://" not in storage:
        p.add(
            "sweep.storage",
            storage,
            "must be an Optuna RDB URL",
            "sqlite:///PATH, postgresql://USER@HOST/DB, …",
        )
    workers = _pos_int(p, "sweep.workers", s.get("workers", 1))
    seeds = _pos_int(p, "sweep.seeds", s.get("seeds", 1))
    lr_trials = _pos_int(p, "sweep.lr_trials", s.get("lr_trials", 1))
    pruner = s.get("pruner", "median")
    if pruner not in PRUNERS:
        p.add("sweep.pruner", pruner, "unknown pruner", PRUNERS)
    timeout = s.get("heartbeat_timeout_s", 60.0)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        p.add("sweep.heartbeat_timeout_s", timeout, "must be a positive number of seconds")
        timeout = 60.0
    poll = s.get("poll_s", 1.0)
    if not isinstance(poll, (int, float)) or isinstance(poll, bool) or poll <= 0:
        p.add("sweep.poll_s", poll, "must be a positive number of seconds")
        poll = 1.0
    stall = _minutes(p, "sweep.cell_stall_minutes", s.get("cell_stall_minutes", 30.0), MIN_STALL_MINUTES)
    cap = _minutes(p, "sweep.cell_timeout_minutes", s.get("cell_timeout_minutes"), 0.0)
    for k in ("yes", "dry_run", "prescreen"):
        if not isinstance(s.get(k, False), bool):
            p.add(f"sweep.{k}", s.get(k), "must be true or false")
    p.raise_if_any()
    # the study is named after the sweep folder and the matrix, so every worker on the same storage
    # (local or on other machines) attaches to the same study
    tag = hashlib.sha256(f"{d.name}/{matrix_name}".encode()).hexdigest()[:6]
    return SweepSettings(
        dir=d,
        storage=storage,
        study_name=f"tunewise-{d.name}-{tag}",
        matrix_name=matrix_name,
        yes=bool(s.get("yes", False)),
        dry_run=bool(s.get("dry_run", False)),
        workers=workers,
        seeds=seeds,
        lr_trials=lr_trials,
        pruner=pruner,
        heartbeat_timeout_s=float(timeout),
        poll_s=float(poll),
        prescreen=bool(s.get("prescreen", True)),
        cell_stall_minutes=stall,
        cell_timeout_minutes=cap,
    )

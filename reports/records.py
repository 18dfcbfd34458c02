"""Reading a sweep directory: sweep.json, trials/<cell_id>.json and trials/baseline.json.

The records are advisor.trials' typed records (records of older versions included); the numbers
the report shows come from their results frame (reports.frame). The cells the sweep planned come
from the matrix sweep.json records as run, expanded by the same code that planned them
(advisor.trials.matrix), so a report counts exactly the cells the sweep planned.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from advisor.errors import ConfigError
from advisor.trials.matrix import config_key, expand
from advisor.trials.record import TrialRecord
from advisor.trials.store import read_baseline, read_json, read_records
from reports.frame import frame

log = logging.getLogger(__name__)


def dig(d: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def num(x: Any) -> float | None:
    """A finite float, or None (missing keys, nulls, NaN, strings)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


@dataclass
class Sweep:
    dir: Path
    meta: dict[str, Any]  # sweep.json ({} when there is none)
    records: list[TrialRecord]  # every cell's record
    results: pd.DataFrame  # reports.frame of `records`: one row per attempt
    baseline: TrialRecord | None
    planned: set[str]  # configurations (advisor.trials.matrix.config_key) the matrix declares
    unreadable: list[str] = field(default_factory=list)  # record files skipped, and why

    @property
    def by_id(self) -> dict[str, TrialRecord]:
        return {r.cell_id: r for r in self.records}

    @property
    def settings(self) -> dict[str, Any]:
        """sweep.* settings as sweep.json records them (seeds, lr_trials, dir, …), when it does."""
        return dict(self.meta.get("settings") or {})

    @property
    def baseline_loss(self) -> float | None:
        return num(dig(self.baseline.measured, "eval_loss")) if self.baseline else None

    @property
    def baseline_metric(self) -> float | None:
        return num(dig(self.baseline.measured, "metric")) if self.baseline else None

    @property
    def config(self) -> dict[str, Any]:
        base = self.meta.get("base_config") or self.meta.get("config")  # round 1 named it either way
        if isinstance(base, dict) and base:
            return dict(base)
        return next((dict(r.config) for r in self.records if r.config), {})


def planned_configurations(meta: dict[str, Any], config: dict[str, Any]) -> set[str]:
    """The configurations of the matrix sweep.json records (as run), expanded as the sweep expands
    it; empty when sweep.json has no matrix."""
    matrix = meta.get("matrix")
    if not isinstance(matrix, dict) or not matrix.get("axes"):
        return set()
    seeds = dig(meta, "settings", "seeds")
    try:
        cells = expand(
            matrix,
            str(dig(config, "method", "name") or "lora"),
            seeds if isinstance(seeds, int) and seeds > 0 else 1,
            int(config.get("seed") or 0),
        )
    except ConfigError as e:
        log.warning("sweep.json's matrix does not expand (%s): counting the records only", e)
        return set()
    return {config_key(c.coords) for c in cells}


def load(sweep_dir: Path) -> Sweep:
    sweep_dir = Path(sweep_dir)
    meta = read_json(sweep_dir / "sweep.json")
    meta = meta if isinstance(meta, dict) else {}
    records, unreadable = read_records(sweep_dir)
    for problem in unreadable:
        log.warning("record skipped: %s", problem)
    sweep = Sweep(sweep_dir, meta, records, frame(records), read_baseline(sweep_dir), set(), unreadable)
    sweep.planned = planned_configurations(meta, sweep.config)
    return sweep

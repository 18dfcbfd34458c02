"""The sweep re-estimates as it learns: once cells have finished, the cells still to run are priced by
the advisor calibrated on this sweep's own records.

`sweep.plan.refresh(plan)` fits advisor.estimator.calibrate's factors (per GPU and method, pooled per GPU when a
method has no record yet: seconds per step, and every wall-time part — start, load, eval, metric,
checkpoint, save) on the sweep's finished records and sets each pending or running cell's
`learned` hours and dollars from its calibrated advise row; `PlannedCell.hours` / `.usd` then return
those. The plan (sweep.plan.build_plan), the workers' budget check before starting a cell
(sweep.worker) and the live view's ETA (sweep.progress) call it, so `over_budget` and the ETA follow
what the sweep has measured. The advise row stored with a cell (its record's `estimate`) stays the
advisor's own: calibration is always fitted on uncalibrated estimates.

Reading the records is cached on the trials folder's modification times: the live view refreshes
every second, a worker before every start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.estimator.calibrate import Calibration, fit
from advisor.trials.store import read_records

LEARN_FROM = ("complete", "pruned")  # finished cells whose measurements cover whole steps


@dataclass(frozen=True)
class Learned:
    """What the finished cells taught: the calibration and how many records it rests on."""

    calibration: Calibration
    records: int

    def describe(self) -> str:
        return f"re-estimated from {self.records} finished cell(s) of this sweep (advisor calibrated on them)"


_cache: dict[str, tuple[tuple, Learned | None]] = {}


def _stamp(trials: Path) -> tuple:
    try:
        files = list(trials.glob("*.json"))
        return (trials.stat().st_mtime_ns, len(files), max((f.stat().st_mtime_ns for f in files), default=0))
    except OSError:
        return ()


def learn(sweep_dir: Path) -> Learned | None:
    """The calibration fitted on the finished records in sweep_dir (None before any finished)."""
    trials = Path(sweep_dir) / "trials"
    stamp = _stamp(trials)
    key = str(trials)
    hit = _cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    learned: Learned | None = None
    if stamp:
        records, _ = read_records(Path(sweep_dir))
        done = [r for r in records if r.status in LEARN_FROM and r.estimate and r.measured]
        cal = fit(done, str(sweep_dir)) if done else None
        if cal is not None and cal.factors:
            learned = Learned(cal, cal.records)
    _cache[key] = (stamp, learned)
    return learned


def calibrated(learned: Learned, estimate: dict[str, Any] | None, cfg: Any) -> tuple[float, float] | None:
    """(hours, usd) of one run from its advise row calibrated on what the sweep measured."""
    if not estimate:
        return None
    row = learned.calibration.apply(estimate, cfg)
    if "time.hours" not in (row.get("calibrated") or []):
        return None  # no factor for this GPU yet
    return float(row["time"]["hours"]), float((row.get("cost") or {}).get("usd") or 0.0)

"""plan.json: the priced plan as workers read it (so local worker processes need not re-plan).

Written by `tunewise sweep` before any worker starts; each cell carries its resolved, batch-fitted
config (`RunConfig.to_dict()`), its advise row and its planned status.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.config.schema import RunConfig
from sweep import records
from sweep.matrix import Cell
from sweep.plan import Plan
from sweep.settings import SweepSettings

STORAGE_ENV = "TUNEWISE_SWEEP_STORAGE"  # how local workers get the storage URL (never written to disk)


@dataclass
class LoadedCell:
    cell_id: str
    assignment: tuple[tuple[str, Any], ...]
    overrides: list[str]
    cfg: RunConfig | None
    estimate: dict[str, Any] | None
    status: str
    reason: str | None
    usd: float
    hours: float
    lr_trials: int

    @property
    def cell(self) -> Cell:
        return Cell(self.cell_id, self.assignment)

    def new_record(self) -> dict[str, Any]:
        rec = records.new_record(self.cell_id, self.overrides, self.cfg, self.estimate, self.lr_trials)
        rec["coords"] = dict(self.assignment)
        return rec


@dataclass
class LoadedPlan:
    dir: Path
    settings: SweepSettings
    base: RunConfig
    axes: dict[str, list[Any]]
    seeds: list[int]
    cells: list[LoadedCell]


def write_plan(settings: SweepSettings, plan: Plan, axes: dict[str, list[Any]], seeds: list[int]) -> Path:
    doc = {
        "settings": {**settings.to_dict(), "storage": records.redact_url(settings.storage)},
        "base": plan.base_cfg.to_dict(),
        "axes": axes,
        "seeds": seeds,
        "cells": [
            {
                "cell_id": pc.cell.cell_id,
                "assignment": [list(kv) for kv in pc.cell.assignment],
                "overrides": pc.cell.overrides,
                "config": pc.cfg.to_dict() if pc.cfg else None,
                "estimate": pc.estimate,
                "status": pc.status,
                "reason": pc.reason,
                "usd": pc.usd,
                "hours": pc.hours,
                "lr_trials": pc.lr_trials,
            }
            for pc in plan.cells
        ],
    }
    path = settings.dir / "plan.json"
    records.write_json(path, doc)
    return path


def load_plan(sweep_dir: Path, storage: str | None = None) -> LoadedPlan:
    """The plan in sweep_dir; `storage` = the real storage URL (plan.json keeps it without password)."""
    doc = records.read_json(sweep_dir / "plan.json")
    if doc is None:
        raise FileNotFoundError(f"{sweep_dir / 'plan.json'}: no plan (run `tunewise sweep` first)")
    s = dict(doc["settings"])
    s["dir"] = Path(s["dir"])
    s["storage"] = storage or os.environ.get(STORAGE_ENV) or s["storage"]
    settings = SweepSettings(**s)
    cells = [
        LoadedCell(
            cell_id=c["cell_id"],
            assignment=tuple((k, v) for k, v in c["assignment"]),
            overrides=c["overrides"],
            cfg=RunConfig.from_dict(c["config"]) if c["config"] else None,
            estimate=c["estimate"],
            status=c["status"],
            reason=c["reason"],
            usd=c["usd"],
            hours=c["hours"],
            lr_trials=c["lr_trials"],
        )
        for c in doc["cells"]
    ]
    return LoadedPlan(
        settings.dir, settings, RunConfig.from_dict(doc["base"]), doc["axes"], doc["seeds"], cells
    )

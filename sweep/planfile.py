"""plan.json: the priced plan as worker processes read it (so they need not re-plan).

Written by `tunewise sweep` before any worker starts; the process that planned runs its `Plan` as it
is, worker processes (`python -m sweep.worker SWEEP_DIR`, SLURM jobs) load the same `Plan` from here.
Each cell carries its coordinates, its resolved, batch-fitted config (`RunConfig.to_dict()`), its
advise row and its planned status. The storage URL is saved without its password; local workers get
the real one from the `TUNEWISE_SWEEP_STORAGE` environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from advisor.config.schema import RunConfig
from advisor.trials.matrix import Cell
from advisor.trials.store import read_json, write_json
from sweep.plan import Plan, PlannedCell
from sweep.records import redact_url
from sweep.settings import SweepSettings

STORAGE_ENV = "TUNEWISE_SWEEP_STORAGE"  # how local workers get the storage URL (never written to disk)


def write_plan(plan: Plan) -> Path:
    doc = {
        "settings": {**plan.settings.to_dict(), "storage": redact_url(plan.settings.storage)},
        "base": plan.base_cfg.to_dict(),
        "axes": plan.axes,
        "seeds": plan.seeds,
        "notes": plan.notes,
        "cells": [
            {
                "cell_id": pc.cell_id,
                "assignment": [list(kv) for kv in pc.cell.assignment],
                "config": pc.cfg.to_dict() if pc.cfg else None,
                "estimate": pc.estimate,
                "status": pc.status,
                "reason": pc.reason,
                "lr_trials": pc.lr_trials,
            }
            for pc in plan.cells
        ],
    }
    path = plan.dir / "plan.json"
    write_json(path, doc)
    return path


def load_plan(sweep_dir: Path, storage: str | None = None) -> Plan:
    """The plan in sweep_dir; `storage` = the real storage URL (plan.json keeps it without password)."""
    doc = read_json(sweep_dir / "plan.json")
    if not isinstance(doc, dict):
        raise FileNotFoundError(f"{sweep_dir / 'plan.json'}: no plan (run `tunewise sweep` first)")
    s = dict(doc["settings"])
    s["dir"] = Path(s["dir"])
    s["storage"] = storage or os.environ.get(STORAGE_ENV) or s["storage"]
    cells = [
        PlannedCell(
            cell=Cell(c["cell_id"], tuple((k, v) for k, v in c["assignment"])),
            cfg=RunConfig.from_dict(c["config"]) if c["config"] else None,
            estimate=c["estimate"],
            status=c["status"],
            reason=c["reason"],
            lr_trials=c["lr_trials"],
        )
        for c in doc["cells"]
    ]
    return Plan(
        SweepSettings(**s),
        RunConfig.from_dict(doc["base"]),
        doc["axes"],
        doc["seeds"],
        cells,
        list(doc.get("notes") or []),
    )

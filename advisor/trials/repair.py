"""Rebuilding a trial record from its cell's own files, when trials/<cell_id>.json cannot be read.

The record is the sweep's summary of a cell; the measurement itself is the runner's
`cells/<cell_id>/result.json` (`cells/<cell_id>/lr<k>/result.json` per learning-rate trial) beside
the config it ran (`config.json`). The cell's coordinates, planned config and estimate come from the
sweep's plan.json, else from sweep.json's matrix expanded again (advisor.trials.matrix) and the
cell's config.json. A record is rebuilt only when a result.json holds a run's status; the rebuilt
record says so in `repaired`, its attempts carry the results' statuses, reasons and losses (their
Optuna trial numbers and start times are gone with the file).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.errors import ConfigError
from advisor.trials.matrix import expand
from advisor.trials.record import Attempt, TrialRecord

RUN_STATUSES = ("complete", "pruned", "oom", "failed")
RANK = {"complete": 0, "pruned": 1, "oom": 2, "failed": 3}  # the attempt a cell keeps: best status, then loss


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _maybe_dict(x: Any) -> dict[str, Any] | None:
    return x if isinstance(x, dict) else None


def _int(x: Any, default: int) -> int:
    return x if isinstance(x, int) and not isinstance(x, bool) else default


def _num(x: Any) -> float | None:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


@dataclass(frozen=True)
class Planned:
    """What the sweep planned for a cell: its coordinates, batch-fitted config, estimate, LR trials."""

    coords: dict[str, Any]
    config: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None
    lr_trials: int = 1


def planned_cell(sweep_dir: Path, cell_id: str) -> Planned | None:
    """{coords, config, estimate, lr_trials} of a planned cell: plan.json's entry, else the cell of
    sweep.json's matrix with this id (config then from the cell's config.json)."""
    plan = _json(sweep_dir / "plan.json")
    cells = plan.get("cells") if isinstance(plan, dict) else None
    for c in cells if isinstance(cells, list) else []:
        if isinstance(c, dict) and c.get("cell_id") == cell_id and isinstance(c.get("assignment"), list):
            coords = {str(kv[0]): kv[1] for kv in c["assignment"] if isinstance(kv, list) and len(kv) == 2}
            return Planned(
                coords,
                _maybe_dict(c.get("config")),
                _maybe_dict(c.get("estimate")),
                _int(c.get("lr_trials"), 1),
            )
    meta = _json(sweep_dir / "sweep.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("matrix"), dict):
        return None
    base, settings = _dict(meta.get("base_config")), _dict(meta.get("settings"))
    method = _dict(base.get("method")).get("name") or "lora"
    try:
        cells = expand(
            meta["matrix"], str(method), max(1, _int(settings.get("seeds"), 1)), _int(base.get("seed"), 0)
        )
    except (ConfigError, TypeError, ValueError):
        return None
    for cell in cells:
        if cell.cell_id == cell_id:
            cfg = _maybe_dict(_json(sweep_dir / "cells" / cell_id / "config.json"))
            return Planned(dict(cell.coords), cfg, None, _int(settings.get("lr_trials"), 1))
    return None


def _lr(config: Any) -> float | None:
    """The learning rate a runner's config.json ran with (train.lr, else the method's default)."""
    train, method = _dict(_dict(config).get("train")), _dict(_dict(config).get("method")).get("name")
    return _num(train.get("lr")) or _num(train.get("lr_full" if method == "full" else "lr_adapter"))


def _attempt(k: int, folder: Path, res: dict[str, Any]) -> Attempt:
    measured = _dict(res.get("measured"))
    walls = _dict(measured.get("wall_s"))
    ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((folder / "result.json").stat().st_mtime))
    loss = _num(measured.get("eval_loss"))
    return Attempt(
        trial_number=None,
        started=None,
        ended=ended,
        status=str(res["status"]),
        reason=None if res.get("reason") is None else str(res.get("reason")),
        lr=_lr(_json(folder / "config.json")),
        lr_index=k,
        eval_loss=loss,
        usd=_num(measured.get("usd")),
        wall_s=sum(v for v in (_num(x) for x in walls.values()) if v is not None) or None,
    )


def rebuild(sweep_dir: Path, cell_id: str, why: str) -> TrialRecord | None:
    """The record of `cell_id` rebuilt from cells/<cell_id>/ (None when no result.json there holds a
    run's status, or the cell's coordinates cannot be found); `why` = what was wrong with the file."""
    sweep_dir = Path(sweep_dir)
    folder = sweep_dir / "cells" / cell_id
    baseline = cell_id == "baseline"
    planned = Planned({}) if baseline else planned_cell(sweep_dir, cell_id)
    if planned is None or not folder.is_dir():
        return None
    lr_trials = max(1, planned.lr_trials)
    folders = [folder] if lr_trials <= 1 else [folder / f"lr{k}" for k in range(lr_trials)]
    results: list[tuple[int, Path, dict[str, Any]]] = []
    for k, f in enumerate(folders):
        res = _json(f / "result.json")
        if isinstance(res, dict) and res.get("status") in RUN_STATUSES:
            results.append((k, f, res))
    if not results:
        return None
    attempts = [_attempt(k, f, res) for k, f, res in results]
    best = min(
        zip(attempts, results, strict=True),
        key=lambda ar: (RANK[ar[0].status], ar[0].eval_loss if ar[0].eval_loss is not None else math.inf),
    )
    att, (_, best_folder, res) = best
    config = planned.config or _json(best_folder / "config.json")
    spent = {
        "usd": sum(a.usd or 0.0 for a in attempts),
        "wall_s": sum(a.wall_s or 0.0 for a in attempts),
        "cpu_s": 0.0,
    }
    rel = os.path.relpath(best_folder / "result.json", sweep_dir)
    return TrialRecord(
        cell_id=cell_id,
        coords=planned.coords,
        config=config if isinstance(config, dict) else None,
        status=att.status,
        reason=att.reason,
        estimate=planned.estimate,
        measured=res.get("measured") if isinstance(res.get("measured"), dict) else None,
        attempts=attempts,
        provenance=res.get("provenance") if isinstance(res.get("provenance"), dict) else None,
        lr=att.lr,
        lr_trials=lr_trials,
        lr_results=[{"lr": a.lr, "status": a.status, "eval_loss": a.eval_loss} for a in attempts]
        if lr_trials > 1
        else None,
        spent=spent,
        repaired=f"trials/{cell_id}.json could not be used ({why[:300]}); rebuilt from {rel} "
        f"on {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
    )

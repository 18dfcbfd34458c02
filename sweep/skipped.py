"""Cells that never start a process: infeasible, over budget, or a config that does not build.

Each is claimed (so exactly one worker anywhere tells Optuna), told to Optuna as PRUNED with the
reason as a user attr, and given its record — no cells/<id>/ folder, no runner.
"""

from __future__ import annotations

import logging

import optuna

from advisor.trials.record import Attempt
from advisor.trials.store import load_record, now_iso, save_record
from sweep.claims import Claims
from sweep.plan import Plan, PlannedCell
from sweep.study import tell_skipped

log = logging.getLogger("tunewise.sweep")


def record_skipped(plan: Plan, study: optuna.Study, pc: PlannedCell, status: str, reason: str | None) -> None:
    """Tell Optuna and write the record (the caller has already won the claim)."""
    number = tell_skipped(study, pc.cell, plan.axes, plan.seeds, status, reason)
    rec = load_record(plan.dir, pc.cell_id) or pc.new_record()
    fresh = pc.new_record()  # what the plan says now (a re-planned cell's config or estimate may differ)
    rec.config, rec.estimate, rec.lr_trials = fresh.config, fresh.estimate, fresh.lr_trials
    rec.status, rec.reason = status, reason
    rec.attempts.append(Attempt(number, None, now_iso(), status, reason))
    save_record(plan.dir, rec)


def skip_planned(plan: Plan, claims: Claims, study: optuna.Study) -> int:
    """Settle every cell the plan skips; returns how many this process settled."""
    n = 0
    rows = claims.rows()
    for pc in plan.cells:
        row = rows.get(pc.cell_id)
        if pc.status == "run" or row is None or row.status != "pending":
            continue
        if claims.cas(row, status=pc.status, usd=0.0, wall_s=0.0):
            record_skipped(plan, study, pc, pc.status, pc.reason)
            log.info("cell %s %s: %s", pc.cell_id, pc.status, pc.reason)
            n += 1
    return n


def reopen_over_budget(plan: Plan, claims: Claims) -> int:
    """On a rerun with a larger budget, cells skipped as over_budget that now fit run after all."""
    n = 0
    rows = claims.rows()
    for pc in plan.cells:
        row = rows.get(pc.cell_id)
        if pc.status != "run" or row is None or row.status != "over_budget":
            continue
        if claims.cas(row, status="pending", usd=None, wall_s=None):
            rec = load_record(plan.dir, pc.cell_id)
            if rec is not None:
                rec.status, rec.reason = "pending", None
                save_record(plan.dir, rec)
            log.info("cell %s: no longer over budget, will run", pc.cell_id)
            n += 1
    return n

"""trials/baseline.json: the untrained base model's eval loss and metric, measured once per sweep.

Claimed like a cell (cell id `baseline` in the claims table), so several workers or machines starting
the same sweep measure it once; a baseline whose owner died is measured again.
"""

from __future__ import annotations

import logging
import threading
import time

from advisor.trials.record import Attempt, TrialRecord
from advisor.trials.store import BASELINE, load_record, now_iso, save_record
from sweep.cellrun import run_runner
from sweep.claims import Claims, is_dead, me
from sweep.plan import Plan

log = logging.getLogger("tunewise.sweep")


def measure_baseline(plan: Plan, claims: Claims, env: dict[str, str] | None = None) -> TrialRecord | None:
    row = claims.get(BASELINE)
    if row is None:
        return None
    if row.terminal:
        return load_record(plan.dir, BASELINE)
    if row.status == "running" and not is_dead(row, plan.settings.heartbeat_timeout_s):
        return None  # another worker is measuring it
    host, pid = me()
    if not claims.cas(
        row, status="running", host=host, pid=pid, heartbeat=time.time(), attempts=row.attempts + 1
    ):
        return None
    started = now_iso()
    log.info("measuring the untrained base (baseline)")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(5.0):
            claims.owner_update(BASELINE, host, pid, heartbeat=time.time())

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    limits = plan.settings.runner_limits()
    try:
        outcome = run_runner(
            plan.base_cfg,
            plan.dir / "cells" / BASELINE,
            baseline=True,
            env=env,
            stall_s=limits["stall_s"],
            timeout_s=limits["timeout_s"],
        )
    finally:
        stop.set()
        beater.join(timeout=10)
    res = outcome.result
    status = str(res.get("status")) if res.get("status") in ("complete", "failed", "oom") else "failed"
    reason = res.get("reason")
    doc = TrialRecord(
        cell_id=BASELINE,
        coords={},
        config=plan.base_cfg.to_dict(),
        status=status,
        reason=reason,
        measured=res.get("measured"),
        attempts=[Attempt(None, started, now_iso(), status, reason, cpu_s=outcome.cpu_s)],
        provenance=res.get("provenance"),
    )
    save_record(plan.dir, doc)
    fresh = claims.get(BASELINE)
    if fresh is not None:
        claims.cas(fresh, status=status, usd=0.0, wall_s=0.0)
    return doc

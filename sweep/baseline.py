"""trials/baseline.json: the untrained base model's eval loss and metric, measured once per sweep.

Claimed like a cell (cell id `baseline` in the claims table), so several workers or machines starting
the same sweep measure it once; a baseline whose owner died is measured again.
"""

from __future__ import annotations

import logging
import threading
import time

from sweep import records
from sweep.cellrun import run_runner
from sweep.claims import Claims, is_dead, me
from sweep.planfile import LoadedPlan

log = logging.getLogger("tunewise.sweep")
BASELINE = "baseline"


def measure_baseline(plan: LoadedPlan, claims: Claims, env: dict[str, str] | None = None) -> dict | None:
    path = plan.dir / "trials" / "baseline.json"
    row = claims.get(BASELINE)
    if row is None:
        return None
    if row.terminal:
        return records.read_json(path)
    if row.status == "running" and not is_dead(row, plan.settings.heartbeat_timeout_s):
        return None  # another worker is measuring it
    host, pid = me()
    if not claims.cas(
        row, status="running", host=host, pid=pid, heartbeat=time.time(), attempts=row.attempts + 1
    ):
        return None
    started = records.now_iso()
    log.info("measuring the untrained base (baseline)")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(5.0):
            claims.owner_update(BASELINE, host, pid, heartbeat=time.time())

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        outcome = run_runner(
            plan.base, plan.dir / "cells" / BASELINE, baseline=True, env=env, **plan.settings.runner_limits()
        )
    finally:
        stop.set()
        beater.join(timeout=10)
    res = outcome.result
    status = res.get("status") if res.get("status") in ("complete", "failed", "oom") else "failed"
    doc = {
        "cell_id": BASELINE,
        "overrides": [],
        "config": plan.base.to_dict(),
        "status": status,
        "reason": res.get("reason"),
        "measured": res.get("measured"),
        "attempts": [
            {
                "trial_number": None,
                "started": started,
                "ended": records.now_iso(),
                "status": status,
                "reason": res.get("reason"),
                "cpu_s": outcome.cpu_s,
            }
        ],
        "provenance": res.get("provenance"),
    }
    records.write_json(path, doc)
    fresh = claims.get(BASELINE)
    if fresh is not None:
        claims.cas(fresh, status=status, usd=0.0, wall_s=0.0)
    return doc

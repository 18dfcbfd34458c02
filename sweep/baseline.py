"""trials/baseline.json: the untrained base model's eval loss and metric, measured once per sweep.

Claimed like a cell (cell id `baseline` in the claims table), so several workers or machines starting
the same sweep measure it once; a baseline whose owner died is measured again — at once when the owner
was a process on this host (a `kill -9` of the sweep mid-baseline, then the same command), else once
its heartbeat is stale. Its record keeps every attempt (sweep.retry retries a failed one on the next
run); a user's interrupt gives it back, pending.
"""

from __future__ import annotations

import logging
import threading
import time

from advisor.config.schema import RunConfig
from advisor.trials.record import Attempt, RecordError, TrialRecord
from advisor.trials.store import BASELINE, load_record, now_iso, record_path, save_record, set_aside
from sweep.attempts import INTERRUPTED, give_back
from sweep.cellrun import run_runner
from sweep.claims import Claims, is_dead, maybe_dead, me
from sweep.plan import Plan
from sweep.retry import cause_of

log = logging.getLogger("tunewise.sweep")


def baseline_config(plan: Plan) -> RunConfig:
    """The config the untrained base is evaluated with: the sweep's base config, on at most one node
    (sweep.gpus_per_node devices): an eval holds no gradients or optimizer state, and the baseline runs
    where the worker runs, without a multi-node launch."""
    cfg = plan.base_cfg
    per_node = plan.settings.gpus_per_node
    return cfg.replace(gpu={"count": per_node}) if cfg.gpu.count > per_node else cfg


def measure_baseline(plan: Plan, claims: Claims, env: dict[str, str] | None = None) -> TrialRecord | None:
    row = claims.get(BASELINE)
    if row is None:
        return None
    if row.terminal:
        return load_record(plan.dir, BASELINE)
    # maybe_dead: its owner was a process on this host, and is gone (no need to wait for the heartbeat)
    dead = is_dead(row, plan.settings.heartbeat_timeout_s) or maybe_dead(row)
    if row.status == "running" and not dead:
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
        doc = load_record(plan.dir, BASELINE)
    except RecordError:  # neither readable nor rebuildable: measured again, the old file set aside
        set_aside(record_path(plan.dir, BASELINE))
        doc = None
    cfg = baseline_config(plan)
    doc = doc or TrialRecord(cell_id=BASELINE, coords={}, config=cfg.to_dict())
    out = plan.dir / "cells" / BASELINE
    if (out / "result.json").exists():  # an earlier attempt's: never read as this one's
        (out / "result.json").replace(out / "result.previous.json")
    try:
        outcome = run_runner(
            cfg,
            out,
            baseline=True,
            env=env,
            stall_s=limits["stall_s"],
            timeout_s=limits["timeout_s"],
        )
    except KeyboardInterrupt:
        doc.attempts.append(Attempt(None, started, now_iso(), "interrupted", INTERRUPTED))
        doc.status = "pending"
        save_record(plan.dir, doc)
        give_back(claims, BASELINE, host, pid)
        raise
    finally:
        stop.set()
        beater.join(timeout=10)
    res = outcome.result
    status = str(res.get("status")) if res.get("status") in ("complete", "failed", "oom") else "failed"
    reason = res.get("reason")
    doc.config = cfg.to_dict()
    doc.status, doc.reason = status, reason
    doc.measured, doc.provenance = res.get("measured"), res.get("provenance")
    doc.attempts.append(
        Attempt(None, started, now_iso(), status, reason, cpu_s=outcome.cpu_s, cause=cause_of(status, reason))
    )
    save_record(plan.dir, doc)
    fresh = claims.get(BASELINE)
    if fresh is not None:
        claims.cas(fresh, status=status, usd=0.0, wall_s=0.0)
    return doc

"""Running one claimed cell: its learning-rate trials (one by default), each an Optuna trial and one
runner process, with live heartbeats, eval reports to the pruner, and the cell keeping its best attempt.

A retried cell (its worker died, or it failed for a cause sweep.retry retries) resumes the unfinished
LR trial in the same OUT_DIR — the runner picks up OUT_DIR/checkpoint — with the learning rate it had;
settled LR trials (a result, or a final failure) are never rerun. If the dead attempt's runner had
already written result.json, that result is adopted instead of rerunning; a result.json of an attempt
already recorded moves to result.previous.json before a new runner starts, so a runner killed before
writing its own is never read as having written the old one. A user's interrupt (Ctrl-C, SIGTERM)
records the attempt `interrupted`, gives the cell back (pending) and re-raises.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna

from advisor.trials.record import Attempt, TrialRecord
from advisor.trials.store import load_record, now_iso, read_json, save_record
from sweep.cellrun import run_runner
from sweep.claims import Claims
from sweep.plan import Plan, PlannedCell
from sweep.retry import cause_of, lr_trial_done
from sweep.study import ask_trial, should_prune, suggest_lr, tell_end

log = logging.getLogger("tunewise.sweep")
INTERRUPTED = (
    "interrupted by the user (Ctrl-C or SIGTERM): not a failure, the cell runs again on the next run"
)
RUN_STATUSES = ("complete", "pruned", "oom", "failed")
RANK = {"complete": 0, "pruned": 1, "oom": 2, "failed": 3}


class Owner(Protocol):
    """The worker running the cell (sweep.worker.Worker)."""

    plan: Plan
    env: dict[str, str] | None
    claims: Claims
    study: optuna.Study
    host: str
    pid: int


@dataclass
class Outcome:
    """One LR trial's end: its status, the runner's result, its eval loss and learning rate."""

    status: str
    result: dict[str, Any]
    eval_loss: float | None
    lr: float


class Live:
    """The record of the running cell, saved under a lock from the reader loop and the beat thread."""

    def __init__(self, owner: Owner, rec: TrialRecord):
        self.w, self.rec, self.lock = owner, rec, threading.Lock()
        self.stop = threading.Event()
        self.trial: optuna.Trial | None = None

    def save(self) -> None:
        with self.lock:
            save_record(self.w.plan.dir, self.rec)

    def beat(self, step: int | None = None, loss: float | None = None) -> None:
        t = time.time()
        with self.lock:
            hb = dict(self.rec.heartbeat or {})
            hb.update(t=t, iso=now_iso(t), host=self.w.host, pid=self.w.pid)
            if step is not None:
                hb.update(step=step, loss=loss)
            self.rec.heartbeat = hb
            save_record(self.w.plan.dir, self.rec)
        self.w.claims.owner_update(self.rec.cell_id, self.w.host, self.w.pid, heartbeat=t)
        if self.trial is not None:
            with contextlib.suppress(RuntimeError):
                self.trial.set_user_attr("heartbeat", t)

    def beat_forever(self, interval_s: float) -> None:
        while not self.stop.wait(interval_s):
            try:
                self.beat()
            except Exception as e:
                log.warning("heartbeat failed: %s", e)


def _eval_loss(result: dict[str, Any]) -> float | None:
    v = (result.get("measured") or {}).get("eval_loss")
    if v is None:
        curve = (result.get("measured") or {}).get("eval_curve") or []
        v = curve[-1][2] if curve else None
    return float(v) if v is not None else None


def _run_one(w: Owner, pc: PlannedCell, live: Live, k: int, lr: float, out: Path) -> Outcome:
    """One LR trial = one Optuna trial + one runner process (or the adoption of a finished result)."""
    assert pc.cfg is not None
    rec, s = live.rec, w.plan.settings
    attrs = {
        "cell_id": pc.cell_id,
        "attempt": len(rec.attempts) + 1,
        "lr_index": k,
        "host": w.host,
        "pid": w.pid,
    }
    trial = ask_trial(w.study, pc.cell, w.plan.axes, w.plan.seeds, lr, pc.cfg.method.name, attrs)
    live.trial = trial
    w.claims.owner_update(pc.cell_id, w.host, w.pid, trial_number=trial.number)
    mine = [a for a in rec.attempts if a.lr_index == k]
    # the last runner's result.json belongs to an attempt that never recorded it (its worker died or
    # was stopped) only then; else it is an earlier attempt's, recorded already
    adoptable = bool(mine) and mine[-1].status in ("running", "died", "interrupted")
    att = Attempt(trial.number, now_iso(), None, "running", lr=lr, lr_index=k, host=w.host, pid=w.pid)
    with live.lock:
        rec.attempts.append(att)
        rec.status = "running"
    live.save()
    t0 = time.time()
    adopted = read_json(out / "result.json") if adoptable else None
    if not adoptable and (out / "result.json").exists():
        (out / "result.json").replace(out / "result.previous.json")
    if isinstance(adopted, dict):
        result, cpu_s = adopted, 0.0
        att.reason = "adopted the result.json its previous attempt wrote before the worker died"
    else:

        def on_event(ev: dict[str, Any]) -> None:
            if ev.get("type") == "heartbeat":
                live.beat(ev.get("step"), ev.get("loss"))
            elif ev.get("type") == "start":
                with live.lock:
                    att.planned_steps = ev.get("planned_steps")
            elif ev.get("type") == "eval":
                with live.lock:
                    att.evals.append([ev.get("step"), ev.get("fraction"), ev.get("eval_loss")])
                live.beat(ev.get("step"), ev.get("eval_loss"))

        def control(ev: dict[str, Any]) -> bool:
            if s.pruner == "none" or (ev.get("fraction") or 0) >= 1:
                return True
            loss = ev.get("eval_loss")
            prune = should_prune(
                trial, int(ev.get("index", 0)), float(loss if loss is not None else math.nan)
            )
            if prune:
                log.info("cell %s: pruned at eval %s (eval_loss %.4f)", pc.cell_id, ev.get("index"), loss)
            return not prune

        limits = s.runner_limits()
        try:
            outcome = run_runner(
                pc.cfg.replace(train={"lr": lr}),
                out,
                on_event=on_event,
                control=control,
                env=w.env,
                stall_s=limits["stall_s"],
                timeout_s=limits["timeout_s"],
            )
        except KeyboardInterrupt:  # the user stopped the sweep: no failure, the cell runs again later
            tell_end(w.study, trial, "failed", None, INTERRUPTED)
            live.trial = None
            with live.lock:
                att.status, att.reason, att.ended = "interrupted", INTERRUPTED, now_iso()
                att.wall_s = time.time() - t0
            raise
        result, cpu_s = outcome.result, outcome.cpu_s
    status = str(result.get("status")) if result.get("status") in RUN_STATUSES else "failed"
    wall_s = time.time() - t0
    measured = result.get("measured") or {}
    usd = measured.get("usd")
    if usd is None:
        usd = wall_s / 3600 * pc.cfg.price.usd_per_gpu_hour * pc.cfg.gpu.count
    loss = _eval_loss(result)
    tell_end(w.study, trial, status, loss, result.get("reason"))
    live.trial = None
    with live.lock:
        att.status = status
        att.reason = att.reason or result.get("reason")
        att.cause = cause_of(status, att.reason)
        att.ended = now_iso()
        att.eval_loss, att.usd, att.wall_s, att.cpu_s = loss, usd, wall_s, cpu_s
    live.save()
    log.info("cell %s lr=%.3g: %s (eval_loss %s, %.1f s)", pc.cell_id, lr, status, loss, wall_s)
    return Outcome(status, result, loss, lr)


def give_back(claims: Claims, cell_id: str, host: str, pid: int) -> None:
    """An interrupted cell (or baseline) this process owns back to `pending`, its attempts and deaths
    as they were: the next run takes it up at once, as a new attempt."""
    row = claims.get(cell_id)
    if row is not None and row.status == "running" and (row.host, row.pid) == (host, pid):
        claims.cas(row, status="pending", host=None, pid=None, heartbeat=None, usd=None, wall_s=None)


def run_attempts(w: Owner, pc: PlannedCell) -> dict[str, Any]:
    """Run the cell's LR trials; write its final record; return {status, usd, wall_s}."""
    assert pc.cfg is not None
    rec = load_record(w.plan.dir, pc.cell_id) or pc.new_record()
    # the record describes the config this run gets (a retried or re-planned cell's may have changed)
    rec.config, rec.estimate, rec.lr_trials = pc.cfg.to_dict(), pc.estimate, pc.lr_trials
    live = Live(w, rec)
    live.beat()
    beat = threading.Thread(
        target=live.beat_forever, args=(min(5.0, w.plan.settings.heartbeat_timeout_s / 3),), daemon=True
    )
    beat.start()
    outcomes: dict[int, Outcome] = {}
    force = w.plan.settings.rerun == "failed"
    try:
        for k in range(pc.lr_trials):
            out = w.plan.dir / "cells" / pc.cell_id / (f"lr{k}" if pc.lr_trials > 1 else "")
            last = lr_trial_done(rec.attempts, k, force)
            if last is not None:
                res = read_json(out / "result.json")
                status = last.status if last.status in RANK else "failed"  # a final `died`
                outcomes[k] = Outcome(
                    status,
                    res if isinstance(res, dict) else {"status": status, "reason": last.reason},
                    last.eval_loss,
                    last.lr if last.lr is not None else pc.cfg.lr,
                )
                continue
            tried = [a.lr for a in rec.attempts if a.lr_index == k and a.lr is not None]
            if tried:
                lr = tried[-1]
            elif pc.lr_trials == 1:
                lr = pc.cfg.lr
            else:
                history = [(o.lr, o.eval_loss) for o in outcomes.values() if o.eval_loss is not None]
                lr = suggest_lr(pc.cfg.method.name, history, pc.cfg.seed + int(pc.cell_id[:6], 16), k)
            outcomes[k] = _run_one(w, pc, live, k, lr, out)
    except KeyboardInterrupt:
        live.stop.set()
        beat.join(timeout=10)
        with live.lock:
            rec.status, rec.reason = "pending", None
        live.save()
        give_back(w.claims, pc.cell_id, w.host, w.pid)
        raise
    finally:
        live.stop.set()
        beat.join(timeout=10)
    best = min(
        outcomes.values(),
        key=lambda o: (RANK[o.status], o.eval_loss if o.eval_loss is not None else math.inf),
    )
    runs = [a for a in rec.attempts if a.lr_index is not None]
    spent = {
        "usd": sum(a.usd or 0.0 for a in runs),
        "wall_s": sum(a.wall_s or 0.0 for a in runs),
        "cpu_s": sum(a.cpu_s or 0.0 for a in runs),
    }
    with live.lock:
        rec.status = best.status
        rec.reason = best.result.get("reason")
        rec.lr = best.lr
        rec.measured = best.result.get("measured")
        rec.provenance = best.result.get("provenance")
        rec.spent = spent
        if pc.lr_trials > 1:
            rec.lr_results = [
                {"lr": o.lr, "status": o.status, "eval_loss": o.eval_loss}
                for _, o in sorted(outcomes.items())
            ]
    live.save()
    return {"status": best.status, "usd": spent["usd"], "wall_s": spent["wall_s"]}

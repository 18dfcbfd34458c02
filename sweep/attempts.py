"""Running one claimed cell: its learning-rate trials (one by default), each an Optuna trial and one
runner process, with live heartbeats, eval reports to the pruner, and the cell keeping its best attempt.

A retried cell (its worker died) resumes the unfinished LR trial in the same OUT_DIR — the runner
picks up OUT_DIR/checkpoint — with the learning rate it had; finished LR trials are never rerun. If the
dead attempt's runner had already written result.json, that result is adopted instead of rerunning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from sweep import records
from sweep.cellrun import run_runner
from sweep.study import ask_trial, should_prune, suggest_lr, tell_end

log = logging.getLogger("tunewise.sweep")
RUN_STATUSES = ("complete", "pruned", "oom", "failed")
RANK = {"complete": 0, "pruned": 1, "oom": 2, "failed": 3}


class Live:
    """The record of the running cell, saved under a lock from the reader loop and the beat thread."""

    def __init__(self, worker, rec: dict[str, Any]):
        self.w, self.rec, self.lock = worker, rec, threading.Lock()
        self.stop = threading.Event()
        self.trial = None

    def save(self) -> None:
        with self.lock:
            records.save_record(self.w.plan.dir, self.rec)

    def beat(self, step: int | None = None, loss: float | None = None) -> None:
        t = time.time()
        with self.lock:
            hb = dict(self.rec.get("heartbeat") or {})
            hb.update(t=t, iso=records.now_iso(t), host=self.w.host, pid=self.w.pid)
            if step is not None:
                hb.update(step=step, loss=loss)
            self.rec["heartbeat"] = hb
            records.save_record(self.w.plan.dir, self.rec)
        self.w.claims.owner_update(self.rec["cell_id"], self.w.host, self.w.pid, heartbeat=t)
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


def _run_one(w, pc, live: Live, k: int, lr: float, out: Path) -> dict[str, Any]:
    """One LR trial = one Optuna trial + one runner process (or the adoption of a finished result)."""
    rec, s = live.rec, w.plan.settings
    attrs = {
        "cell_id": pc.cell_id,
        "attempt": len(rec["attempts"]) + 1,
        "lr_index": k,
        "host": w.host,
        "pid": w.pid,
    }
    trial = ask_trial(w.study, pc.cell, w.plan.axes, w.plan.seeds, lr, pc.cfg.method.name, attrs)
    live.trial = trial
    w.claims.owner_update(pc.cell_id, w.host, w.pid, trial_number=trial.number)
    att = {
        "trial_number": trial.number,
        "started": records.now_iso(),
        "ended": None,
        "status": "running",
        "reason": None,
        "lr": lr,
        "lr_index": k,
        "host": w.host,
        "pid": w.pid,
        "evals": [],
    }
    with live.lock:
        rec["attempts"].append(att)
        rec["status"] = "running"
    live.save()
    t0 = time.time()
    adopted = records.read_json(out / "result.json")
    if adopted is not None:
        result, cpu_s = adopted, 0.0
        att["reason"] = "adopted the result.json its previous attempt wrote before the worker died"
    else:

        def on_event(ev: dict[str, Any]) -> None:
            if ev.get("type") == "heartbeat":
                live.beat(ev.get("step"), ev.get("loss"))
            elif ev.get("type") == "start":
                with live.lock:
                    att["planned_steps"] = ev.get("planned_steps")
            elif ev.get("type") == "eval":
                with live.lock:
                    att["evals"].append([ev.get("step"), ev.get("fraction"), ev.get("eval_loss")])
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

        outcome = run_runner(
            pc.cfg.replace(train={"lr": lr}),
            out,
            on_event=on_event,
            control=control,
            env=w.env,
            **s.runner_limits(),
        )
        result, cpu_s = outcome.result, outcome.cpu_s
    status = result.get("status") if result.get("status") in RUN_STATUSES else "failed"
    wall_s = time.time() - t0
    measured = result.get("measured") or {}
    usd = measured.get("usd")
    if usd is None:
        usd = wall_s / 3600 * pc.cfg.price.usd_per_gpu_hour * pc.cfg.gpu.count
    loss = _eval_loss(result)
    tell_end(w.study, trial, status, loss, result.get("reason"))
    live.trial = None
    with live.lock:
        att.update(
            status=status,
            reason=att["reason"] or result.get("reason"),
            ended=records.now_iso(),
            eval_loss=loss,
            usd=usd,
            wall_s=wall_s,
            cpu_s=cpu_s,
        )
    live.save()
    log.info("cell %s lr=%.3g: %s (eval_loss %s, %.1f s)", pc.cell_id, lr, status, loss, wall_s)
    return {"status": status, "result": result, "eval_loss": loss, "lr": lr}


def run_attempts(w, pc) -> dict[str, Any]:
    """Run the cell's LR trials; write its final record; return {status, usd, wall_s}."""
    rec = records.load_record(w.plan.dir, pc.cell_id) or pc.new_record()
    rec.setdefault("attempts", [])
    live = Live(w, rec)
    live.beat()
    beat = threading.Thread(
        target=live.beat_forever, args=(min(5.0, w.plan.settings.heartbeat_timeout_s / 3),), daemon=True
    )
    beat.start()
    outcomes: dict[int, dict[str, Any]] = {}
    try:
        for k in range(pc.lr_trials):
            done = [a for a in rec["attempts"] if a.get("lr_index") == k and a["status"] in RUN_STATUSES]
            out = w.plan.dir / "cells" / pc.cell_id / (f"lr{k}" if pc.lr_trials > 1 else "")
            if done:
                res = records.read_json(out / "result.json") or {"status": done[-1]["status"]}
                outcomes[k] = {
                    "status": done[-1]["status"],
                    "result": res,
                    "eval_loss": done[-1].get("eval_loss"),
                    "lr": done[-1]["lr"],
                }
                continue
            tried = [a for a in rec["attempts"] if a.get("lr_index") == k]
            if tried:
                lr = tried[-1]["lr"]
            elif pc.lr_trials == 1:
                lr = pc.cfg.lr
            else:
                history = [(o["lr"], o["eval_loss"]) for o in outcomes.values() if o["eval_loss"] is not None]
                lr = suggest_lr(pc.cfg.method.name, history, pc.cfg.seed + int(pc.cell_id[:6], 16), k)
            outcomes[k] = _run_one(w, pc, live, k, lr, out)
    finally:
        live.stop.set()
        beat.join(timeout=10)
    best = min(
        outcomes.values(),
        key=lambda o: (RANK[o["status"]], o["eval_loss"] if o["eval_loss"] is not None else math.inf),
    )
    runs = [a for a in rec["attempts"] if a.get("lr_index") is not None]
    spent_usd = sum(a.get("usd") or 0.0 for a in runs)
    spent_wall = sum(a.get("wall_s") or 0.0 for a in runs)
    with live.lock:
        rec.update(
            status=best["status"],
            reason=best["result"].get("reason"),
            lr=best["lr"],
            measured=best["result"].get("measured"),
            provenance=best["result"].get("provenance"),
            spent={"usd": spent_usd, "wall_s": spent_wall, "cpu_s": sum(a.get("cpu_s") or 0.0 for a in runs)},
        )
        if pc.lr_trials > 1:
            rec["lr_results"] = [
                {"lr": o["lr"], "status": o["status"], "eval_loss": o["eval_loss"]}
                for _, o in sorted(outcomes.items())
            ]
    live.save()
    return {"status": best["status"], "usd": spent_usd, "wall_s": spent_wall}

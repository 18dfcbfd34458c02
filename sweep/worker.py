"""A sweep worker: claim a cell, run it, record it, repeat until every cell has a terminal status.

Several workers (local processes, other machines) share one storage: `sweep.claims` decides who runs
what. A cell whose owner died (heartbeat older than sweep.heartbeat_timeout_s and, on this host, its
pid gone) is retried once as a new Optuna trial, resuming from its checkpoint; a second death marks
it `failed`. Before starting a cell the worker checks what the whole sweep has spent (measured) plus
what is running (estimated) against the budget, and marks the cell `over_budget` if it would not fit.

Devices (sweep/devices.py): a worker owns device slots (`sweep.devices`, or its share when
`sweep.workers` splits them) and starts a cell whose `gpu.count` = N once N slots are free, in a thread
of its own (one cell at a time, in this thread, when it owns a single slot); the cell's runner gets
those slots and nothing else does until it ends. A cell that needs more slots than the worker owns is
never claimed by it (the plan marks such cells infeasible on this machine). Ctrl-C stops the running
cells as the single-cell path does (each is recorded `interrupted` and goes back to pending).

`python -m sweep.worker SWEEP_DIR` runs one worker from SWEEP_DIR/plan.json (what `tunewise sweep
sweep.workers=N` starts N times).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from advisor.trials.store import load_record, now_iso, save_record
from sweep.claims import Claims, Row, is_dead, maybe_dead, me
from sweep.devices import ENV_WORKER, LEDGER, Slots, cell_env, layout, local_slots, machine_slots
from sweep.plan import Plan, PlannedCell
from sweep.planfile import load_plan
from sweep.records import write_results_csv
from sweep.settings import SweepSettings
from sweep.study import make_pruner, open_study, tell_end

log = logging.getLogger("tunewise.sweep")


def needs(pc: PlannedCell, settings: SweepSettings) -> int:
    """Device slots a cell takes here: its gpu.count (its first node's under srun: sweep.devices)."""
    return local_slots(pc.cfg.gpu.count, settings) if pc.cfg is not None else 1


def worker_slots(plan: Plan) -> list[str]:
    """This worker's slots: its share from the process that spawned it, else sweep.devices."""
    given = os.environ.get(ENV_WORKER)
    if given is not None:
        return [d for d in given.split(",") if d]
    largest = max((needs(pc, plan.settings) for pc in plan.runnable()), default=1)
    return machine_slots(plan.settings.devices, largest)  # a single worker: every slot


@dataclass
class CellOwner:
    """The worker as one running cell sees it (sweep.attempts.Owner): its runner's environment holds
    the cell's device slots."""

    plan: Plan
    env: dict[str, str] | None
    claims: Claims
    study: optuna.Study
    host: str
    pid: int


@dataclass
class Worker:
    plan: Plan
    env: dict[str, str] | None = None  # added to every runner's environment (with its cell's devices)

    def __post_init__(self) -> None:
        s = self.plan.settings
        self.claims = Claims(s.storage, s.study_name)
        self.study = open_study(s.storage, s.study_name, make_pruner(s.pruner, len(self.plan.cells)))
        self.host, self.pid = me()
        self.slots = Slots(worker_slots(self.plan), self.plan.dir / LEDGER)
        self._running: dict[str, threading.Thread] = {}
        self._ended = threading.Event()
        self._lock = threading.Lock()  # the claims and results.csv of cells ending in threads

    # ------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Work until no cell is left to claim; wait for the cells running here, and for cells whose
        owner on this host died."""
        try:
            self._loop()
        except KeyboardInterrupt:
            self._interrupt_cells()
            raise
        self._join_cells()

    def _loop(self) -> None:
        s = self.plan.settings
        while True:
            rows = self.claims.rows()
            did_something, waiting = False, False
            for pc in self.plan.cells:
                row = rows.get(pc.cell_id)
                if pc.status != "run" or row is None or row.terminal or pc.cell_id in self._running:
                    continue
                if needs(pc, s) > len(self.slots.names):  # never here: the plan says why
                    continue
                if row.status == "pending":
                    did_something |= self._try_start(pc, row, rows)
                elif is_dead(row, s.heartbeat_timeout_s):
                    did_something |= self._retry_dead(pc, row)
                elif maybe_dead(row):
                    waiting = True
                if row.status == "pending" and not did_something and needs(pc, s) > self.slots.free:
                    waiting = True  # it waits for devices a running cell will free
                if did_something:
                    break  # re-read the table: the budget and other workers moved on
            if not did_something:
                if not waiting and not self._running:
                    return
                self._ended.wait(s.poll_s)
                self._ended.clear()

    # ------------------------------------------------------------------------------------------
    def _budget_problem(self, pc: PlannedCell, rows: dict[str, Row]) -> str | None:
        """Why starting this cell now would break the budget (measured spend + running estimates)."""
        b = self.plan.base_cfg
        if not self.plan.settings.prescreen:
            return None
        from sweep.plan import refresh

        refresh(self.plan)  # this cell's hours and dollars calibrated on the cells finished so far
        spent_usd = sum(r.usd or 0.0 for r in rows.values() if r.terminal or r.status == "running")
        spent_h = sum(r.wall_s or 0.0 for r in rows.values() if r.terminal or r.status == "running") / 3600
        spent_h /= max(1, self.plan.settings.workers)
        if b.budget_usd is not None and spent_usd + pc.usd > b.budget_usd:
            return (
                f"not started: spent ${spent_usd:.4f} (measured, plus estimates of running cells) + this "
                f"cell's estimate ${pc.usd:.4f} > budget.usd={b.budget_usd}"
            )
        if (
            b.budget_hours is not None
            and spent_h + pc.hours / max(1, self.plan.settings.workers) > b.budget_hours
        ):
            return (
                f"not started: {spent_h:.3f} h spent + this cell's estimate {pc.hours:.3f} h > "
                f"budget.hours={b.budget_hours}"
            )
        return None

    def _try_start(self, pc: PlannedCell, row: Row, rows: dict[str, Row]) -> bool:
        problem = self._budget_problem(pc, rows)
        if problem:
            if self.claims.cas(row, status="over_budget"):
                from sweep.skipped import record_skipped

                record_skipped(self.plan, self.study, pc, "over_budget", problem)
                log.info("cell %s over budget: %s", pc.cell_id, problem)
            return True
        devices = self.slots.take(needs(pc, self.plan.settings), pc.cell_id)
        if devices is None:
            return False
        if not self.claims.cas(
            row,
            status="running",
            host=self.host,
            pid=self.pid,
            heartbeat=time.time(),
            attempts=row.attempts + 1,
            usd=pc.usd,
            wall_s=pc.hours * 3600,
        ):
            self.slots.give(devices, pc.cell_id)
            return False
        self._start(pc, devices)
        return True

    def _retry_dead(self, pc: PlannedCell, row: Row) -> bool:
        reason = (
            f"worker {row.host}:{row.pid} stopped (no heartbeat for "
            f"{time.time() - (row.heartbeat or 0):.0f} s)"
        )
        if row.deaths + 1 >= 2:
            if not self.claims.cas(row, status="failed", deaths=row.deaths + 1):
                return False
            self._mark_died(pc, row, reason)
            rec = load_record(self.plan.dir, pc.cell_id) or pc.new_record()
            rec.status, rec.reason = "failed", f"died twice; last: {reason}"
            save_record(self.plan.dir, rec)
            write_results_csv(self.plan.dir)
            log.info("cell %s failed: %s", pc.cell_id, rec.reason)
            return True
        devices = self.slots.take(needs(pc, self.plan.settings), pc.cell_id)
        if devices is None:
            return False
        if not self.claims.cas(
            row,
            status="running",
            host=self.host,
            pid=self.pid,
            heartbeat=time.time(),
            attempts=row.attempts + 1,
            deaths=row.deaths + 1,
        ):
            self.slots.give(devices, pc.cell_id)
            return False
        self._mark_died(pc, row, reason)
        log.info("cell %s: retrying once, resuming from its checkpoint (%s)", pc.cell_id, reason)
        self._start(pc, devices)
        return True

    def _mark_died(self, pc: PlannedCell, row: Row, reason: str) -> None:
        rec = load_record(self.plan.dir, pc.cell_id)
        if row.trial_number is not None:
            tell_end(self.study, row.trial_number, "failed", None, reason)
        if rec is not None and rec.attempts and rec.attempts[-1].status == "running":
            last = rec.attempts[-1]
            last.status, last.reason, last.ended = "died", reason, now_iso()
            save_record(self.plan.dir, rec)

    # ------------------------------------------------------------------------------------------
    def _start(self, pc: PlannedCell, devices: list[str]) -> None:
        """Run the cell on `devices`: here when this worker owns one slot, else in a thread."""
        if len(self.slots.names) == 1:
            self._run_cell(pc, devices)
            return
        t = threading.Thread(
            target=self._run_cell, args=(pc, devices), name=f"cell-{pc.cell_id}", daemon=True
        )
        self._running[pc.cell_id] = t
        t.start()

    def _run_cell(self, pc: PlannedCell, devices: list[str]) -> None:
        from sweep.attempts import run_attempts

        lay = layout(pc.cfg.gpu.count, self.plan.settings) if pc.cfg is not None else None
        owner = CellOwner(
            self.plan,
            {**(self.env or {}), **cell_env(devices, lay)},
            self.claims,
            self.study,
            self.host,
            self.pid,
        )
        log.info("cell %s on device slot(s) %s", pc.cell_id, ",".join(devices))
        try:
            final: dict[str, Any] = run_attempts(owner, pc)
            with self._lock:
                row = self.claims.rows()[pc.cell_id]
                self.claims.cas(row, status=final["status"], usd=final["usd"], wall_s=final["wall_s"])
                write_results_csv(self.plan.dir)
        except KeyboardInterrupt:
            if threading.current_thread() is threading.main_thread():
                raise
            # a cell thread stopped by _interrupt_cells: its attempt is recorded, the cell pending
        finally:
            self.slots.give(devices, pc.cell_id)
            self._running.pop(pc.cell_id, None)
            self._ended.set()

    def _join_cells(self) -> None:
        while self._running:
            for t in list(self._running.values()):
                t.join()

    def _interrupt_cells(self) -> None:
        """Ctrl-C in a worker running cells in threads: raise KeyboardInterrupt in each of them (as the
        main thread gets it when it runs the cell itself), so that each records its attempt
        `interrupted`, kills its runner and gives the cell back; wait for them."""
        for t in list(self._running.values()):
            if t.ident is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(t.ident), ctypes.py_object(KeyboardInterrupt)
                )
        deadline = time.monotonic() + 60
        for t in list(self._running.values()):
            with contextlib.suppress(RuntimeError):
                t.join(timeout=max(0.0, deadline - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if len(argv) != 1:
        print("usage: python -m sweep.worker SWEEP_DIR", file=sys.stderr)
        return 2
    try:
        Worker(load_plan(Path(argv[0]))).run()
    except KeyboardInterrupt:  # Ctrl-C reached the whole group: its cell went back to pending
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Worker", "main"]

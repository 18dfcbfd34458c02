"""The stall watchdog: a cell's runner that stops making progress, or runs past its wall-clock cap, is
killed with its whole process group, so a hung run cannot hold the sweep forever.

Progress is what the runner reports (runners/protocol.py): every protocol event but a heartbeat, and a
heartbeat whose `tick` moved — the runner's main thread ticks on every forward pass and optimizer step,
on each phase it enters, and whenever its Python stack changed between two heartbeats. A stopped
process sends nothing; a main thread blocked in one call (a deadlocked loader, a stuck collective)
still has its heartbeat thread beating, but the tick stands still. Either way, after
`sweep.cell_stall_minutes` without progress the runner's process group gets SIGKILL (which ends a
stopped process too) and the attempt ends `failed` with the reason from `Watchdog.reason`.
`sweep.cell_timeout_minutes` caps an attempt however busy it is. The worker's own pauses (answering a
prune question) count as progress: the runner was waiting on the worker, not stuck.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

log = logging.getLogger("tunewise.sweep")


def _minutes(s: float) -> str:
    return f"{s / 60:.3g}"


def kill_group(pgid: int) -> None:
    """SIGKILL every process in the group (the runner leads its own: pgid = its pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class Watchdog:
    """`with Watchdog(pid, stall_s, timeout_s) as dog:` feed it every protocol event (`saw`); it kills
    the process group `pid` once stalled or past the cap and says why in `reason` (None = never)."""

    def __init__(self, pid: int, stall_s: float | None, timeout_s: float | None):
        self.pid, self.stall_s, self.timeout_s = pid, stall_s, timeout_s
        self.started = self.last = time.monotonic()
        self.step: int | None = None
        self.planned: int | None = None
        self.phase: str | None = None
        self.reason: str | None = None
        self._tick: Any = object()  # no tick seen yet: the first heartbeat is progress
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def saw(self, ev: dict[str, Any]) -> None:
        """One protocol event from the runner (called from the thread reading its stdout)."""
        if ev.get("type") == "start":
            self.planned = ev.get("planned_steps")
        if ev.get("step") is not None:
            self.step = ev["step"]
        if ev.get("phase"):
            self.phase = ev["phase"]
        tick = ev.get("tick")
        if ev.get("type") != "heartbeat" or tick is None or tick != self._tick:
            self.moved()  # a heartbeat without a tick (a runner that reports no work) counts too
        if tick is not None:
            self._tick = tick

    def moved(self) -> None:
        self.last = time.monotonic()

    def _where(self) -> str:
        if self.step is None:
            at = "before the runner reported a step"
        else:
            at = f"at step {self.step}" + (f" of {self.planned}" if self.planned else "")
        return at + (f" (phase {self.phase})" if self.phase else "")

    def why(self, now: float) -> str | None:
        """The reason to kill the runner now, or None."""
        if self.timeout_s is not None and now - self.started > self.timeout_s:
            return (
                f"timed out: still running after {_minutes(self.timeout_s)} min "
                f"(sweep.cell_timeout_minutes) {self._where()}; runner killed"
            )
        if self.stall_s is not None and now - self.last > self.stall_s:
            return (
                f"stalled: no progress for {_minutes(self.stall_s)} min (sweep.cell_stall_minutes) "
                f"{self._where()}; runner killed"
            )
        return None

    def _watch(self) -> None:
        limits = [x for x in (self.stall_s, self.timeout_s) if x is not None]
        period = min(5.0, max(0.2, min(limits) / 10))
        while not self._stop.wait(period):
            reason = self.why(time.monotonic())
            if reason:
                self.reason = reason
                log.warning("runner pid %s: %s", self.pid, reason)
                kill_group(self.pid)
                return

    def __enter__(self) -> Watchdog:
        if self.stall_s is not None or self.timeout_s is not None:
            self._thread = threading.Thread(target=self._watch, name="tunewise-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

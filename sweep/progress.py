"""Progress of a sweep on stderr: a rich live table on a terminal, plain log lines otherwise.

The view reads only the records in sweep.dir/trials (what every worker, local or not, writes), so
it shows the same thing whether the cells run in this process or in worker processes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import Counter
from typing import Any

from advisor.trials.record import TrialRecord
from advisor.trials.store import read_records
from sweep.plan import Plan, PlannedCell

log = logging.getLogger("tunewise.sweep")


def snapshot(plan: Plan) -> dict[str, Any]:
    from sweep.plan import refresh

    learned = refresh(plan)  # the cells still to run priced from the finished ones (sweep.reestimate)
    recs = {r.cell_id: r for r in read_records(plan.dir)[0]}
    counts: Counter[str] = Counter()
    running: list[tuple[PlannedCell, TrialRecord]] = []
    spent_usd, left_h = 0.0, 0.0
    for pc in plan.cells:
        rec = recs.get(pc.cell_id)
        st = rec.status if rec is not None else "pending"
        counts[st] += 1
        spent_usd += float((rec.spent if rec is not None and rec.spent else {}).get("usd") or 0.0)
        if rec is not None and st == "running":
            running.append((pc, rec))
        if st in ("pending", "running") and pc.status == "run":
            left_h += pc.hours
    return {
        "counts": counts,
        "running": running,
        "spent_usd": spent_usd,
        "eta_h": left_h / max(1, plan.settings.workers),
        "eta_source": f"calibrated on {learned.records} finished" if learned else "advisor estimate",
        "total": len(plan.cells),
    }


def render(plan: Plan, started: float) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    snap = snapshot(plan)
    c = snap["counts"]
    done = sum(c[s] for s in ("complete", "pruned", "failed", "oom"))
    skipped = c["infeasible"] + c["over_budget"]
    b = plan.base_cfg
    budget = f" / ${b.budget_usd:.4f}" if b.budget_usd is not None else ""
    header = Text(
        f"sweep {plan.settings.dir.name}: {done} done, {len(snap['running'])} running, "
        f"{skipped} skipped of {snap['total']} · elapsed {time.time() - started:.0f} s · "
        f"spent ${snap['spent_usd']:.4f}{budget} · ETA {snap['eta_h'] * 3600:.0f} s ({snap['eta_source']})"
    )
    t = Table()
    for col in ("cell", "overrides", "step", "loss", "last eval", "heartbeat"):
        t.add_column(col)
    for pc, rec in snap["running"]:
        hb = rec.heartbeat or {}
        evals = rec.attempts[-1].evals if rec.attempts else []
        t.add_row(
            pc.cell_id,
            " ".join(pc.cell.overrides),
            str(hb.get("step", "-")),
            f"{hb['loss']:.4f}" if isinstance(hb.get("loss"), (int, float)) else "-",
            f"{evals[-1][2]:.4f}" if evals and evals[-1][2] is not None else "-",
            f"{time.time() - hb['t']:.0f} s ago" if hb.get("t") else "-",
        )
    return Group(header, t)


class View:
    """`with View(plan):` — a live table refreshed every second on a TTY; nothing extra otherwise
    (the workers' log lines are the plain progress)."""

    def __init__(self, plan: Plan, enabled: bool | None = None):
        self.plan = plan
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.started = time.time()
        self._stop = threading.Event()

    def __enter__(self) -> View:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                render(self.plan, self.started),
                console=Console(stderr=True),
                refresh_per_second=2,
                redirect_stderr=True,
                transient=False,
            )
            self._live.__enter__()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):  # a torn read must not stop the sweep
                self._live.update(render(self.plan, self.started))

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join(timeout=5)
            self._live.update(render(self.plan, self.started))
            self._live.__exit__(*exc)

"""The live view reads only the records: counts, the running cell's step / loss / last eval, spend."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from advisor.config.schema import from_names
from advisor.trials.matrix import Cell
from advisor.trials.record import Attempt
from advisor.trials.store import save_record
from sweep.plan import Plan, PlannedCell
from sweep.progress import render, snapshot
from sweep.settings import SweepSettings


def _plan(d: Path) -> Plan:
    base = from_names("gpt2", "lora", "cpu", budget={"usd": 2.0})
    estimate = {"cost": {"usd": 0.5}, "time": {"hours": 0.01}}
    cells = [
        PlannedCell(Cell(cid, (("method.r", r),)), None, estimate, st)
        for cid, r, st in (
            ("aaaaaaaaaa", 4, "run"),
            ("bbbbbbbbbb", 8, "run"),
            ("cccccccccc", 16, "infeasible"),
        )
    ]
    s = SweepSettings(dir=d, storage="sqlite://", study_name="s", matrix_name="m")
    return Plan(s, base, {"method.r": [4, 8, 16]}, [0], cells)


def test_view_shows_running_cell_and_spend(tmp_path):
    plan = _plan(tmp_path)
    running = plan.cells[0].new_record()
    running.status, running.heartbeat = "running", {"t": time.time(), "step": 37, "loss": 1.2345}
    running.attempts = [Attempt(0, "2025-01-01T00:00:00Z", None, "running", evals=[[30, 0.5, 1.5]])]
    done = plan.cells[1].new_record()
    done.status, done.spent = "complete", {"usd": 0.75}
    skipped = plan.cells[2].new_record()
    skipped.status = "infeasible"
    for r in (running, done, skipped):
        save_record(tmp_path, r)
    snap = snapshot(plan)
    assert snap["counts"]["running"] == 1 and snap["spent_usd"] == 0.75
    assert abs(snap["eta_h"] - 0.01) < 1e-9  # only the running cell is left
    console = Console(record=True, width=200)
    console.print(render(plan, time.time() - 5))
    text = console.export_text()
    assert "1 done, 1 running, 1 skipped of 3" in text and "spent $0.7500 / $2.0000" in text
    assert "aaaaaaaaaa" in text and "37" in text and "1.2345" in text and "1.5000" in text

"""The live view reads only the records: counts, the running cell's step / loss / last eval, spend."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from advisor.config.schema import from_names
from sweep import records
from sweep.planfile import LoadedCell, LoadedPlan
from sweep.progress import render, snapshot
from sweep.settings import SweepSettings


def _plan(d: Path) -> LoadedPlan:
    base = from_names("gpt2", "lora", "cpu", budget={"usd": 2.0})
    cells = [
        LoadedCell(cid, (("method.r", r),), [f"method.r={r}"], None, None, st, None, 0.5, 0.01, 1)
        for cid, r, st in (
            ("aaaaaaaaaa", 4, "run"),
            ("bbbbbbbbbb", 8, "run"),
            ("cccccccccc", 16, "infeasible"),
        )
    ]
    s = SweepSettings(dir=d, storage="sqlite://", study_name="s", matrix_name="m")
    return LoadedPlan(d, s, base, {"method.r": [4, 8, 16]}, [0], cells)


def test_view_shows_running_cell_and_spend(tmp_path):
    plan = _plan(tmp_path)
    running = plan.cells[0].new_record()
    running.update(status="running", heartbeat={"t": time.time(), "step": 37, "loss": 1.2345})
    running["attempts"] = [{"status": "running", "evals": [[30, 0.5, 1.5]]}]
    done = plan.cells[1].new_record()
    done.update(status="complete", spent={"usd": 0.75})
    skipped = plan.cells[2].new_record()
    skipped.update(status="infeasible")
    for r in (running, done, skipped):
        records.save_record(tmp_path, r)
    snap = snapshot(plan)
    assert snap["counts"]["running"] == 1 and snap["spent_usd"] == 0.75
    assert abs(snap["eta_h"] - 0.01) < 1e-9  # only the running cell is left
    console = Console(record=True, width=200)
    console.print(render(plan, time.time() - 5))
    text = console.export_text()
    assert "1 done, 1 running, 1 skipped of 3" in text and "spent $0.7500 / $2.0000" in text
    assert "aaaaaaaaaa" in text and "37" in text and "1.2345" in text and "1.5000" in text

"""Nothing the user typed is dropped silently: an override of an axis key replaces the axis, rows
beyond the data collapse into one cell, and both say so in the plan; the cells the sweep plans are
the cells its report counts. Dry runs of the real CLI (and one sweep whose cells cannot fit)."""

from __future__ import annotations

import re

from advisor.trials.store import read_records
from reports.context import build_context
from reports.records import load
from tests.sweep.conftest import base_overrides, tunewise

# cell, status, est $, est time, batch, gpus (`1`, `2 fsdp`), overrides
PLAN_LINE = re.compile(r"^([0-9a-f]{10})\s+(\w+)\s+\S+\s+\S+(?: \w+)?\s+\S+\s+\d+(?: \w+)?\s+(.*)$")


def _norm(overrides: str) -> str:
    return " ".join(sorted(overrides.split()))  # the test matrices' axes come in YAML key order


def _cells(stdout: str) -> dict[str, str]:
    """cell id → its overrides, from the printed plan."""
    return {m.group(1): _norm(m.group(3)) for line in stdout.splitlines() if (m := PLAN_LINE.match(line))}


def _notes(stdout: str) -> list[str]:
    return [line[len("note: ") :] for line in stdout.splitlines() if line.startswith("note: ")]


def test_an_override_of_an_axis_key_replaces_the_axis_and_the_plan_says_so(tiny_assets, tmp_path):
    args = base_overrides(tiny_assets, tmp_path / "s", "matrix=t_method_rank_size", "method.r=32")
    out = tunewise(tiny_assets, [*args, "sweep.dry_run=true"])
    assert out.returncode == 0, out.stderr[-3000:]
    cells = _cells(out.stdout)
    assert sorted(cells.values()) == sorted(
        _norm(f"method={m}{' method.r=32' if m != 'full' else ''} data.rows={rows}")
        for m in ("full", "lora", "qlora")
        for rows in (24, 48)
    )
    assert "method.r=32 replaces the matrix's method.r axis [2,4]: every cell has method.r=32" in _notes(
        out.stdout
    )


def test_rows_beyond_the_data_are_one_cell_and_the_plan_says_so(tiny_assets, tmp_path):
    args = base_overrides(tiny_assets, tmp_path / "s", "matrix=t_rows")
    out = tunewise(tiny_assets, [*args, "sweep.dry_run=true"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(_cells(out.stdout).values()) == ["data.rows=108", "data.rows=24"]
    assert _notes(out.stdout) == [
        f"data.rows 200, 500 exceed the 108 training rows of {tiny_assets['data']}: one cell with all 108 rows "
        "(data.rows=108)"
    ]


def test_the_report_counts_the_cells_the_sweep_planned(tiny_assets, tmp_path):
    """Issue 13: exclude {method.r: 8, data.rows: 24} planned 2 cells and reported 3. Every cell is
    infeasible here (gpu.usable_mib=1), so only the baseline runs a process."""
    d = tmp_path / "s"
    args = base_overrides(tiny_assets, d, "matrix=t_exclude", "gpu.usable_mib=1")
    dry = tunewise(tiny_assets, [*args, "sweep.dry_run=true"])
    planned = _cells(dry.stdout)
    assert sorted(planned.values()) == sorted(
        _norm(o) for o in ("method=full data.rows=48", "method=lora method.r=8 data.rows=48")
    )
    out = tunewise(tiny_assets, args)
    assert out.returncode == 1, out.stderr[-3000:]  # no cell could run (issue 16): not a success
    assert "no cell could run" in out.stderr
    records, _ = read_records(d)
    assert {r.cell_id for r in records} == set(planned) and {r.status for r in records} == {"infeasible"}
    ctx = build_context(load(d), d / "plots")
    assert ctx.sweep.planned == {r.group_key for r in records}
    assert (ctx.planned, ctx.finished_cells, ctx.running) == (2, 2, False)
    assert "Sweep still running" not in (d / "report.md").read_text()

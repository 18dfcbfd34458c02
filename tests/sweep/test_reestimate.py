"""The sweep re-estimates as it learns (sweep.reestimate): once a cell has finished, the cells still to
run are priced by the advisor calibrated on what it measured — their hours and dollars, hence the
budget check (`over_budget`) and the live view's ETA — while the advise row kept with each cell stays
the advisor's own."""

from __future__ import annotations

import pytest

from advisor.config.schema import from_names
from advisor.estimator.calibrate import fit
from advisor.estimator.estimate import estimate
from advisor.trials.matrix import Cell
from advisor.trials.record import TrialRecord
from advisor.trials.store import save_record
from sweep.plan import Plan, PlannedCell, apply_budget, refresh
from sweep.settings import SweepSettings

PARTS = ("start", "load", "train", "eval", "metric", "checkpoint", "save")


def _plan(tmp_path) -> Plan:
    base = from_names("demo-base", "full", "cpu", train={"seq_len": 128, "micro_batch_size": 8})
    settings = SweepSettings(
        dir=tmp_path, storage=f"sqlite:///{tmp_path}/study.db", study_name="t", matrix_name="t"
    )
    cells = []
    for i, method in enumerate(("full", "lora", "qlora")):
        cfg = from_names("demo-base", method, "cpu", train={"seq_len": 128, "micro_batch_size": 8})
        cells.append(PlannedCell(Cell(f"c{i}", (("method", method),)), cfg, estimate(cfg), "run"))
    return Plan(settings, base, {"method": ["full", "lora", "qlora"]}, [0], cells)


def _finish(plan: Plan, pc: PlannedCell, slower: float) -> None:
    """A finished record for `pc` whose every wall-time part took `slower` × the estimate."""
    t = pc.estimate["time"]
    measured = {
        "tokens_per_s": t["tokens_per_s"] / slower,
        "wall_s": {k: v * slower for k, v in t["wall_s"].items()},
        "steps": t["steps"],
        "allocated_gib": pc.estimate["memory"]["allocated_gib"],
    }
    rec = pc.new_record()
    rec.status, rec.measured = "complete", measured
    save_record(plan.dir, rec)


def test_cells_still_to_run_are_priced_from_the_finished_ones(tmp_path):
    plan = _plan(tmp_path)
    before = {pc.cell_id: (pc.hours, pc.usd) for pc in plan.cells}
    assert refresh(plan) is None and all(pc.learned is None for pc in plan.cells)  # nothing finished
    full, lora, qlora = plan.cells
    _finish(plan, full, 2.0)
    full.status = "complete"  # finished: not re-priced
    learned = refresh(plan)
    assert learned is not None and learned.records == 1
    # a method without records of its own takes the GPU's pooled factors: twice as slow everywhere
    for pc in (lora, qlora):
        assert pc.hours == pytest.approx(2.0 * before[pc.cell_id][0], rel=0.01)
        assert pc.usd == pytest.approx(2.0 * before[pc.cell_id][1], rel=0.02, abs=1e-6)
        assert pc.estimate["time"]["hours"] == pytest.approx(before[pc.cell_id][0], rel=1e-9)  # kept as is
    assert full.learned is None and full.hours == pytest.approx(before[full.cell_id][0])


def test_the_budget_check_uses_the_calibrated_estimates(tmp_path):
    plan = _plan(tmp_path)
    hours = sum(pc.hours for pc in plan.cells[1:])
    _finish(plan, plan.cells[0], 3.0)
    plan.cells[0].status = "complete"
    apply_budget(plan, None, 1.5 * hours)  # fits the advisor's estimate ...
    assert all(pc.status in ("run", "complete") for pc in plan.cells)
    refresh(plan)
    apply_budget(plan, None, 1.5 * hours)  # ... not what the finished cell showed (3× slower)
    assert [pc.status for pc in plan.cells[1:]].count("over_budget") >= 1


def test_calibration_fits_seconds_per_step_and_each_wall_part():
    """Factors per wall-time part (start … save) and per optimizer step, from the records' own
    step counts: a pruned cell that ran half its steps in half the time calibrates to 1."""
    cfg = from_names("demo-base", "lora", "cpu")
    row = estimate(cfg)
    t = row["time"]
    measured = {
        "wall_s": {"start": t["wall_s"]["start"] * 2, "train": t["wall_s"]["train"] / 2, "eval": 0.0},
        "steps": t["steps"] // 2,
        "tokens_per_s": t["tokens_per_s"],
    }
    rec = TrialRecord(
        cell_id="x", coords={"method": "lora"}, config=None, status="pruned", estimate=row, measured=measured
    )
    f = fit([rec]).factors[("cpu", "lora")]
    assert f["step_ratio"].value == pytest.approx(t["steps"] / (2 * (t["steps"] // 2)), rel=1e-6)
    assert f["start_ratio"].value == pytest.approx(2.0)
    assert "eval_ratio" not in f  # a measured 0 says nothing
    out = fit([rec]).apply(row, cfg)
    assert out["time"]["wall_s"]["start"] == pytest.approx(2 * t["wall_s"]["start"], abs=0.1)
    assert set(out["time"]["wall_s"]) == set(PARTS)

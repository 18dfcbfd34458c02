"""End to end on the real runner and a tiny real model: skips never start a process, failures are
recorded, records / results.csv / sweep.json / the Optuna study agree."""

from __future__ import annotations

import csv
import json
import re

import optuna
import pytest

import reports
from tests.sweep.conftest import base_overrides, load_records, tunewise

PLAN_LINE = re.compile(r"^([0-9a-f]{10})\s+(\w+)\s+([0-9.e+-]+)\s")


def _plan(stdout: str) -> dict[str, tuple[str, float]]:
    out = {}
    for line in stdout.splitlines():
        m = PLAN_LINE.match(line)
        if m:
            out[m.group(1)] = (m.group(2), float(m.group(3)))
    return out


def test_skipped_cells_never_start_and_a_failing_cell_does_not_stop_the_sweep(tiny_assets, tmp_path):
    d = tmp_path / "sweep"
    args = base_overrides(tiny_assets, d, "matrix=t_skip", "gpu.usd_per_hour=1000000")
    dry = tunewise(tiny_assets, [*args, "sweep.dry_run=true"])
    assert dry.returncode == 0, dry.stderr
    assert not d.exists()  # a dry run writes nothing
    plan = _plan(dry.stdout)
    assert len(plan) == 6  # full × 2 memories + lora × 2 memories × 2 target lists
    runnable = {cid: usd for cid, (st, usd) in plan.items() if st == "run"}
    # the advisor rejects the unknown module before any process (2 cells), 2 cells cannot fit
    assert len(runnable) == 2 and sum(st == "infeasible" for st, _ in plan.values()) == 2
    assert sum(st == "failed" for st, _ in plan.values()) == 2
    priciest = max(runnable, key=runnable.get)
    assert sorted(runnable.values())[-1] > sorted(runnable.values())[-2]
    budget = sum(runnable.values()) - runnable[priciest] / 2

    out = tunewise(tiny_assets, [*args, f"budget.usd={budget}"])
    assert out.returncode == 0, out.stderr[-3000:]
    recs = load_records(d)
    assert set(recs) == set(plan)
    by_status: dict[str, list[dict]] = {}
    for r in recs.values():
        by_status.setdefault(r["status"], []).append(r)
    assert [r["cell_id"] for r in by_status["over_budget"]] == [priciest]
    assert "budget.usd" in by_status["over_budget"][0]["reason"]
    assert len(by_status["infeasible"]) == 2 and len(by_status["failed"]) == 2
    for r in by_status["infeasible"] + by_status["over_budget"] + by_status["failed"]:
        assert "does not fit" in r["reason"] or "budget" in r["reason"] or "nope_proj" in r["reason"]
        assert not (d / "cells" / r["cell_id"]).exists()  # no process, no runner log
        assert r["attempts"][0]["started"] is None and r["measured"] is None
    failed = by_status["failed"][0]
    assert "method.target_modules=[nope_proj]" in " ".join(failed["overrides"])
    (done,) = by_status["complete"]
    m = done["measured"]
    assert m["eval_loss"] > 0 and len(m["eval_curve"]) == 4 and m["trainable_params"] > 0
    assert len(done["attempts"]) == 1 and done["attempts"][0]["cpu_s"] > 0
    assert done["estimate"]["memory"]["device_gib"] > 0 and done["config"]["gpu"]["usable_mib"] == 60000

    frame = reports.results(d)  # one tidy row per attempt; results.csv is that frame written out
    assert len(frame) == sum(len(r["attempts"]) for r in recs.values()) == 6
    rows = list(csv.DictReader((d / "results.csv").read_text().splitlines()))
    assert len(rows) == len(frame) and list(rows[0]) == list(frame.columns)
    assert sorted(r["cell_id"] for r in rows) == sorted(plan)
    assert {
        "estimate.memory.device_gib",
        "estimate.cost.usd",
        "measured.eval_loss",
        "measured.wall_s.train",
    } <= set(rows[0])
    row = frame.set_index("cell_id").loc[done["cell_id"]]
    assert (
        row["measured.eval_loss"] == m["eval_loss"] and row["attempt.cpu_s"] == done["attempts"][0]["cpu_s"]
    )
    assert str(frame["measured.eval_loss"].dtype) == "Float64" and str(
        frame["attempt.started"].dtype
    ).startswith("datetime64")
    assert frame["attempt.started"].isna().sum() == 5  # the skipped cells started no process
    sweep = json.loads((d / "sweep.json").read_text())
    assert sweep["matrix"]["name"] == "t_skip" and sweep["budget"]["usd"] == pytest.approx(budget)
    assert sweep["versions"]["optuna"] and sweep["storage"].startswith("sqlite:///")
    base = json.loads((d / "trials" / "baseline.json").read_text())
    assert base["status"] == "complete" and base["measured"]["eval_loss"] > done["measured"]["eval_loss"] - 1

    study = optuna.load_study(study_name=sweep["study_name"], storage=f"sqlite:///{d / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.user_attrs["cell_id"] for t in trials) == sorted(plan)
    states = {t.user_attrs["cell_id"]: t.state.name for t in trials}
    assert states[done["cell_id"]] == "COMPLETE"
    assert all(
        states[r["cell_id"]] == "PRUNED"
        for r in by_status["infeasible"] + by_status["over_budget"] + by_status["failed"]
    )
    skipped = [t for t in trials if t.state.name == "PRUNED"]
    assert all(t.user_attrs["reason"] for t in skipped)
    assert all(t.params["method"] in ("full", "lora") for t in trials)  # coordinates as params

    # resume: the finished cell never reruns. The plan re-prices what is left from the cell measured
    # (sweep.reestimate), so the over-budget cell runs now if the measured spend + its calibrated price
    # fit budget.usd, and otherwise stays skipped — with today's price in its reason, not a new trial.
    again = tunewise(tiny_assets, [*args, f"budget.usd={budget}"])
    assert again.returncode == 0, again.stderr[-3000:]
    recs2 = load_records(d)
    assert recs2[done["cell_id"]]["attempts"] == done["attempts"]
    pricey = recs2[priciest]
    trials2 = optuna.load_study(study_name=sweep["study_name"], storage=f"sqlite:///{d / 'study.db'}").trials
    if pricey["status"] == "over_budget":
        assert len(trials2) == 6 and len(pricey["attempts"]) == 1, [t.user_attrs for t in trials2]
        assert "budget.usd" in pricey["reason"]
    else:
        assert pricey["status"] == "complete" and len(trials2) == 7
        assert priciest in again.stdout + again.stderr  # the rerun says which cell runs now, and why
    assert {r["cell_id"]: r["status"] for r in recs2.values() if r["cell_id"] != priciest} == {
        r["cell_id"]: r["status"] for r in recs.values() if r["cell_id"] != priciest
    }


def test_bad_sweep_settings_name_key_value_and_allowed(tiny_assets, tmp_path):
    out = tunewise(
        tiny_assets,
        base_overrides(
            tiny_assets,
            tmp_path / "s",
            "sweep.workers=0",
            "sweep.pruner=best",
            "sweep.seeds=-1",
            "sweep.dry_run=true",
        ),
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    for key in ("sweep.workers=0", "sweep.pruner='best'", "sweep.seeds=-1", "median"):
        assert key in out.stderr


@pytest.mark.slow
def test_a_cell_over_budget_runs_once_the_budget_allows_and_the_finished_one_never_reruns(
    tiny_assets, tmp_path
):
    """budget.usd below the plan's total skips the priciest cell without a process; the same command
    with more money runs it, and the cell that finished is not run again. (Before each start the worker
    also checks the measured spend + the cell's price re-estimated from what finished: sweep.worker.)"""
    d = tmp_path / "spend"
    args = base_overrides(tiny_assets, d, "matrix=t_small", "gpu.usd_per_hour=1000000", "sweep.pruner=none")
    plan = _plan(tunewise(tiny_assets, [*args, "sweep.dry_run=true"]).stdout)
    cheap, pricey = sorted(plan, key=lambda c: plan[c][1])
    out = tunewise(tiny_assets, [*args, f"budget.usd={plan[cheap][1] + plan[pricey][1] / 2}"])
    assert out.returncode == 0, out.stderr[-3000:]
    recs = load_records(d)
    first, second = recs[cheap], recs[pricey]
    assert (first["status"], second["status"]) == ("complete", "over_budget"), second["reason"]
    assert "budget.usd" in second["reason"] and not (d / "cells" / pricey).exists()

    out = tunewise(tiny_assets, [*args, "budget.usd=1000000000"])  # more money: the skipped cell runs now
    assert out.returncode == 0, out.stderr[-3000:]
    recs = load_records(d)
    assert recs[first["cell_id"]]["attempts"] == first["attempts"]  # never rerun
    assert recs[second["cell_id"]]["status"] == "complete"
    assert [a["status"] for a in recs[second["cell_id"]]["attempts"]] == ["over_budget", "complete"]

"""A cell whose worker died a second time is marked failed (no third run); its Optuna trial fails."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna

from advisor.config.schema import from_names
from advisor.trials.matrix import Cell
from advisor.trials.record import Attempt
from advisor.trials.store import load_record, save_record
from sweep.claims import Claims, me
from sweep.plan import Plan, PlannedCell
from sweep.settings import SweepSettings
from sweep.study import ask_trial, make_pruner, open_study
from sweep.worker import Worker


def test_second_death_marks_the_cell_failed_without_running_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = from_names("gpt2", "lora", "cpu")
    cell = PlannedCell(Cell("aaaaaaaaaa", (("method.r", 4),)), cfg, {}, "run")
    settings = SweepSettings(
        dir=tmp_path, storage=url, study_name="s", matrix_name="m", heartbeat_timeout_s=1
    )
    plan = Plan(settings, cfg, {"method.r": [4]}, [0], [cell])
    claims = Claims(url, "s")
    claims.ensure([cell.cell_id])
    study = open_study(url, "s", make_pruner("median", 1))
    trial = ask_trial(study, cell.cell, plan.axes, plan.seeds, 2e-4, "lora", {"cell_id": cell.cell_id})
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    claims.cas(
        claims.get(cell.cell_id),
        status="running",
        host=me()[0],
        pid=gone.pid,
        heartbeat=time.time() - 30,
        attempts=2,
        deaths=1,
        trial_number=trial.number,
    )
    rec = cell.new_record()
    rec.status = "running"
    rec.attempts = [
        Attempt(0, None, None, "died", lr_index=0, lr=2e-4),
        Attempt(trial.number, None, None, "running", lr_index=0, lr=2e-4),
    ]
    save_record(tmp_path, rec)

    Worker(plan).run()

    row = claims.get(cell.cell_id)
    assert row.status == "failed" and row.deaths == 2 and row.attempts == 2
    rec = load_record(tmp_path, cell.cell_id)
    assert rec is not None and rec.status == "failed" and rec.reason and "died twice" in rec.reason
    assert [a.status for a in rec.attempts] == ["died", "died"]
    assert not (tmp_path / "cells").exists()  # no third run
    assert optuna.load_study(study_name="s", storage=url).trials[trial.number].state.name == "FAIL"

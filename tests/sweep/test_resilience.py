"""A killed sweep resumes without rerunning finished cells; several workers (SQLite, PostgreSQL) run
every cell exactly once; clearly losing learning rates are pruned early. Real runner, tiny model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from sweep.claims import driver_url
from tests.sweep.conftest import ROOT, base_overrides, env_for, load_records, tunewise

TERMINAL = {"complete", "pruned", "failed", "oom", "infeasible", "over_budget"}


def _study(d: Path, url: str | None = None) -> optuna.Study:
    sweep = json.loads((d / "sweep.json").read_text())
    return optuna.load_study(
        study_name=sweep["study_name"], storage=driver_url(url or f"sqlite:///{d / 'study.db'}")
    )


@pytest.mark.slow
def test_kill_9_mid_cell_then_rerun_finishes_every_cell_once(tiny_assets, tmp_path):
    d = tmp_path / "sweep"
    args = base_overrides(
        tiny_assets,
        d,
        "matrix=t_kill",
        "data.rows=96",
        "train.epochs=12",
        "train.checkpoint_every_steps=10",
        "sweep.pruner=none",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "sweep", *args],
        cwd=ROOT,
        env=env_for(tiny_assets),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed_cell, finished = None, {}
    deadline = time.time() + 300
    while time.time() < deadline and killed_cell is None:
        time.sleep(0.5)
        recs = load_records(d) if (d / "trials").exists() else {}
        done = {c: r for c, r in recs.items() if r["status"] == "complete"}
        running = [
            r
            for r in recs.values()
            if r["status"] == "running" and r["attempts"] and len(r["attempts"][-1].get("evals") or []) >= 1
        ]
        if done and running:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_cell, finished = running[0]["cell_id"], done
    assert killed_cell, "never saw one finished and one running cell"
    mtimes = {c: (d / "cells" / c / "result.json").stat().st_mtime_ns for c in finished}
    time.sleep(1)  # the runner dies with its parent (PR_SET_PDEATHSIG)

    out = tunewise(tiny_assets, [*args, "sweep.heartbeat_timeout_s=3"])
    assert out.returncode == 0, out.stderr[-3000:]
    recs = load_records(d)
    assert len(recs) == 3 and all(r["status"] == "complete" for r in recs.values())
    for c, r in finished.items():  # finished before the kill: never run again
        assert recs[c]["attempts"] == r["attempts"]
        assert (d / "cells" / c / "result.json").stat().st_mtime_ns == mtimes[c]
    killed = recs[killed_cell]
    assert [a["status"] for a in killed["attempts"]] == ["died", "complete"]
    assert (killed["measured"].get("resumed_from_step") or 0) > 0  # resumed from its checkpoint
    for c, r in recs.items():
        if c != killed_cell and c not in finished:
            assert len(r["attempts"]) == 1
    states = sorted((t.user_attrs["cell_id"], t.state.name) for t in _study(d).trials)
    assert states.count((killed_cell, "FAIL")) == 1 and states.count((killed_cell, "COMPLETE")) == 1
    assert len(states) == 4


def _assert_each_cell_once(d: Path, n: int, url: str | None = None) -> None:
    recs = load_records(d)
    assert len(recs) == n
    assert all(r["status"] in ("complete", "pruned") for r in recs.values()), {
        c: r["reason"] for c, r in recs.items()
    }
    assert all(len(r["attempts"]) == 1 for r in recs.values())
    trials = _study(d, url).trials
    assert sorted(t.user_attrs["cell_id"] for t in trials) == sorted(recs)  # one trial per cell
    pids = {r["attempts"][0]["pid"] for r in recs.values()}
    assert len(pids) >= 2  # the work was really shared


@pytest.mark.slow
def test_two_workers_on_sqlite_run_each_cell_exactly_once(tiny_assets, tmp_path):
    d = tmp_path / "sqlite2"
    out = tunewise(tiny_assets, base_overrides(tiny_assets, d, "matrix=t_grid12", "sweep.workers=2"))
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_each_cell_once(d, 12)


def _pg_url() -> str | None:
    url = os.environ.get("TUNEWISE_TEST_PG_URL")
    if url:
        return url
    if os.geteuid() == 0 or shutil.which("initdb"):
        res = subprocess.run(
            ["bash", str(ROOT / "scripts" / "ci_postgres.sh")], capture_output=True, text=True, timeout=600
        )
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip().splitlines()[-1]
    return None


@pytest.mark.slow
@pytest.mark.postgres
def test_three_workers_on_postgresql_run_each_cell_exactly_once(tiny_assets, tmp_path):
    url = _pg_url()
    if url is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is required under CI=true (scripts/ci_postgres.sh could not start it)")
        pytest.skip("no PostgreSQL: set TUNEWISE_TEST_PG_URL or run scripts/ci_postgres.sh")
    d = tmp_path / f"pg-{uuid.uuid4().hex[:8]}"  # a fresh study on a long-lived server
    out = tunewise(
        tiny_assets,
        base_overrides(tiny_assets, d, "matrix=t_grid12", "sweep.workers=3", f"sweep.storage={url}"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert url.split("@")[-1] in json.loads((d / "sweep.json").read_text())["storage"]
    _assert_each_cell_once(d, 12, url)


@pytest.mark.slow
def test_clearly_losing_learning_rates_are_pruned_early(tiny_assets, tmp_path):
    d = tmp_path / "lr"
    out = tunewise(
        tiny_assets,
        base_overrides(
            tiny_assets, d, "matrix=t_lr", "data.rows=96", "train.epochs=2", "sweep.pruner=median"
        ),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    recs = load_records(d)
    by_lr = {r["config"]["train"]["lr"]: r for r in recs.values()}
    winners = [r for lr, r in by_lr.items() if lr >= 1e-3]
    losers = [r for lr, r in by_lr.items() if lr < 1e-6]
    assert all(r["status"] == "complete" for r in winners)
    n_win = min(len(r["measured"]["eval_curve"]) for r in winners)
    pruned = [r for r in losers if r["status"] == "pruned"]
    assert pruned, {lr: r["status"] for lr, r in by_lr.items()}
    for r in pruned:
        assert len(r["attempts"][-1]["evals"]) < n_win  # stopped before the end
        assert r["measured"] and r["measured"]["eval_curve"]  # the last eval is kept
    states = {t.user_attrs["cell_id"]: t.state.name for t in _study(d).trials}
    assert all(states[r["cell_id"]] == "PRUNED" for r in pruned)

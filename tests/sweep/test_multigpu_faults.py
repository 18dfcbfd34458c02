"""Faults in cells on 2 processes, through `tunewise sweep` on CPU (real runner, 2 real gloo ranks, FSDP2):
one rank killed with -9 mid-cell, another cell's rank raising mid-step. Each ends its whole group within
a bounded time, recorded with the rank and the reason; the same command again resumes the killed cell
from its sharded checkpoint to the loss of an uninterrupted run, and reruns no finished cell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advisor.config.schema import RunConfig
from runners.cell import run_cell
from tests.sweep.conftest import ROOT, base_overrides, env_for, load_records

# Loaded by every Python process of the sweep (PYTHONPATH): SIGUSR1 raises an exception in the main
# thread of the process that gets it — a rank failing mid-step as a bug would make it.
RAISE_ON_USR1 = """import signal
def _fault(*_):
    raise RuntimeError("injected fault (SIGUSR1)")
signal.signal(signal.SIGUSR1, _fault)
"""
BOUND_S = 60  # a failing rank ends its group within this (measured: a few seconds)
# an FSDP cell long enough to be killed after a sharded checkpoint (every 5 steps), never pruned
RESUMABLE = (
    "parallel=fsdp",
    "method.dropout=0.0",
    "data.rows=96",
    "train.epochs=3",
    "train.checkpoint_every_steps=5",
    "sweep.pruner=none",
)


def _ranks(cell_dir: Path) -> dict[int, int]:
    """{rank: pid} of the rank processes of this cell (from /proc)."""
    found = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            env = (p / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"runners.parallel.rank" in cmd and str(cell_dir).encode() in b" ".join(cmd):
            rank = [e for e in env if e.startswith(b"RANK=")]
            if rank:
                found[int(rank[0][5:])] = int(p.name)
    return found


def _wait(cond, what: str, timeout_s: float = 600, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout_s
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended while waiting for {what}: {proc.communicate()[1][-3000:]}")
        time.sleep(0.2)


def _step(cell_dir: Path, rank: int) -> int:
    try:
        return int(json.loads((cell_dir / "ranks" / f"beat-{rank}.json").read_text()).get("step") or 0)
    except (OSError, ValueError):
        return 0


def _cells(d: Path) -> dict[int, str]:
    """{method.r: cell_id} from the plan the sweep wrote."""
    plan = json.loads((d / "plan.json").read_text())
    return {dict(c["assignment"])["method.r"]: c["cell_id"] for c in plan["cells"]}


@pytest.mark.slow
def test_a_rank_killed_or_raising_ends_its_group_and_the_rerun_resumes(tiny_assets, tmp_path):
    d = tmp_path / "sweep"
    args = base_overrides(
        tiny_assets,
        d,
        "matrix=t_fault",
        "gpu.count=2",
        *RESUMABLE,
    )
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RAISE_ON_USR1)
    env = {**env_for(tiny_assets), "PYTHONPATH": str(site)}
    cmd = [sys.executable, "-m", "sweep.cli", "sweep", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: (d / "plan.json").exists(), "the plan", proc=proc)
    ids = _cells(d)
    done, killed, raised = (d / "cells" / ids[r] for r in (2, 4, 8))
    # cell r=4: kill -9 rank 1 once a sharded checkpoint is in force
    _wait(
        lambda: (killed / "checkpoint" / "sharded.json").exists(),
        "a sharded checkpoint of cell r=4",
        proc=proc,
    )
    ranks = _ranks(killed)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGKILL)
    t_kill = time.time()
    _wait(lambda: not _ranks(killed), "the killed group to end", BOUND_S)
    ended_kill = time.time() - t_kill
    # cell r=8: rank 1 raises mid-step
    _wait(lambda: _step(raised, 1) >= 2, "cell r=8 training", proc=proc)
    ranks = _ranks(raised)
    os.kill(ranks[1], signal.SIGUSR1)
    t_raise = time.time()
    _wait(lambda: not _ranks(raised), "the failing group to end", BOUND_S)
    ended_raise = time.time() - t_raise
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]  # a cell has a result: exit 0
    recs = load_records(d)
    first = recs[ids[2]]
    assert first["status"] == "complete", first["reason"]
    k, x = recs[ids[4]], recs[ids[8]]
    print(f"group ended {ended_kill:.1f} s after kill -9, {ended_raise:.1f} s after the raise")
    print("killed:", k["reason"], "| raised:", x["reason"])
    assert k["status"] == "failed" and k["reason"].startswith("runner killed by SIGKILL"), k["reason"]
    assert "(rank 1 of 2; rank 0 stopped with it)" in k["reason"]
    assert k["attempts"][-1]["cause"] == "signal"  # retried by a rerun
    assert x["status"] == "failed" and "RuntimeError: injected fault (SIGUSR1)" in x["reason"], x["reason"]
    assert "(rank 1 of 2; rank 0 stopped with it)" in x["reason"]
    assert x["attempts"][-1]["cause"] == "error"  # the same config fails the same way: not retried
    assert (raised / "ranks" / "error-rank1.log").read_text().count("injected fault") >= 1
    for r in (k, x):
        assert r["measured"]["world_size"] == 2
    result_mtime = (done / "result.json").stat().st_mtime_ns

    out = subprocess.run(cmd, cwd=ROOT, env=env_for(tiny_assets), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    recs = load_records(d)
    assert len(recs[ids[2]]["attempts"]) == 1 and (done / "result.json").stat().st_mtime_ns == result_mtime
    assert len(recs[ids[8]]["attempts"]) == 1
    k = recs[ids[4]]
    assert k["status"] == "complete", k["reason"]
    assert [a["status"] for a in k["attempts"]] == ["failed", "complete"]
    resumed = k["measured"]["resumed_from_step"]
    assert resumed > 0 and resumed % 5 == 0

    # the same cell uninterrupted: the same losses after the resume, the same final loss
    cfg = RunConfig.from_dict(k["config"])
    ref = run_cell(cfg, tmp_path / "uninterrupted", resume=False)
    assert ref.status == "complete" and ref.measured is not None, ref.reason
    m, m1 = k["measured"], ref.measured.to_dict()
    assert m["steps"] == m1["steps"] and [e[0] for e in m["eval_curve"]] == [e[0] for e in m1["eval_curve"]]
    diff = max(abs(a[2] - b[2]) for a, b in zip(m["eval_curve"], m1["eval_curve"], strict=True))
    print(
        f"resumed from step {resumed}: final eval loss {m['eval_loss']} vs {m1['eval_loss']} (max diff {diff:.2e})"
    )
    assert diff <= 1e-6 and abs(m["eval_loss"] - m1["eval_loss"]) <= 1e-6

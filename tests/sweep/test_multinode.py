"""Cells larger than a node (gpu.count > sweep.gpus_per_node): one torch.distributed.run agent per node
with a c10d rendezvous at the leader. Planned as whole nodes and refused where the launch mode cannot
start them; run for real here as two agents on this machine (`sweep.node_launcher=local`, gloo, 1 process
per "node"), whose losses equal the same cell on 1 node × 2 processes; a rank killed on one node ends the
whole cell in bounded time, recorded with its rank and node, and the same command resumes both nodes
from the sharded checkpoint to the uninterrupted run's losses; a node that never joins is named."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from advisor.config.schema import RunConfig
from advisor.errors import ConfigError
from runners.cell import run_cell
from tests.sweep.conftest import ROOT, base_overrides, env_for, load_records, tunewise

NODES = ("sweep.gpus_per_node=1", "sweep.node_launcher=local", "gpu.count=2")
# the 2-node and the 1-node group run the same 2 ranks on the same rows: the losses came out identical;
# 1e-5 as in test_multigpu_sweep (a rank on other rows differs by ~1e-2)
LOSS_TOL = 1e-5
BOUND_S = 60  # a rank killed on one node ends the whole cell within this (both agents included)


def _matrix(assets: dict[str, Path], name: str, axes: dict) -> str:
    (assets["conf"] / "matrix" / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "axes": axes}))
    return f"matrix={name}"


def _plan(assets, tmp_path, monkeypatch, *extra: str):
    """The plan `tunewise sweep` builds here (in this process)."""
    from sweep.compose import compose
    from sweep.plan import build_plan, matrix_cells, without_auto
    from sweep.settings import settings_from

    monkeypatch.setenv("TUNEWISE_CONF", str(assets["conf"]))
    overrides = base_overrides(
        assets, tmp_path / "plan", _matrix(assets, "t_node1", {"method.r": [4]}), *extra
    )
    d = compose("config", overrides)
    settings = settings_from(d)
    base = RunConfig.from_dict(without_auto(d)[0])
    matrix, cells, notes = matrix_cells(d.get("matrix") or {}, overrides, base, settings.seeds)
    (pc,) = build_plan(settings, base, matrix["axes"], cells, overrides, notes).cells
    return settings, pc, overrides


def test_cells_larger_than_a_node_are_whole_nodes_started_where_the_launch_mode_can(
    tiny_assets, tmp_path, monkeypatch
):
    from sweep import slurm
    from sweep.devices import Layout, cell_env, layout
    from sweep.worker import needs

    for k in ("SLURM_JOB_ID", "SLURM_JOB_NUM_NODES", "SLURM_NNODES", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    # srun (the default) outside SLURM: infeasible, saying how to run it
    s, pc, overrides = _plan(tiny_assets, tmp_path, monkeypatch, "sweep.gpus_per_node=1", "gpu.count=2")
    assert pc.status == "infeasible", pc.reason
    assert pc.reason.startswith("needs 2 devices (gpu.count=2) as 2 nodes × 1 (sweep.gpus_per_node=1); ")
    assert "this sweep runs outside SLURM: run the sweep with python -m sweep.slurm" in pc.reason
    # the worker job asks SLURM for the nodes
    launch = ["--multirun", "hydra/launcher=submitit_slurm", "+worker=range(2)", "hydra.sweep.dir=x"]
    asks = ["hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=1", "hydra.launcher.gpus_per_task=1"]
    assert slurm.node_group(overrides) == (2, 1) and slurm.gpu_group(overrides) == 2
    assert slurm.with_gpu_group([*launch, *overrides]) == [*launch, *overrides, *asks]
    from submitit.slurm.slurm import _make_sbatch_string

    script = _make_sbatch_string(
        command="python -m sweep.slurm", folder=str(tmp_path), nodes=2, ntasks_per_node=1, gpus_per_task=1
    )
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
    # inside a SLURM job of 2 nodes: runs, on 1 slot of this node (the other node is the job's)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    s, pc, _ = _plan(tiny_assets, tmp_path, monkeypatch, "sweep.gpus_per_node=1", "gpu.count=2")
    assert pc.status == "run", pc.reason
    assert needs(pc, s) == 1 and layout(2, s) == Layout(2, 1, "srun")
    env = cell_env(["0"], layout(2, s))
    assert env["TUNEWISE_NODES"] == "2" and env["TUNEWISE_NODE_LAUNCHER"] == "srun"
    # a job of 1 node cannot
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    _, pc, _ = _plan(tiny_assets, tmp_path, monkeypatch, "sweep.gpus_per_node=1", "gpu.count=2")
    assert pc.status == "infeasible" and "this SLURM job has 1" in pc.reason, pc.reason
    for k in ("SLURM_JOB_ID", "SLURM_JOB_NUM_NODES"):
        monkeypatch.delenv(k)
    # local: both agents on this machine, over 2 of its slots
    s, pc, _ = _plan(tiny_assets, tmp_path, monkeypatch, *NODES)
    assert pc.status == "run", pc.reason
    assert needs(pc, s) == 2 and cell_env(["0", "1"], layout(2, s))["TUNEWISE_NODE_LAUNCHER"] == "local"
    _, pc, _ = _plan(tiny_assets, tmp_path, monkeypatch, *NODES, "sweep.devices=1")
    assert pc.status == "infeasible" and pc.reason.startswith("needs 2 devices (gpu.count=2) as 2 nodes × 1")
    # never a part of a node: 3 devices on nodes of 2
    _, pc, _ = _plan(tiny_assets, tmp_path, monkeypatch, "sweep.gpus_per_node=2", "gpu.count=3")
    assert pc.status == "infeasible" and "is not a multiple of it" in pc.reason, pc.reason
    # a cell within a node is as before
    s, pc, _ = _plan(tiny_assets, tmp_path, monkeypatch, "gpu.count=2")
    assert (
        pc.status == "run"
        and needs(pc, s) == 2
        and "TUNEWISE_NODES" not in cell_env(["0", "1"], layout(2, s))
    )
    # bad settings name the key
    with pytest.raises(ConfigError) as e:
        _plan(tiny_assets, tmp_path, monkeypatch, "sweep.node_launcher=ssh", "sweep.gpus_per_node=0")
    text = "\n".join(e.value.problems)
    assert "sweep.node_launcher" in text and "srun" in text and "sweep.gpus_per_node" in text, text
    assert dataclasses.replace(s).gpus_per_node == 8  # the default: nodes of 8 (conf/config.yaml)


def _train_losses(folder: Path) -> list[tuple[int, float]]:
    from tests.sweep.test_multigpu_sweep import _train_losses as losses

    return losses(folder)


@pytest.mark.slow
def test_a_cell_on_two_nodes_trains_as_on_one_node(tiny_assets, tmp_path, monkeypatch):
    d = tmp_path / "nodes"
    args = base_overrides(
        tiny_assets,
        d,
        _matrix(tiny_assets, "t_node1", {"method.r": [4]}),
        *NODES,
        "parallel=fsdp",
        "method.dropout=0.0",
    )
    t0 = time.time()
    out = tunewise(tiny_assets, args)
    took = time.time() - t0
    assert out.returncode == 0, out.stderr[-3000:]
    (rec,) = load_records(d).values()
    assert rec["status"] == "complete", rec["reason"]
    m, cell = rec["measured"], d / "cells" / rec["cell_id"]
    assert m["world_size"] == 2 and [r["rank"] for r in m["ranks"]] == [0, 1] and m["devices"] == ["0", "1"]
    # two agents, one per "node", each over its own slot
    reports = [json.loads((cell / "ranks" / f"node-{k}.json").read_text()) for k in (0, 1)]
    assert len({r["pid"] for r in reports}) == 2 and [r["devices"] for r in reports] == [["0"], ["1"]]
    assert all(not r["failures"] and r["error"] is None for r in reports), reports
    # the same cell on one node × 2 processes (no node layout in the environment)
    monkeypatch.delenv("TUNEWISE_NODES", raising=False)
    cfg = RunConfig.from_dict(rec["config"])
    t1 = time.time()
    one = run_cell(cfg, tmp_path / "one", resume=False)
    took1 = time.time() - t1
    assert one.status == "complete" and one.measured is not None, one.reason
    m1 = one.measured.to_dict()
    assert m["steps"] == m1["steps"] and m["train_tokens"] == m1["train_tokens"]
    assert [e[0] for e in m["eval_curve"]] == [e[0] for e in m1["eval_curve"]]
    diffs = [abs(a[2] - b[2]) for a, b in zip(m["eval_curve"], m1["eval_curve"], strict=True)]
    steps2, steps1 = _train_losses(cell), _train_losses(tmp_path / "one")
    assert [s for s, _ in steps2] == [s for s, _ in steps1] and len(steps1) == m["steps"]
    diffs += [abs(a - b) for (_, a), (_, b) in zip(steps2, steps1, strict=True)]
    print(
        f"2 nodes × 1 vs 1 node × 2: largest loss difference {max(diffs):.2e} over {len(diffs)} values; "
        f"sweep {took:.1f} s, 1-node cell {took1:.1f} s"
    )
    assert max(diffs) <= LOSS_TOL


def _procs(cell_dir: Path, module: str) -> list[int]:
    """Pids of this cell's processes running `python -m <module>` (from /proc)."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            cmd = (p / "cmdline").read_bytes() if p.name.isdigit() else b""
        except OSError:
            continue
        if module.encode() in cmd and str(cell_dir).encode() in cmd:
            found.append(int(p.name))
    return found


@pytest.mark.slow
def test_a_rank_killed_on_one_node_ends_the_whole_cell_and_the_rerun_resumes(
    tiny_assets, tmp_path, monkeypatch
):
    from tests.sweep.test_multigpu_faults import RESUMABLE, _ranks, _step, _wait

    d = tmp_path / "kill"
    matrix = _matrix(tiny_assets, "t_node_kill", {"method.r": [8]})
    args = base_overrides(
        tiny_assets,
        d,
        matrix,
        *NODES,
        *RESUMABLE,
    )
    cmd = [sys.executable, "-m", "sweep.cli", "sweep", *args]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env_for(tiny_assets), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait(lambda: (d / "plan.json").exists(), "the plan", proc=proc)
    (cell_id,) = [c["cell_id"] for c in json.loads((d / "plan.json").read_text())["cells"]]
    cell = d / "cells" / cell_id
    # kill -9 rank 1 once a sharded checkpoint is in force
    _wait(
        lambda: (cell / "checkpoint" / "sharded.json").exists() and _step(cell, 1) >= 6,
        "a sharded checkpoint of the 2-node cell",
        proc=proc,
    )
    ranks = _ranks(cell)
    assert sorted(ranks) == [0, 1] and len(_procs(cell, "runners.parallel.agent")) == 2, ranks
    os.kill(ranks[1], signal.SIGKILL)
    t_kill = time.time()
    _wait(lambda: not _ranks(cell) and not _procs(cell, "runners.parallel.agent"), "the cell to end", BOUND_S)
    ended = time.time() - t_kill
    _, err = proc.communicate(timeout=300)
    rec = load_records(d)[cell_id]
    print(f"both nodes ended {ended:.1f} s after kill -9; reason: {rec['reason']}")
    assert rec["status"] == "failed" and rec["reason"].startswith("runner killed by SIGKILL"), rec["reason"]
    assert re.search(r"\(rank 1 of 2 on node [01] of 2 \([^)]+\); rank 0 stopped with it\)$", rec["reason"])
    assert rec["attempts"][-1]["cause"] == "signal" and rec["measured"]["world_size"] == 2

    # the same command again: both nodes resume from the sharded checkpoint
    out = subprocess.run(cmd, cwd=ROOT, env=env_for(tiny_assets), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = load_records(d)[cell_id]
    assert rec["status"] == "complete", rec["reason"]
    assert [a["status"] for a in rec["attempts"]] == ["failed", "complete"]
    m = rec["measured"]
    resumed = m["resumed_from_step"]
    assert resumed > 0 and resumed % 5 == 0 and m["world_size"] == 2
    # the same cell uninterrupted on 1 node × 2 processes: the same losses after the resume
    monkeypatch.delenv("TUNEWISE_NODES", raising=False)
    ref = run_cell(RunConfig.from_dict(rec["config"]), tmp_path / "uninterrupted", resume=False)
    assert ref.status == "complete" and ref.measured is not None, ref.reason
    m1 = ref.measured.to_dict()
    assert m["steps"] == m1["steps"] and [e[0] for e in m["eval_curve"]] == [e[0] for e in m1["eval_curve"]]
    diff = max(abs(a[2] - b[2]) for a, b in zip(m["eval_curve"], m1["eval_curve"], strict=True))
    print(
        f"resumed from step {resumed}: final eval loss {m['eval_loss']} vs {m1['eval_loss']} (max diff {diff:.2e})"
    )
    assert diff <= LOSS_TOL


@pytest.mark.slow
def test_a_node_that_never_joins_is_named(tmp_path, monkeypatch):
    from datetime import timedelta

    from torch.distributed import TCPStore

    from runners.parallel import nodes
    from runners.parallel.launch import combine
    from runners.result import Progress

    monkeypatch.setenv("TUNEWISE_JOIN_TIMEOUT_S", "5")
    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=60))
    endpoint = f"127.0.0.1:{store.port}"
    agent = [sys.executable, "-m", "runners.parallel.agent", str(tmp_path), "--nodes=2", "--nproc-per-node=1"]
    (tmp_path / "noop.py").write_text("")
    agent += [f"--endpoint={endpoint}", "--id=never", "--node=0", "--", str(tmp_path / "noop.py")]
    t0 = time.time()
    out = subprocess.run(agent, cwd=ROOT, capture_output=True, text=True, timeout=120)
    took = time.time() - t0
    assert out.returncode == 1, out.stderr[-3000:]
    run = nodes.NodesRun(2)
    nodes._read_reports(run, tmp_path, endpoint)
    result = combine(tmp_path, 2, run.failures, Progress(), run)
    print(f"node 0 gave up after {took:.1f} s: {result.reason}")
    assert result.status == "failed" and result.reason is not None
    assert (
        f"node 1 of 2 left no report in {tmp_path / 'ranks'}: its agent never ran, or the nodes do not share"
        in result.reason
    )
    assert "node 0 of 2 (" in result.reason and "RendezvousTimeoutError" in result.reason
    assert f"did not all join the rendezvous at {endpoint} within 5 s" in result.reason
    assert took < 60


def test_the_baseline_of_a_multi_node_sweep_is_evaluated_on_one_node(tiny_assets, tmp_path, monkeypatch):
    """The untrained base is an eval (no gradients, no optimizer state), run where the worker runs: a
    base config spanning nodes is measured on one node's devices, never launched across nodes."""
    from types import SimpleNamespace

    from sweep.baseline import baseline_config

    settings, pc, _ = _plan(tiny_assets, tmp_path, monkeypatch, *NODES)
    assert pc.cfg is not None and pc.cfg.gpu.count == 2 and settings.gpus_per_node == 1
    plan = SimpleNamespace(base_cfg=pc.cfg, settings=settings)
    assert baseline_config(plan).gpu.count == 1  # type: ignore[arg-type]
    one_node = dataclasses.replace(settings, gpus_per_node=2)
    assert baseline_config(SimpleNamespace(base_cfg=pc.cfg, settings=one_node)) is pc.cfg  # type: ignore[arg-type]

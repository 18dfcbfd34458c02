"""LR trials and seeds inside cells, and SLURM-style workers through hydra-submitit-launcher (local)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import reports
from sweep.study import LR_RANGES
from tests.sweep.conftest import ROOT, base_overrides, env_for, load_records, tunewise


@pytest.mark.slow
def test_lr_trials_and_seeds_keep_each_cells_best_attempt(tiny_assets, tmp_path):
    d = tmp_path / "lr"
    args = base_overrides(
        tiny_assets, d, "matrix=single", "sweep.seeds=2", "sweep.lr_trials=2", "sweep.pruner=none"
    )
    out = tunewise(tiny_assets, args)
    assert out.returncode == 0, out.stderr[-3000:]
    recs = load_records(d)
    assert sorted(r["coords"]["seed"] for r in recs.values()) == [0, 1]
    lo, hi = LR_RANGES["lora"]
    for r in recs.values():
        seed = r["coords"]["seed"]
        assert (
            r["coords"] == {"seed": seed}
            and r["overrides"] == [f"seed={seed}"]
            and r["config"]["seed"] == seed
        )
        lrs = [a["lr"] for a in r["attempts"]]
        assert len(lrs) == 2 and len(set(lrs)) == 2 and all(lo <= x <= hi for x in lrs)
        best = min(r["lr_results"], key=lambda x: x["eval_loss"])
        assert r["lr"] == best["lr"] and r["measured"]["eval_loss"] == best["eval_loss"]
        assert r["spent"]["cpu_s"] == pytest.approx(sum(a["cpu_s"] for a in r["attempts"]))
    assert len({p.name for p in (d / "cells").iterdir()}) == 3  # two cells + the baseline
    frame = reports.results(d)  # one row per attempt: 2 cells × 2 learning rates
    assert len(frame) == 4 and sorted(frame["attempt.lr_index"]) == [0, 0, 1, 1]
    cpu = frame.groupby("cell_id")["attempt.cpu_s"].sum()
    assert all(cpu[c] == pytest.approx(r["spent"]["cpu_s"]) for c, r in recs.items())
    assert sorted(frame.drop_duplicates("cell_id")["seed"]) == [0, 1]


@pytest.mark.slow
def test_submitit_local_workers_share_one_sweep(tiny_assets, tmp_path):
    d = tmp_path / "slurm"
    cmd = [
        sys.executable,
        "-m",
        "sweep.slurm",
        "--multirun",
        "hydra/launcher=submitit_local",
        "+worker=0,1",
        f"hydra.sweep.dir={tmp_path / 'hydra'}",
        *base_overrides(tiny_assets, d, "matrix=t_small"),
        "tracking=none",  # handed to the runners as `tunewise sweep` hands it (before: ignored)
    ]
    out = subprocess.run(cmd, cwd=ROOT, env=env_for(tiny_assets), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    recs = load_records(d)
    assert len(recs) == 2 and all(r["status"] in ("complete", "pruned") for r in recs.values())
    assert all(len(r["attempts"]) == 1 for r in recs.values())  # each cell ran once across both jobs
    assert (d / "trials" / "baseline.json").exists() and (d / "results.csv").exists()
    assert not list((d / "cells").rglob("events.out.tfevents.*"))  # tracking=none reached the runners


def test_a_slurm_worker_job_asks_for_the_largest_cells_gpu_group(tiny_assets, tmp_path, monkeypatch):
    from submitit.slurm.slurm import _make_sbatch_string

    from sweep import slurm

    monkeypatch.setenv("TUNEWISE_CONF", str(tiny_assets["conf"]))
    launch = ["--multirun", "hydra/launcher=submitit_slurm", "+worker=range(4)", "hydra.sweep.dir=x"]
    two = base_overrides(tiny_assets, tmp_path / "s", "matrix=t_slots")  # cells of 2 and 1 devices
    assert slurm.gpu_group(two) == 2
    assert slurm.gpu_group(base_overrides(tiny_assets, tmp_path / "s", "matrix=t_small")) == 1
    argv = slurm.with_gpu_group([*launch, *two])
    assert argv == [*launch, *two, "hydra.launcher.gpus_per_task=2"]
    # what hydra-submitit-launcher hands submitit for it: the job script asks SLURM for the group
    script = _make_sbatch_string(command="python -m sweep.slurm", folder=str(tmp_path), gpus_per_task=2)
    assert "#SBATCH --gpus-per-task=2" in script
    # the user's own request stands; the local launcher asks for nothing
    given = [*launch, "hydra.launcher.gres=gpu:8", *two]
    assert slurm.with_gpu_group(given) == given
    local = ["--multirun", "hydra/launcher=submitit_local", *two]
    assert slurm.with_gpu_group(local) == local


def test_gpu_count_auto_on_the_command_line_plans_each_cells_node_shape(tiny_assets, tmp_path):
    # before: "gpu.count='auto': must be an integer" (the sweep built its base config with it)
    args = base_overrides(
        tiny_assets, tmp_path / "auto", "matrix=t_small", "gpu.count=auto", "sweep.dry_run=true"
    )
    out = tunewise(tiny_assets, args)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if re.match(r"[0-9a-f]{10}  run ", line)]
    assert len(rows) == 2, out.stdout  # the tiny model fits one device: gpu.count 1, no parallelism shown
    assert "gpus" in out.stdout.splitlines()[0]

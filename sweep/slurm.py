"""Sweep workers as SLURM jobs through hydra-submitit-launcher (optional extra: `pip install tunewise[slurm]`).

Every job is one `tunewise sweep` worker on a shared `sweep.storage` and a shared `sweep.dir`: each job
plans the same matrix, claims cells atomically through the storage (sweep.claims) and runs them on the
GPUs SLURM gave it (`sweep.devices` null: CUDA_VISIBLE_DEVICES, the job's allocation). A job asks for
its GPU group: with `hydra/launcher=submitit_slurm` and none of `hydra.launcher.gpus_per_task`,
`gpus_per_node` or `gres` given, `python -m sweep.slurm` plans the matrix first and adds
`hydra.launcher.gpus_per_task=N` (`#SBATCH --gpus-per-task=N`), N = the largest `gpu.count` of a cell
the plan runs (`gpu.count=auto` sized as the plan sizes it), and says so; a job given fewer GPUs leaves
the cells that need more to a job that has them. A cell larger than a node (`gpu.count` >
`sweep.gpus_per_node` = P) takes K = gpu.count / P whole nodes: the job then asks for
`hydra.launcher.nodes=K tasks_per_node=1 gpus_per_task=P`; its first task is the worker (the others
return at once) and starts the cell's agents on all K nodes with `srun --overlap` (runners.parallel.nodes).
The sweep folder, the repository and its environment must be on a file system every node sees. Like `tunewise sweep`, each job hands `offline` and
`tracking` to its runners. Submit N workers with a multirun over `+worker`:

    python -m sweep.slurm --multirun hydra/launcher=submitit_slurm +worker='range(8)' \\
        hydra.launcher.timeout_min=720 hydra.launcher.partition=gpu \\
        hydra.sweep.dir=outputs/slurm/my-sweep \\
        matrix=method_rank_size model=llama-3.2-1b model.path=/models/llama-3.2-1b gpu=a100-80gb \\
        data.path=/data/train.jsonl sweep.dir=/shared/sweeps/llama1b \\
        sweep.storage=postgresql://tunewise:PASSWORD@dbhost/tunewise

Try it on one machine with the local launcher (what the slow test runs):

    python -m sweep.slurm --multirun hydra/launcher=submitit_local +worker=0,1 \\
        hydra.sweep.dir=outputs/slurm/demo sweep.dir=outputs/sweeps/demo-slurm

SQLite storage works for workers on one machine; across nodes use PostgreSQL (or another server
database): SQLite on a network file system does not lock reliably. Rerunning the same command resumes
the sweep (finished cells never rerun; a dead worker's cell is retried once). When all jobs are done,
`tunewise report SWEEP_DIR` rebuilds the report (each job also writes it when it finishes).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from advisor.config import catalog
from advisor.config.schema import RunConfig
from advisor.errors import ConfigError, Problems
from sweep import tracking
from sweep.commands import _offline as configure_offline  # `offline`, checked as `tunewise sweep` checks it

GPU_KEYS = (
    "hydra.launcher.gpus_per_task=",
    "hydra.launcher.gpus_per_node=",
    "hydra.launcher.gres=",
    "hydra.launcher.nodes=",
)


def gpu_group(overrides: list[str]) -> int:
    """The GPUs one worker job needs: the largest `gpu.count` of a cell the plan runs (1 when none)."""
    return _largest(overrides)[0]


def node_group(overrides: list[str]) -> tuple[int, int]:
    """(nodes, GPUs per node) one worker job needs: a cell larger than `sweep.gpus_per_node` = P takes
    gpu.count / P nodes of P; else one node of the largest gpu.count."""
    n, per = _largest(overrides)
    return (n // per, per) if n > per else (1, n)


def _largest(overrides: list[str]) -> tuple[int, int]:
    """(the largest gpu.count of a cell the plan runs, sweep.gpus_per_node)."""
    from sweep.compose import compose
    from sweep.plan import build_plan, matrix_cells, without_auto
    from sweep.settings import settings_from

    d = compose("config", overrides)
    settings = dataclasses.replace(settings_from(d), devices=None, workers=1, node_launcher="srun")
    base = RunConfig.from_dict(without_auto(d)[0])
    matrix, cells, notes = matrix_cells(d.get("matrix") or {}, overrides, base, settings.seeds)
    plan = build_plan(settings, base, matrix["axes"], cells, overrides, notes)
    # the submitting machine's own devices and nodes do not matter: a cell infeasible only for them counts
    runs = [pc for pc in plan.cells if pc.status == "run" or (pc.reason or "").startswith("needs ")]
    return max((pc.cfg.gpu.count for pc in runs if pc.cfg is not None), default=1), settings.gpus_per_node


def with_gpu_group(argv: list[str]) -> list[str]:
    """argv plus `hydra.launcher.gpus_per_task=N` (and `nodes=K tasks_per_node=1` for cells spanning
    nodes) for SLURM jobs that were given no GPU request."""
    if "hydra/launcher=submitit_slurm" not in argv or any(a.startswith(GPU_KEYS) for a in argv):
        return argv
    overrides = [a for a in argv if not a.startswith(("-", "hydra", "+worker="))]
    nodes, n = node_group(overrides)
    if nodes == 1:
        print(
            f"tunewise: each worker job asks for {n} GPU(s): hydra.launcher.gpus_per_task={n} "
            "(the largest gpu.count of the planned cells)",
            file=sys.stderr,
        )
        return [*argv, f"hydra.launcher.gpus_per_task={n}"]
    asks = [
        f"hydra.launcher.nodes={nodes}",
        "hydra.launcher.tasks_per_node=1",
        f"hydra.launcher.gpus_per_task={n}",
    ]
    print(
        f"tunewise: each worker job asks for {nodes} nodes × {n} GPU(s): {' '.join(asks)} (the largest "
        f"gpu.count of the planned cells, {nodes * n}, spans {nodes} nodes of sweep.gpus_per_node={n}; "
        "the worker runs on the first node and starts one torch.distributed.run agent per node with srun)",
        file=sys.stderr,
    )
    return [*argv, *asks]


def follower() -> bool:
    """A task of a multi-node worker job other than the first: the job's first task is the worker, and
    starts this node's agents itself (srun, runners.parallel.nodes) when a cell spans the nodes."""
    return int(os.environ.get("SLURM_PROCID") or 0) > 0


@hydra.main(config_path=str(catalog.conf_dir()), config_name="config", version_base="1.3")
def worker_job(cfg: DictConfig) -> int:
    from sweep.run import run_sweep

    if follower():
        return 0
    d: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    d.pop("worker", None)
    d["sweep"] = {**d.get("sweep", {}), "yes": True, "workers": 1}
    overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+").startswith("worker=")]
    try:
        p = Problems()  # as `tunewise sweep` does: the runners inherit offline and tracking
        configure_offline(d, p)
        tracking.configure(d, p)
        p.raise_if_any()
        return run_sweep(d, overrides)
    except ConfigError as e:
        print("tunewise: bad input:\n" + "\n".join(f"  - {p}" for p in e.problems), file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.argv[1:] = with_gpu_group(sys.argv[1:])
    except ConfigError as e:
        print("tunewise: bad input:\n" + "\n".join(f"  - {p}" for p in e.problems), file=sys.stderr)
        sys.exit(2)
    worker_job()

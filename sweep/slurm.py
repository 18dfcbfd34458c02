"""Sweep workers as SLURM jobs through hydra-submitit-launcher (optional extra: `pip install tunewise[slurm]`).

Every job is one `tunewise sweep` worker on a shared `sweep.storage` and a shared `sweep.dir`: each job
plans the same matrix, claims cells atomically through the storage (sweep.claims) and runs them one at
a time on its GPU. Submit N workers with a multirun over `+worker`:

    python -m sweep.slurm --multirun hydra/launcher=submitit_slurm +worker='range(8)' \\
        hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=720 hydra.launcher.partition=gpu \\
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

import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from advisor.config import catalog
from advisor.errors import ConfigError


@hydra.main(config_path=str(catalog.conf_dir()), config_name="config", version_base="1.3")
def worker_job(cfg: DictConfig) -> int:
    from sweep.run import run_sweep

    d: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    d.pop("worker", None)
    d["sweep"] = {**d.get("sweep", {}), "yes": True, "workers": 1}
    overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+").startswith("worker=")]
    try:
        return run_sweep(d, overrides)
    except ConfigError as e:
        print("tunewise: bad input:\n" + "\n".join(f"  - {p}" for p in e.problems), file=sys.stderr)
        return 2


if __name__ == "__main__":
    worker_job()

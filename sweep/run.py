"""`tunewise sweep`: plan, confirm, run the workers, write results.csv and the report.

Thin on purpose; the pieces live in advisor.trials (cells and records), plan (the matrix as run,
prices and skips), claims (who runs what), worker/attempts (running cells) and progress (the view).

Scale-out:
- `sweep.workers=N` starts N local worker processes (`python -m sweep.worker SWEEP_DIR`) on the same
  storage, one GPU each via CUDA_VISIBLE_DEVICES when `nvidia-smi` lists CUDA GPUs.
- The same `tunewise sweep …` started on several machines with one `sweep.storage` (e.g.
  postgresql://user:pw@db/tunewise) and a shared sweep.dir attaches to the same study: each machine
  plans identically and claims cells atomically through the storage.
- SLURM: see sweep/slurm.py (hydra-submitit-launcher, optional extra `slurm`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from advisor.config.schema import RunConfig
from advisor.errors import ConfigError
from advisor.trials.store import BASELINE, read_json, read_records, write_json
from sweep.baseline import measure_baseline
from sweep.cellrun import _die_with_parent
from sweep.claims import Claims
from sweep.plan import build_plan, format_plan, matrix_cells
from sweep.planfile import STORAGE_ENV, write_plan
from sweep.progress import View
from sweep.provenance import sweep_doc
from sweep.records import write_results_csv
from sweep.settings import settings_from
from sweep.skipped import reopen_over_budget, skip_planned
from sweep.study import make_pruner, open_study
from sweep.worker import Worker

log = logging.getLogger("tunewise.sweep")


def _ensure_demo_assets(cfg: RunConfig) -> None:
    """Build (or refresh, when stale) the demo base model / demo data when the config points at them."""

    def demo(p: str | None) -> str | None:
        return p if p and Path(p).as_posix().startswith("outputs/demo") else None

    model_path, data_path = demo(cfg.model.path), demo(cfg.data.path)
    if model_path or data_path:
        from runners.demo.assets import ensure_assets

        ensure_assets(model_path, data_path)


def _ensure_cpu_throughput(cfg: RunConfig) -> None:
    """gpu=cpu: the advisor's throughput prior is this CPU's measured matmul rate, measured on first use
    (a few seconds) and cached in outputs/cpu-throughput.json."""
    if not cfg.gpu.is_cpu:
        return
    from advisor.config import catalog
    from advisor.estimator import timing
    from runners.cpu_probe import ensure_cpu_throughput

    ensure_cpu_throughput(catalog.repo_root() / "outputs" / "cpu-throughput.json")
    timing.cpu_probe.cache_clear()


def _confirm(n_run: int) -> bool:
    if not sys.stdin.isatty():
        return True
    answer = input(f"Run {n_run} cell(s)? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _cuda_gpus() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _spawn_workers(sweep_dir: Path, n: int, storage: str) -> list[subprocess.Popen]:
    gpus = _cuda_gpus()
    procs = []
    (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        env = {**os.environ, STORAGE_ENV: storage}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        err = open(sweep_dir / "logs" / f"worker-{i}.log", "a") if sys.stderr.isatty() else None  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "sweep.worker", str(sweep_dir)],
                env=env,
                stderr=err,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        )
    return procs


def _finish(sweep_dir: Path) -> None:
    path = write_results_csv(sweep_dir)
    print(f"results: {path}")
    try:
        from reports.build import build_report
    except ImportError as e:  # pragma: no cover - reports package incomplete
        log.warning("no report built (%s)", e)
        return
    for p in build_report(sweep_dir):
        print(f"report: {p}")


def run_sweep(cfg_dict: dict[str, Any], overrides: list[str]) -> int:
    settings = settings_from(cfg_dict)
    base = RunConfig.from_dict(cfg_dict)
    _ensure_demo_assets(base)  # before the matrix: the rows cap reads the data file
    matrix, cells, notes = matrix_cells(cfg_dict.get("matrix") or {}, overrides, base, settings.seeds)
    if not cells:
        raise ConfigError(f"matrix={settings.matrix_name!r}: every cell is excluded")
    _ensure_cpu_throughput(base)
    plan = build_plan(settings, base, matrix["axes"], cells, overrides, notes)
    print(format_plan(plan))
    print(f"sweep.dir: {settings.dir}")
    if settings.dry_run:
        return 0
    if not plan.runnable():
        log.warning("no cell can run: every cell is infeasible, over budget or misconfigured")
    if not settings.yes and not _confirm(len(plan.runnable())):
        print("not started (answer y, or pass sweep.yes=true)")
        return 1
    settings.dir.mkdir(parents=True, exist_ok=True)
    old = read_json(settings.dir / "sweep.json")
    created = old.get("created") if isinstance(old, dict) else None
    write_json(settings.dir / "sweep.json", sweep_doc(settings, matrix, notes, overrides, base, created))
    write_plan(plan)  # for worker processes; this process runs `plan` as it is
    claims = Claims(settings.storage, settings.study_name)
    claims.ensure([pc.cell_id for pc in plan.cells] + [BASELINE])
    study = open_study(settings.storage, settings.study_name, make_pruner(settings.pruner, len(plan.cells)))
    reopen_over_budget(plan, claims)
    skip_planned(plan, claims, study)
    t0 = time.time()
    with View(plan):
        measure_baseline(plan, claims)
        if settings.workers == 1:
            Worker(plan).run()
        else:
            procs = _spawn_workers(settings.dir, settings.workers, settings.storage)
            codes = [p.wait() for p in procs]
            if any(codes):
                log.warning("worker exit codes: %s", codes)
    claims.dispose()
    _finish(settings.dir)
    counts: dict[str, int] = {}
    for rec in read_records(settings.dir)[0]:
        counts[rec.status] = counts.get(rec.status, 0) + 1
    print(
        f"sweep done in {time.time() - t0:.0f} s: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    )
    return 0

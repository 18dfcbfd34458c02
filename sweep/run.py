"""`tunewise sweep`: plan, confirm, run the workers, write results.csv and the report.

Thin on purpose; the pieces live in advisor.trials (cells and records), plan (the matrix as run,
prices and skips), claims (who runs what), worker/attempts (running cells) and progress (the view).

Scale-out:
- `sweep.workers=N` starts N local worker processes (`python -m sweep.worker SWEEP_DIR`) on the same
  storage, one GPU each via CUDA_VISIBLE_DEVICES when `nvidia-smi` lists CUDA GPUs; without GPUs, each
  gets its share of the CPU cores as OMP_NUM_THREADS (unless set): N cells at 2 threads each on 2 cores
  spin in torch's OpenMP barriers (measured: a demo cell 4x slower than at 1 thread under that load).
- The same `tunewise sweep …` started on several machines with one `sweep.storage` (e.g.
  postgresql://user:pw@db/tunewise) and a shared sweep.dir attaches to the same study: each machine
  plans identically and claims cells atomically through the storage.
- SLURM: see sweep/slurm.py (hydra-submitit-launcher, optional extra `slurm`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from advisor.config.schema import RunConfig
from advisor.errors import ConfigError
from advisor.trials.store import BASELINE, read_json, read_records, write_json
from sweep import integrity
from sweep.baseline import measure_baseline
from sweep.cellrun import _die_with_parent
from sweep.claims import Claims
from sweep.plan import Plan, build_plan, format_plan, matrix_cells, without_auto
from sweep.planfile import STORAGE_ENV, write_plan
from sweep.progress import View
from sweep.provenance import reproduce_overrides, sweep_doc
from sweep.records import write_results_csv
from sweep.retry import RESULTS
from sweep.settings import SweepSettings, settings_from
from sweep.skipped import skip_planned
from sweep.study import make_pruner, open_study, storage_error
from sweep.worker import Worker

log = logging.getLogger("tunewise.sweep")


def _ensure_demo_assets(cfg: RunConfig) -> None:
    """Build (or refresh, when stale) the demo base model / demo data when the config points at them.
    The base's pretraining uses every core: its steps are large matmuls (at one thread on 2 cores the
    build took 202 s against 46–57 s at two, measured); the CPU probe measures after it, alone."""

    def demo(p: str | None) -> str | None:
        return p if p and Path(p).as_posix().startswith("outputs/demo") else None

    model_path, data_path = demo(cfg.model.path), demo(cfg.data.path)
    if model_path or data_path:
        from runners.demo.assets import ensure_assets

        ensure_assets(model_path, data_path)


def cell_threads(workers: int) -> int:
    """CPU threads each cell of a CPU sweep runs with: the worker's share of the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _threads(workers: int) -> int:
    return int(os.environ.get("OMP_NUM_THREADS") or 0) or cell_threads(workers)


def _probe_path() -> Path:
    from advisor.config import catalog

    return catalog.repo_root() / "outputs" / "cpu-throughput.json"


def _probe_is_current(workers: int) -> bool:
    """Whether the cached CPU probe is this probe's and measured with the threads cells run with."""
    import json

    from runners.cpu_probe import current

    try:
        cached = json.loads(_probe_path().read_text())
    except (OSError, ValueError):
        return False
    return current(cached) and cached.get("torch_threads") == _threads(workers)


def _ensure_cpu_throughput(cfg: RunConfig, workers: int) -> None:
    """gpu=cpu: the advisor's throughput prior is this CPU's measured matmul rate, measured on first use
    (a few seconds) and cached in outputs/cpu-throughput.json — with the threads each cell will run
    with (`cell_threads`), measured again when the cached probe used another count."""
    if not cfg.gpu.is_cpu:
        return
    from advisor.estimator import timing
    from runners.cpu_probe import ensure_cpu_throughput

    if not _probe_is_current(workers):  # measured in a process of its own, at the cells' thread count
        env = {**os.environ, "OMP_NUM_THREADS": str(_threads(workers))}
        cmd = [sys.executable, "-m", "runners.cpu_probe", str(_probe_path()), "--force"]
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False)
    ensure_cpu_throughput(_probe_path())  # measured here only when that process could not
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
        elif "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(cell_threads(n))
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


def _finish(sweep_dir: Path) -> tuple[list[str], str]:
    """results.csv and the report; the record files that could be neither read nor rebuilt, and the
    answer the terminal ends with (the recommendation's sentences, the report's path)."""
    path = write_results_csv(sweep_dir)
    print(f"results: {path}")
    from reports.build import write_report

    paths, recommendation = write_report(sweep_dir)
    for p in paths:
        print(f"report: {p}")
    problems = read_records(sweep_dir)[1]
    for u in problems:
        log.warning("left out of the report: %s", u)
    answer = f"\nRecommendation: {recommendation}\nThe full report: {paths[0]} (and {paths[1].name})"
    return problems, answer


def _check_folder(d: Path) -> None:
    """sweep.dir as a folder this process can create and write, or ConfigError saying why not."""
    if d.exists() and not d.is_dir():
        raise ConfigError(f"sweep.dir={str(d)!r}: is a file, not a folder (allowed: a folder path)")
    probe = d
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"sweep.dir={str(d)!r}: {probe} is a file, so no folder can be made under it")
    try:  # a folder made and removed at once: permissions, read-only and special file systems alike
        os.rmdir(tempfile.mkdtemp(prefix=".tunewise-", dir=probe))
    except OSError as e:
        raise ConfigError(
            f"sweep.dir={str(d)!r}: {probe} is not writable ({e.strerror}; choose another sweep.dir)"
        ) from None


def _no_runnable_config(plan: Plan) -> ConfigError | None:
    """Every cell's config fails to build (bad input in every cell): one error listing the reasons."""
    if not plan.cells or any(pc.status != "failed" for pc in plan.cells):
        return None
    reasons = list(dict.fromkeys((pc.reason or "").removeprefix("bad config: ") for pc in plan.cells))
    return ConfigError([f"no cell of the sweep can run: {r}" for r in reasons])


def _open_storage(settings: SweepSettings, plan: Plan) -> tuple[Claims, Any]:
    """The claims table and the Optuna study on sweep.storage, or a ConfigError naming the storage."""
    try:  # the study first: it tells a storage that cannot work from a first-run race at once
        study = open_study(
            settings.storage, settings.study_name, make_pruner(settings.pruner, len(plan.cells))
        )
        claims = Claims(settings.storage, settings.study_name)
        claims.ensure([pc.cell_id for pc in plan.cells] + [BASELINE])
    except ConfigError:
        raise
    except Exception as e:  # SQLAlchemy / DBAPI / Optuna errors: a bad, unreachable or corrupt storage
        raise storage_error(settings.storage, e) from None
    return claims, study


def _interruptible() -> None:
    """SIGTERM (a scheduler, `kill`) stops the sweep like Ctrl-C: running cells go back to pending."""

    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def _study_generation(settings: SweepSettings, old: Any, replacing: bool) -> SweepSettings:
    """The Optuna study (and claims) this run uses: the one sweep.json names when it is this folder's
    (`<name>` or `<name>-gN`); with sweep.rerun=changed replacing cells, the next generation, so the
    pruner never weighs a new run against the replaced measurements (finished cells carry over: their
    claims follow their records, sweep.integrity.sync)."""
    name = settings.study_name
    recorded = old.get("study_name") if isinstance(old, dict) else None
    m = re.fullmatch(re.escape(name) + r"(?:-g(\d+))?", recorded) if isinstance(recorded, str) else None
    generation = int(m.group(1) or 1) if m else 1
    if replacing:
        generation += 1
    return dataclasses.replace(settings, study_name=name if generation == 1 else f"{name}-g{generation}")


def _run_workers(plan: Plan, claims: Claims) -> None:
    settings = plan.settings
    measure_baseline(plan, claims)
    if settings.workers == 1:
        Worker(plan).run()
    else:
        procs = _spawn_workers(settings.dir, settings.workers, settings.storage)
        try:
            codes = [p.wait() for p in procs]
        except KeyboardInterrupt:  # they got the Ctrl-C too: let them give their cells back
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=30)
            raise
        if any(codes):
            log.warning("worker exit codes: %s", codes)
    measure_baseline(plan, claims)  # missing still (its owner died meanwhile): measured now


def run_sweep(cfg_dict: dict[str, Any], overrides: list[str]) -> int:
    """Plan, check the folder, run; 0 when a cell has a result, 1 when none could run, 2 (ConfigError)
    for bad input."""
    settings = settings_from(cfg_dict)
    base = RunConfig.from_dict(without_auto(cfg_dict)[0])  # gpu.count=auto: each cell's plan sizes it
    _check_folder(settings.dir)
    _ensure_demo_assets(base)  # before the matrix: the rows cap reads the data file
    matrix, cells, notes = matrix_cells(cfg_dict.get("matrix") or {}, overrides, base, settings.seeds)
    if not cells:
        raise ConfigError(f"matrix={settings.matrix_name!r}: every cell is excluded")
    _ensure_cpu_throughput(base, settings.workers)
    plan = build_plan(settings, base, matrix["axes"], cells, overrides, notes)
    print(format_plan(plan))
    print(f"sweep.dir: {settings.dir}")
    bad = _no_runnable_config(plan)
    if bad is not None:
        raise bad
    changed = integrity.check(plan)  # refuses a rerun that would relabel measurements (sweep.rerun)
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
    settings = plan.settings = _study_generation(settings, old, bool(changed))
    claims, study = _open_storage(settings, plan)
    t0 = time.time()
    try:
        integrity.replace(plan, claims, changed)
        doc = sweep_doc(
            settings, matrix, notes, overrides, base, created, reproduce_overrides(cfg_dict, overrides)
        )
        write_json(settings.dir / "sweep.json", doc)
        write_plan(plan)  # for worker processes; this process runs `plan` as it is
        integrity.sync(plan, claims)
        integrity.reopen(plan, claims)  # over budget / infeasible cells the plan runs now, retried failures
        skip_planned(plan, claims, study)
        _interruptible()
        with View(plan):
            _run_workers(plan, claims)
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as e:
        raise storage_error(settings.storage, e) from None  # a full disk says so, not "exceeding max length"
    finally:
        claims.dispose()
    problems, answer = _finish(settings.dir)
    counts: dict[str, int] = {}
    ids = {pc.cell_id for pc in plan.cells}
    for rec in read_records(settings.dir)[0]:
        if rec.cell_id in ids:
            counts[rec.status] = counts.get(rec.status, 0) + 1
    print(
        f"sweep done in {time.time() - t0:.0f} s: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    )
    if not any(counts.get(s, 0) for s in RESULTS):
        print(
            "tunewise: no cell could run (every cell failed, was infeasible or over budget: see the reasons above "
            f"and in {settings.dir / 'report.md'})",
            file=sys.stderr,
        )
        return 1
    print(answer)
    return 1 if problems else 0

"""The `sweep:` section of the config as a frozen dataclass, validated with every problem at once.

Defaults are conf/config.yaml's `sweep:` section (read here, written nowhere else). `settings_from`
also refuses a sweep that would run a real model on the demo task's data (no `data.path` given).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from advisor.config import catalog, fieldtypes
from advisor.errors import Problems
from runners.parallel.files import NODE_LAUNCHERS
from runners.protocol import HEARTBEAT_S
from sweep.study import PRUNERS

# a stall window must span a few of the runner's heartbeats (its progress reports): 3 × 5 s
MIN_STALL_MINUTES = 3 * HEARTBEAT_S / 60

_S: dict[str, Any] = catalog.defaults("sweep")


@dataclass(frozen=True)
class SweepSettings:
    """The `sweep:` section; conf/config.yaml documents each key and holds every default."""

    dir: Path  # the sweep folder (records, study.db, cells/, report); null in YAML = derived
    storage: str  # Optuna RDB URL; null in YAML = sqlite in the sweep folder
    study_name: str  # derived from the sweep folder's name and the matrix (not a YAML key)
    matrix_name: str  # the matrix option's name (not a YAML key)
    yes: bool = _S["yes"]  # skip the confirmation prompt
    dry_run: bool = _S["dry_run"]  # print the plan only
    workers: int = _S["workers"]  # local worker processes
    seeds: int = _S["seeds"]  # seeds per cell
    lr_trials: int = _S["lr_trials"]  # learning-rate trials per cell
    pruner: str = _S["pruner"]
    heartbeat_timeout_s: float = _S["heartbeat_timeout_s"]  # a silent running cell (pid gone) is retried
    poll_s: float = _S["poll_s"]  # how often an idle worker looks for claimable cells
    prescreen: bool = _S["prescreen"]  # false = run infeasible cells too, ignore the budget (benchmarks)
    cell_stall_minutes: float | None = _S["cell_stall_minutes"]  # no progress this long: killed
    cell_timeout_minutes: float | None = _S["cell_timeout_minutes"]  # wall-clock cap per attempt
    # device slots workers hand out (sweep/devices.py): null = all visible GPUs (CPU: as many simulated
    # slots as the largest cell needs), N = the first N (N simulated on CPU), a list = these GPU indices
    devices: int | tuple[int, ...] | None = _S["devices"]
    # a cell with gpu.count > gpus_per_node spans whole nodes, their agents started by node_launcher
    gpus_per_node: int = _S["gpus_per_node"]
    node_launcher: str = _S["node_launcher"]  # srun | local (sweep/devices.py)
    rerun: str | None = _S["rerun"]  # changed | failed | null: what a rerun of the folder may run again

    def runner_limits(self) -> dict[str, float | None]:
        """The stall watchdog's limits in seconds, as `sweep.cellrun.run_runner` takes them."""
        return {
            "stall_s": None if self.cell_stall_minutes is None else self.cell_stall_minutes * 60,
            "timeout_s": None if self.cell_timeout_minutes is None else self.cell_timeout_minutes * 60,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dir"] = str(self.dir)
        return d


# sweep.rerun: null = refuse to rerun a folder whose measurements came from another config;
# changed = re-run the cells whose config changed (old results move to sweep.dir/replaced/);
# failed = run every failed cell again, whatever its cause and tries (sweep.retry)
RERUN = (None, "changed", "failed")
DERIVED = ("study_name", "matrix_name")  # SweepSettings fields that are no `sweep.` key
NULL_DERIVED = ("dir", "storage")  # `sweep.` keys whose null means: derive (default_dir, sqlite)


def default_dir(matrix_name: str, model_name: str, gpu_name: str) -> Path:
    return Path("outputs") / "sweeps" / f"{matrix_name}-{model_name}-{gpu_name}"


def _minutes(p: Problems, key: str, v: Any, least: float) -> None:
    """null (no limit) or a number of minutes, fractions allowed: ≥ `least`, or > 0 when `least` is 0."""
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if v is not None and not (number and (v >= least if least else v > 0)):
        bound = f"≥ {least:g} (three of the runner's {HEARTBEAT_S:g} s progress reports)" if least else "> 0"
        p.add(key, v, f"must be null (no limit) or a number of minutes {bound}")


def _demo_data_for_a_real_model(cfg_dict: dict[str, Any], p: Problems) -> None:
    """The demo task's data (conf/data/demo.yaml) serves only the demo base: a sweep of another model
    (model.path set) that still points at it has no data.path of its own — refused, not planned."""
    model_path = (cfg_dict.get("model") or {}).get("path")
    data_path = (cfg_dict.get("data") or {}).get("path")
    demo_model = catalog.load_option("model", "demo-base").get("path")
    demo_data = catalog.load_option("data", "demo").get("path")
    if not (model_path and data_path and demo_data):
        return

    def same(a: str, b: str) -> bool:  # relative paths are the working directory's, as the runner reads them
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()

    if same(data_path, demo_data) and not same(model_path, str(demo_model)):
        p.add(
            "data.path",
            data_path,
            f"is the demo task's data, which serves only the demo base (model.path={demo_model}); "
            f"with model.path={model_path} set data.path=YOUR_DATA (a JSONL/JSON/CSV/Parquet file or a "
            "datasets folder; `tunewise data check data.path=…` checks it first)",
        )


def settings_from(cfg_dict: dict[str, Any]) -> SweepSettings:
    """The sweep's settings from a composed config (`sweep:` over conf/config.yaml's), every problem
    at once; also refuses the demo data under a real model."""
    given = cfg_dict.get("sweep") or {}
    s = {**catalog.defaults("sweep"), **given}
    p = Problems()
    matrix_name = str((cfg_dict.get("matrix") or {}).get("name") or "matrix")
    model_name = str((cfg_dict.get("model") or {}).get("name") or "model")
    gpu_name = str((cfg_dict.get("gpu") or {}).get("name") or "gpu")
    known = [k for k in fieldtypes.hints(SweepSettings) if k not in DERIVED]
    for k in sorted(set(s) - set(known)):
        p.add(f"sweep.{k}", s[k], "unknown key", known)
    nullable = {k: str | None for k in NULL_DERIVED}  # in YAML: a string, or null = derive
    minutes = {"cell_stall_minutes": MIN_STALL_MINUTES, "cell_timeout_minutes": 0.0}
    for k, least in minutes.items():
        _minutes(p, f"sweep.{k}", s[k], least)
    bad = set(minutes)
    for k in known:
        if k in minutes:
            continue
        hint = nullable.get(k) or fieldtypes.hints(SweepSettings)[k]
        if not fieldtypes.matches(s[k], hint):
            p.add(f"sweep.{k}", s[k], f"must be {fieldtypes.describe(hint)}")
            bad.add(k)
    d = Path(s["dir"]) if s["dir"] and "dir" not in bad else default_dir(matrix_name, model_name, gpu_name)
    storage = (
        s["storage"] if s["storage"] and "storage" not in bad else f"sqlite:///{d.resolve() / 'study.db'}"
    )
    if "://" not in storage:
        p.add(
            "sweep.storage",
            storage,
            "must be an Optuna RDB URL",
            "sqlite:///PATH, postgresql://USER@HOST/DB, …",
        )
    for k in ("workers", "seeds", "lr_trials"):
        if k not in bad and s[k] < 1:
            p.add(f"sweep.{k}", s[k], "must be a positive integer")
    if "rerun" not in bad and s["rerun"] not in RERUN:
        p.add("sweep.rerun", s["rerun"], "unknown choice", ["null", *[str(r) for r in RERUN if r]])
    if "gpus_per_node" not in bad and s["gpus_per_node"] < 1:
        p.add(
            "sweep.gpus_per_node", s["gpus_per_node"], "must be a positive integer (the devices on one node)"
        )
    if "node_launcher" not in bad and s["node_launcher"] not in NODE_LAUNCHERS:
        p.add("sweep.node_launcher", s["node_launcher"], "unknown choice", NODE_LAUNCHERS)
    if "pruner" not in bad and s["pruner"] not in PRUNERS:
        p.add("sweep.pruner", s["pruner"], "unknown pruner", PRUNERS)
    for k in ("heartbeat_timeout_s", "poll_s"):
        if k not in bad and s[k] <= 0:
            p.add(f"sweep.{k}", s[k], "must be a positive number of seconds")
    _demo_data_for_a_real_model(cfg_dict, p)
    p.raise_if_any()
    # the study is named after the sweep folder and the matrix, so every worker on the same storage
    # (local or on other machines) attaches to the same study
    tag = hashlib.sha256(f"{d.name}/{matrix_name}".encode()).hexdigest()[:6]
    values = {k: s[k] for k in known if k not in NULL_DERIVED}
    for k in ("heartbeat_timeout_s", "poll_s", "cell_stall_minutes", "cell_timeout_minutes"):
        values[k] = None if s[k] is None else float(s[k])
    return SweepSettings(
        **values,
        dir=d,
        storage=storage,
        study_name=f"tunewise-{d.name}-{tag}",
        matrix_name=matrix_name,
    )

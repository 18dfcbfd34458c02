"""The Optuna side, driven directly with ask/tell: storage, study, pruner, one trial per attempt.

Every attempt at a cell is one Optuna trial. Its params are the cell's coordinates (categorical over
the axis values, so optuna-dashboard can slice by method / rank / rows) plus `lr`; its user attrs
carry `cell_id`, `attempt`, `host`, `pid`, `heartbeat` and, for skipped or failed cells, `reason`.
Eval losses are reported with the eval index as the step, so cells of different sizes are compared
at the same fraction of their planned training.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from advisor.errors import ConfigError
from advisor.trials.matrix import Cell, format_value
from sweep.claims import driver_url
from sweep.errors import disk_full

PRUNERS = ("median", "successive_halving", "none")
# learning-rate search range per method (log-uniform), used when sweep.lr_trials > 1
LR_RANGES = {"full": (5e-6, 1e-4), "lora": (5e-5, 1e-3), "qlora": (5e-5, 1e-3)}

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger("tunewise.sweep")


def make_pruner(name: str, n_cells: int) -> optuna.pruners.BasePruner:
    """`median`: prune below-median cells once a few have reported (small grids: 2 to 5 startup
    trials, never at the first eval); `successive_halving`: keep the best third at each eval rung."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(2, min(5, n_cells // 4)), n_warmup_steps=1)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"sweep.pruner={name!r}: unknown pruner (allowed: {', '.join(PRUNERS)})")


def make_storage(url: str) -> optuna.storages.RDBStorage:
    kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    )
    return optuna.storages.RDBStorage(driver_url(url), engine_kwargs=kwargs)


def _transient(e: BaseException) -> bool:
    """The first-run race of several workers creating the same tables, or a locked SQLite file."""
    text = str(e).lower()
    return any(w in text for w in ("locked", "already exists", "unique constraint", "duplicate key"))


def open_study(url: str, name: str, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create the study once, or load it; retry the first-run race of several workers creating tables.
    A storage that cannot work (malformed URL, unreachable server, corrupt file) is a ConfigError."""
    last: Exception | None = None
    for i in range(8):
        try:
            return optuna.create_study(
                storage=make_storage(url),
                study_name=name,
                direction="minimize",
                pruner=pruner,
                load_if_exists=True,
            )
        except ConfigError:
            raise
        except Exception as e:
            if not _transient(e):
                raise storage_error(url, e) from None
            last = e
            time.sleep(0.3 * (i + 1))
    assert last is not None
    raise storage_error(url, last)


def _cause(e: BaseException) -> BaseException:
    """The innermost error (Optuna and SQLAlchemy wrap the driver's)."""
    seen = set()
    while (e.__cause__ or e.__context__) is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return e


def storage_error(url: str, e: BaseException) -> ConfigError:  # DiskFull for a full disk
    """What is wrong with sweep.storage, in words: malformed, a driver missing, unreachable, a file that
    is no database, a full disk."""
    from sweep.records import redact_url

    inner = _cause(e)
    text = " ".join(str(inner).split())[:300] or type(inner).__name__
    low = f"{e} {text}".lower()
    shown = redact_url(url)
    allowed = "an Optuna RDB URL: sqlite:///PATH/study.db, postgresql://USER:PASSWORD@HOST/DB, mysql://…"
    if any(w in low for w in ("disk is full", "no space", "disk i/o error", "file too large")):
        return disk_full(f"sweep.storage={shown!r}", text)
    if "file is not a database" in low or "malformed" in low and "database" in low:
        path = url.split("sqlite:///", 1)[-1]
        why = (
            f"{path} is not a readable SQLite database ({text}). Move it aside (mv {path} {path}.corrupt) and "
            "rerun the same command: the trial records in trials/ are intact, and finished cells are taken from "
            "them, not run again"
        )
        return ConfigError(f"sweep.storage={shown!r}: {why}")
    if "can't load plugin" in low or "could not parse" in low or "argument" in type(inner).__name__.lower():
        return ConfigError(
            f"sweep.storage={shown!r}: not a storage URL this tunewise can use ({text}) (allowed: {allowed})"
        )
    if isinstance(inner, ImportError):
        return ConfigError(
            f"sweep.storage={shown!r}: its database driver is not installed ({text}); install it, e.g. "
            "pip install -e '.[postgres]' for postgresql://"
        )
    if "unable to open database file" in low:
        return ConfigError(
            f"sweep.storage={shown!r}: cannot create or open that SQLite file ({text}); its folder must exist "
            "and be writable"
        )
    return ConfigError(
        f"sweep.storage={shown!r}: cannot open the Optuna study there ({text}) (allowed: {allowed})"
    )


def _choice(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool)) or v is None else format_value(v)


def cell_distributions(cell: Cell, axes: dict[str, list[Any]], seeds: list[int]) -> dict[str, Any]:
    dists: dict[str, Any] = {}
    for k, _ in cell.assignment:
        choices = seeds if k == "seed" else axes[k]
        dists[k] = CategoricalDistribution([_choice(c) for c in choices])
    return dists


def ask_trial(
    study: optuna.Study,
    cell: Cell,
    axes: dict[str, list[Any]],
    seeds: list[int],
    lr: float | None,
    method: str,
    attrs: dict[str, Any],
) -> optuna.Trial:
    """A new trial whose params are exactly this cell's coordinates (and lr)."""
    params = {k: _choice(v) for k, v in cell.assignment}
    dists = cell_distributions(cell, axes, seeds)
    if lr is not None:
        lo, hi = LR_RANGES[method]
        dists["lr"] = FloatDistribution(min(lo, lr), max(hi, lr), log=True)
        params["lr"] = lr
    base = study.sampler
    with warnings.catch_warnings():  # PartialFixedSampler is marked experimental since optuna 2.4
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.PartialFixedSampler(params, optuna.samplers.RandomSampler())
    try:
        trial = study.ask(dists)
    finally:
        study.sampler = base
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    return trial


def tell_skipped(
    study: optuna.Study,
    cell: Cell,
    axes: dict[str, list[Any]],
    seeds: list[int],
    status: str,
    reason: str | None,
) -> int:
    """Tell Optuna a cell that never starts (infeasible, over_budget, bad config) as PRUNED."""
    trial = ask_trial(
        study,
        cell,
        axes,
        seeds,
        None,
        "lora",
        {"cell_id": cell.cell_id, "status": status, "reason": reason or ""},
    )
    study.tell(trial, state=TrialState.PRUNED)
    return trial.number


def tell_end(
    study: optuna.Study, trial: optuna.Trial | int, status: str, eval_loss: float | None, reason: str | None
) -> None:
    """Finish an attempt's trial: complete → its eval loss; pruned → PRUNED; oom/failed/died → FAIL.
    `trial` is the live Trial, or the number of one a dead worker left RUNNING."""
    try:
        if isinstance(trial, optuna.Trial):
            trial.set_user_attr("status", status)
            if reason:
                trial.set_user_attr("reason", reason[:2000])
        if status == "complete" and eval_loss is not None and math.isfinite(eval_loss):
            study.tell(trial, eval_loss, skip_if_finished=True)
        elif status == "pruned":
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    except (KeyError, ValueError, RuntimeError) as e:
        log.warning("could not finish Optuna trial %s: %s", getattr(trial, "number", trial), e)


def should_prune(trial: optuna.Trial, step: int, value: float) -> bool:
    """Report an eval loss at `step` (the eval index) and ask the study's pruner."""
    if not math.isfinite(value):
        return True
    trial.report(value, step)
    return trial.should_prune()


def suggest_lr(method: str, history: list[tuple[float, float]], seed: int, index: int) -> float:
    """The next learning rate for a cell from its own finished LR trials (TPE over the method's
    log-uniform range, seeded per cell and trial, so a rerun proposes the same values)."""
    lo, hi = LR_RANGES[method]
    sampler = optuna.samplers.TPESampler(seed=(seed * 1000 + index) % 2**32, n_startup_trials=2)
    local = optuna.create_study(direction="minimize", sampler=sampler)
    dist = FloatDistribution(lo, hi, log=True)
    for lr, loss in history:
        if lo <= lr <= hi and math.isfinite(loss):
            local.add_trial(
                optuna.trial.create_trial(params={"lr": lr}, distributions={"lr": dist}, value=loss)
            )
    return float(local.ask({"lr": dist}).params["lr"])

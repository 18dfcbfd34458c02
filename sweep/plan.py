"""The plan: every cell resolved, priced by the advisor and checked against the card and the budget.

First the matrix (`matrix_cells`): a command-line override of a key the matrix varies replaces that
axis, `data.rows` values above the training rows the data has become one cell, and both say so in the
plan's notes; then the axes expand into cells (advisor.trials.matrix).

The cheap check runs before the expensive one. For each cell: compose base config + the user's
overrides + the cell's overrides with Hydra, build the RunConfig, let `advisor.estimator.estimate.fit_batch`
pick the micro-batch / grad-accum that fits (global batch unchanged) and price it with
`advisor.estimator.estimate.estimate`. A cell nothing fits is `infeasible`; when the runnable cells together
would pass `budget.usd` (dollars, summed) or `budget.hours` (wall clock = summed hours / workers), the
most expensive are dropped first as `over_budget`. Neither kind ever starts a process.

Devices: a cell with `gpu.count` = N runs on N device slots of one worker (sweep/devices.py); a cell
needing more slots than a worker of this machine owns is `infeasible` here (saying how many it has), and
one the runner would refuse on N processes (advisor.config.checks.parallel_problems) is `failed` before
it starts. `gpu.count=auto` gives each cell the smallest node shape that fits — 1, 2, 4, 8, then
multiples of 8 (advisor.estimator.search.smallest_node, the advisor's `min_gpus`) — with the
parallelism the advisor assumes there; the plan table shows each cell's N and parallelism.

The same `Plan` is what `tunewise sweep` runs and what plan.json holds for worker processes
(sweep.planfile).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.config.checks import parallel_problems
from advisor.config.schema import RunConfig
from advisor.errors import ConfigError
from advisor.trials.matrix import Cell, cap_rows, expand, override_key, pin_axes, validate_matrix
from advisor.trials.record import TrialRecord
from sweep.compose import compose, given_keys
from sweep.reestimate import Learned, calibrated, learn
from sweep.settings import SweepSettings


@dataclass
class PlannedCell:
    cell: Cell
    cfg: RunConfig | None  # the batch-fitted config the runner gets (None when it cannot be built)
    estimate: dict[str, Any] | None  # the advise row of `cfg`
    status: str  # run | infeasible | over_budget | failed
    reason: str | None = None
    lr_trials: int = 1
    learned: tuple[float, float] | None = None  # (hours, usd) calibrated on finished cells (sweep.reestimate)

    @property
    def cell_id(self) -> str:
        return self.cell.cell_id

    @property
    def usd(self) -> float:
        if self.learned is not None:
            return self.learned[1] * self.lr_trials
        return float(((self.estimate or {}).get("cost") or {}).get("usd") or 0.0) * self.lr_trials

    @property
    def hours(self) -> float:
        if self.learned is not None:
            return self.learned[0] * self.lr_trials
        return float(((self.estimate or {}).get("time") or {}).get("hours") or 0.0) * self.lr_trials

    def new_record(self) -> TrialRecord:
        """The cell's record before anything ran."""
        return TrialRecord(
            cell_id=self.cell_id,
            coords=self.cell.coords,
            config=self.cfg.to_dict() if self.cfg is not None else None,
            estimate=self.estimate,
            lr=self.cfg.lr if self.cfg is not None else None,
            lr_trials=self.lr_trials,
        )


@dataclass
class Plan:
    settings: SweepSettings
    base_cfg: RunConfig
    axes: dict[str, list[Any]]  # the axes as run (after overrides and the rows cap)
    seeds: list[int]
    cells: list[PlannedCell] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return self.settings.dir

    @property
    def workers(self) -> int:
        return self.settings.workers

    def runnable(self) -> list[PlannedCell]:
        return [c for c in self.cells if c.status == "run"]

    def totals(self) -> tuple[float, float]:
        """(dollars, wall-clock hours) of the cells that will run."""
        run = self.runnable()
        return sum(c.usd for c in run), sum(c.hours for c in run) / max(1, self.workers)


def train_rows(cfg: RunConfig) -> int | None:
    """Training rows data.path holds once the validation rows are carved (None without a file)."""
    if not cfg.data.path:
        return None
    from advisor.data.dataset import split

    return split(cfg.data, cfg.seed).train_pool


def matrix_cells(
    matrix: dict[str, Any], overrides: list[str], base: RunConfig, seeds: int
) -> tuple[dict[str, Any], list[Cell], list[str]]:
    """(the matrix as run, its cells, plan notes). An override of an axis key replaces the axis;
    `data.rows` values above the data's training rows collapse into one cell (when the data is the
    same for every cell: no other `data.*` axis)."""
    axes, exclude = validate_matrix(matrix)
    axes, notes = pin_axes(axes, overrides)
    if "data.rows" in axes and not any(k.startswith("data.") and k != "data.rows" for k in axes):
        try:
            rows = train_rows(base)
        except ConfigError:  # a bad data file: every cell's pricing reports it
            rows = None
        if rows is not None:
            axes, more = cap_rows(axes, rows, str(base.data.path))
            notes += more
    effective = {"axes": axes, "exclude": exclude}
    return effective, expand(effective, base.method.name, seeds, base.seed), notes


AUTO = "auto"  # gpu.count=auto: the plan picks each cell's node shape


def without_auto(d: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A composed config with gpu.count=auto read as 1 (the search starts there), and whether it was auto."""
    gpu = d.get("gpu")
    if isinstance(gpu, dict) and gpu.get("count") == AUTO:
        return {**d, "gpu": {**gpu, "count": 1}}, True
    return d, False


def cell_overrides(user: list[str], cell: Cell) -> list[str]:
    """The user's overrides minus any key the cell sets, then the cell's (an override of an axis key
    has already replaced the axis: `matrix_cells`)."""
    keys = {k for k, _ in cell.assignment}
    return [o for o in user if override_key(o) not in keys] + cell.overrides


class Pricer:
    """`advisor.estimator.estimate` with the dataset's token statistics (cached per file, model and seq_len) and
    the calibration named by advisor.calibration, as `tunewise advise` uses them."""

    def __init__(self) -> None:
        from advisor.estimator.estimate import estimate, fit_batch

        self._estimate, self._fit_batch = estimate, fit_batch
        self._stats: dict[tuple, Any] = {}
        self._calibration: dict[str, Any] = {}

    def stats(self, cfg: RunConfig) -> Any:
        if not cfg.data.path:
            return None
        key = (cfg.data.path, cfg.data.format, cfg.data.fields, cfg.model.path, cfg.train.seq_len)
        if key not in self._stats:
            from advisor.data.stats import dataset_stats

            self._stats[key] = dataset_stats(cfg)
        return self._stats[key]

    def calibration(self, cfg: RunConfig) -> Any:
        if not cfg.calibration:
            return None
        if cfg.calibration not in self._calibration:
            from advisor.estimator.calibrate import load_calibration

            self._calibration[cfg.calibration] = load_calibration(cfg.calibration)
        return self._calibration[cfg.calibration]

    def node(self, cell: Cell, cfg: RunConfig, limit: int, lr_trials: int) -> RunConfig | PlannedCell:
        """gpu.count=auto: cfg on the smallest node shape (≤ limit) that fits, or the infeasible cell."""
        from advisor.estimator import search

        found = search.smallest_node(search.Estimates(self.stats(cfg), self.calibration(cfg)), cfg, limit)
        if found is None:
            reason = f"gpu.count=auto: fits no node shape of {cfg.gpu.display_name} up to {limit}"
            return PlannedCell(cell, cfg, None, "infeasible", reason, lr_trials)
        return search.at_count(cfg, *found)

    def price(self, cell: Cell, cfg: RunConfig, lr_trials: int) -> PlannedCell:
        stats, cal = self.stats(cfg), self.calibration(cfg)
        fitted = self._fit_batch(cfg, stats=stats)
        if fitted is None:
            global_batch = cfg.train.micro_batch_size * cfg.train.grad_accum
            one = cfg.replace(train={"micro_batch_size": 1, "grad_accum": global_batch})
            row = self._estimate(one, stats=stats, calibration=cal)
            mem = row.get("memory") or {}
            reason = (
                f"does not fit on {cfg.gpu.display_name}: needs {mem.get('device_gib', float('nan')):.2f} GiB "
                f"at micro-batch 1 (global batch {global_batch}), usable {cfg.gpu.usable_gib:.2f} GiB"
            )
            return PlannedCell(cell, one, row, "infeasible", reason, lr_trials)
        return PlannedCell(
            cell, fitted, self._estimate(fitted, stats=stats, calibration=cal), "run", None, lr_trials
        )


def apply_budget(plan: Plan, budget_usd: float | None, budget_hours: float | None) -> None:
    """Mark the most expensive runnable cells over_budget until the rest fit both budgets."""
    while True:
        usd, hours = plan.totals()
        over_usd = budget_usd is not None and usd > budget_usd
        over_h = budget_hours is not None and hours > budget_hours
        if not (over_usd or over_h):
            return
        run = plan.runnable()
        worst = max(run, key=(lambda c: c.usd) if over_usd else (lambda c: c.hours))
        worst.status = "over_budget"
        if over_usd:
            worst.reason = (
                f"estimated ${worst.usd:.4f}; the sweep's runnable cells total ${usd:.4f} > "
                f"budget.usd={budget_usd} (most expensive dropped first)"
            )
        else:
            worst.reason = (
                f"estimated {worst.hours:.3f} h; the sweep totals {hours:.3f} h wall clock "
                f"over {plan.workers} worker(s) > budget.hours={budget_hours} (most expensive dropped first)"
            )


def build_plan(
    settings: SweepSettings,
    base_cfg: RunConfig,
    axes: dict[str, list[Any]],
    cells: list[Cell],
    user_overrides: list[str],
    notes: list[str] | None = None,
) -> Plan:
    """Price every cell. `sweep.prescreen=false` (for bench/bench_sweep.py) runs cells the advisor
    calls infeasible too and applies no budget: the grid without pre-screening."""
    seeds = list(range(base_cfg.seed, base_cfg.seed + settings.seeds))
    plan = Plan(settings, base_cfg, axes, seeds, notes=list(notes or []))
    pricer = Pricer()
    for cell in cells:
        try:
            d, auto = without_auto(compose("config", cell_overrides(user_overrides, cell)))
            cfg = RunConfig.from_dict(d)
            sized = pricer.node(cell, cfg, _auto_limit(settings, cfg), settings.lr_trials) if auto else cfg
            if isinstance(sized, PlannedCell):
                plan.cells.append(sized)
                continue
            problems = parallel_problems(sized)
            if problems:
                raise ConfigError(problems)
            plan.cells.append(pricer.price(cell, sized, settings.lr_trials))
        except ConfigError as e:  # DataError included: a bad data file fails before any process starts
            reason = "bad config: " + "; ".join(e.problems)
            plan.cells.append(PlannedCell(cell, None, None, "failed", reason, settings.lr_trials))
    _check_devices(plan)
    learned = refresh(plan)  # a resumed sweep: the cells still to run priced from what finished
    if learned is not None:
        plan.notes.append(f"cells still to run {learned.describe()}")
    if not settings.prescreen:
        for pc in plan.cells:
            if pc.status == "infeasible":
                pc.status, pc.reason = "run", f"run without pre-screening although: {pc.reason}"
        plan.notes.append("sweep.prescreen=false: no fit or budget pre-screening")
        return plan
    apply_budget(plan, base_cfg.budget_usd, base_cfg.budget_hours)
    if "train.lr" in given_keys(user_overrides) and settings.lr_trials > 1:
        plan.notes.append("train.lr is set and sweep.lr_trials > 1: the LR search ignores train.lr")
    return plan


def _auto_limit(settings: SweepSettings, cfg: RunConfig) -> int:
    """The largest node shape gpu.count=auto considers: 64 cards (advise's min_gpus), or on CPU the
    simulated slots sweep.devices gives (default: 8)."""
    from advisor.estimator.search import MAX_MIN_GPUS

    if not cfg.gpu.is_cpu:
        return MAX_MIN_GPUS
    d = settings.devices
    return d if isinstance(d, int) else len(d) if d is not None else 8


def _check_devices(plan: Plan) -> None:
    """Cells this machine's workers cannot run on as many devices as priced are infeasible here: more
    slots than a worker owns; a gpu.count that is no whole number of nodes (sweep.gpus_per_node); a
    cell spanning nodes where sweep.node_launcher cannot start them (srun outside a SLURM job of enough
    nodes). A reason that starts `needs ` is one a machine with more devices or nodes lifts (sweep.slurm)."""
    from runners.parallel.files import slurm_nodes
    from sweep.devices import layout, local_slots, machine_slots, share

    s = plan.settings
    run = [pc for pc in plan.cells if pc.status == "run" and pc.cfg is not None]
    largest = max((local_slots(pc.cfg.gpu.count, s) for pc in run if pc.cfg is not None), default=1)
    slots = machine_slots(s.devices, largest * (s.workers if s.devices is None else 1))
    per_worker = max(len(share(slots, s.workers, i)) for i in range(s.workers))
    where = (
        f"each of the {s.workers} workers owns at most {per_worker}"
        if s.workers > 1
        else f"this machine has {len(slots)}"
    )
    for pc in run:
        assert pc.cfg is not None
        n, lay = pc.cfg.gpu.count, layout(pc.cfg.gpu.count, s)
        if lay is None:
            pc.status, pc.reason = (
                "infeasible",
                f"gpu.count={n} spans nodes of sweep.gpus_per_node={s.gpus_per_node} devices but is not a "
                f"multiple of it (whole nodes only: {s.gpus_per_node * (n // s.gpus_per_node + 1)}, or set "
                "sweep.gpus_per_node)",
            )
            continue
        spans = f" as {lay.nodes} nodes × {lay.per_node} (sweep.gpus_per_node={s.gpus_per_node})"
        if lay.nodes > 1 and lay.launcher == "srun" and slurm_nodes() < lay.nodes:
            job = f"this SLURM job has {slurm_nodes()}" if slurm_nodes() else "this sweep runs outside SLURM"
            pc.status, pc.reason = (
                "infeasible",
                f"needs {n} devices (gpu.count={n}){spans}; {job}: run the sweep with python -m sweep.slurm "
                f"hydra/launcher=submitit_slurm … (each worker job then asks for {lay.nodes} nodes and starts "
                "one torch.distributed.run agent per node with srun), or sweep.node_launcher=local on a "
                f"machine with {n} devices",
            )
            continue
        here = local_slots(n, s)
        if here > per_worker:
            pc.status, pc.reason = (
                "infeasible",
                f"needs {n} devices (gpu.count={n}){spans if lay.nodes > 1 else ''}; {where} "
                f"(sweep.devices={s.devices}: {', '.join(slots)})",
            )


def fmt_hours(h: float) -> str:
    s = h * 3600
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{h:.1f} h"


def _gpus(pc: PlannedCell) -> str:
    """N and the parallelism of a cell: `1`, `2 fsdp`, `8 zero3`."""
    if pc.cfg is None:
        return "-"
    n = pc.cfg.gpu.count
    return str(n) if n == 1 else f"{n} {pc.cfg.parallel}"


def format_plan(plan: Plan) -> str:
    lines = [
        f"{'cell':<11} {'status':<12} {'est $':>10} {'est time':>9} {'batch':>7} {'gpus':>9}  overrides / reason"
    ]
    for pc in plan.cells:
        batch = f"{pc.cfg.train.micro_batch_size}x{pc.cfg.train.grad_accum}" if pc.cfg else "-"
        lines.append(
            f"{pc.cell.cell_id:<11} {pc.status:<12} {pc.usd:>10.4g} {fmt_hours(pc.hours):>9} {batch:>7} "
            f"{_gpus(pc):>9}  {pc.cell.label()}"
        )
        if pc.reason:
            lines.append(f"{'':<11} {'':<12} {'':>10} {'':>9} {'':>7} {'':>9}  ↳ {pc.reason}")
    usd, hours = plan.totals()
    n_run = len(plan.runnable())
    skipped = len(plan.cells) - n_run
    b = plan.base_cfg
    budget = ", ".join(
        x
        for x in (
            f"budget.usd={b.budget_usd}" if b.budget_usd is not None else "",
            f"budget.hours={b.budget_hours}" if b.budget_hours is not None else "",
        )
        if x
    )
    lines.append(
        f"{n_run} cell(s) to run, {skipped} skipped; estimated ${usd:.4g} and {fmt_hours(hours)} wall clock "
        f"with {plan.workers} worker(s) on {b.gpu.display_name} at ${b.price.usd_per_gpu_hour:.4g}/h"
        + (f" ({budget})" if budget else "")
    )
    lines.extend(f"note: {n}" for n in plan.notes)
    return "\n".join(lines)


def refresh(plan: Plan) -> Learned | None:
    """Set the `learned` (hours, usd) of every cell still to run from the sweep's finished records;
    returns what was learned (None: nothing finished yet, the plan's estimates stand)."""
    learned = None
    with contextlib.suppress(OSError):
        learned = learn(plan.dir)
    for pc in plan.cells:
        pc.learned = None
        if learned is None or pc.status != "run":
            continue
        pc.learned = calibrated(learned, pc.estimate, pc.cfg)
    return learned

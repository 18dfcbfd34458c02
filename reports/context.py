"""What every report section shares: the loaded sweep, its tables, per-cell numbers, the card, the decision.

A report "cell" is one configuration of the matrix: the sweep's cells that differ only in seed (and
learning rate, when the sweep tries several) are its records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reports.fmt import label
from reports.plots import Point
from reports.recommend import CellResult, Recommendation, recommend
from reports.records import Sweep, dig, num
from reports.tables import cell_table, record_table, value

log = logging.getLogger(__name__)
SMALL_CARD = "rtx-4090"  # the "24 GB card" the recommendation mentions when the sweep's card is bigger


@dataclass(frozen=True)
class Cell:
    """One configuration: a row of `reports.tables.cell_table` as plain values."""

    configuration: str
    method: str
    r: int | None
    rows: int | None
    extra: str
    status: str  # running, else pending, else complete, else the first record's
    status_label: str  # 'complete' or 'complete 2/3, failed 1/3'
    finished: bool
    trials: int  # records (seeds × learning rates)
    n: int  # chosen records: complete, at the best learning rate
    reason: str
    lr: float | None  # the best learning rate
    lr_tuned: bool
    static_gib: float | None
    tokens_per_s: float | None
    adapter_bytes: float | None
    trainable_params: float | None
    peak_any_gib: float | None  # the largest peak of any record (oom / pruned ones included)
    cell_ids: tuple[str, ...]  # its records, in report order
    chosen_ids: tuple[str, ...]

    @classmethod
    def from_row(cls, configuration: str, row: pd.Series) -> Cell:
        v = {k: value(row[k]) for k in row.index}
        return cls(
            configuration=configuration,
            method=str(v["method"] or "?"),
            r=v["r"],
            rows=v["rows"],
            extra=v["extra"] or "",
            status=v["status"],
            status_label=v["status_label"],
            finished=bool(v["finished"]),
            trials=int(v["trials"]),
            n=int(v["n"]),
            reason=v["reason"],
            lr=v["best_lr"],
            lr_tuned=bool(v["lr_tuned"]),
            static_gib=v["static_gib"],
            tokens_per_s=v["tokens_per_s"],
            adapter_bytes=v["adapter_bytes"],
            trainable_params=v["trainable_params"],
            peak_any_gib=v["peak_any_gib"],
            cell_ids=tuple(v["cell_ids"] or ()),
            chosen_ids=tuple(v["chosen_ids"] or ()),
        )


@dataclass
class Context:
    sweep: Sweep
    plots_dir: Path
    is_cpu: bool
    gpu_name: str
    capacity_gib: float | None
    records: pd.DataFrame  # reports.tables.record_table: one row per record
    table: pd.DataFrame  # reports.tables.cell_table: one row per configuration
    cells: list[Cell]  # the table's rows, in its order
    results: list[CellResult]  # aligned with cells
    rec: Recommendation
    capacities: list[float | None]  # usable GiB of each cell's card (they differ with a gpu axis)
    planned: int  # configurations the matrix declares (at least the ones with records)
    finished_cells: int

    @property
    def one_card(self) -> bool:
        return len(set(self.capacities)) <= 1

    @property
    def pairs(self) -> list[tuple[Cell, CellResult]]:
        return list(zip(self.cells, self.results, strict=True))

    @property
    def running(self) -> bool:
        return self.finished_cells < len(self.cells) or self.planned > len(self.cells)

    @property
    def peak_what(self) -> str:
        return "process RSS" if self.is_cpu else "device memory as nvidia-smi shows it"

    def points(self) -> list[Point]:
        out = []
        for c, r in self.pairs:
            peak = r.peak_gib if r.peak_gib is not None else c.peak_any_gib  # oom / pruned: peak so far
            out.append(Point(c.method, c.r, c.rows, r.label, r.loss, r.std, r.usd, peak, c.status))
        return out


def card(config: dict[str, Any]) -> tuple[str, float | None]:
    """(display name, usable GiB across gpu.count) of the card a config runs on."""
    gpu = config.get("gpu") or {}
    usable = num(gpu.get("usable_mib"))
    name = gpu.get("display_name") or gpu.get("name") or "the sweep's device"
    return name, (usable / 1024 * int(gpu.get("count") or 1) if usable else None)


def cell_result(c: Cell, row: pd.Series, small: dict[str, Any] | None = None, gpu: str = "") -> CellResult:
    losses = row["eval_losses"] if isinstance(row["eval_losses"], tuple) else ()
    return CellResult(
        method=c.method,
        r=c.r,
        rows=c.rows,
        status=c.status,
        eval_losses=tuple(float(x) for x in losses),
        metric=value(row["metric"]),
        usd=value(row["usd"]),
        hours=value(row["hours"]),
        peak_gib=value(row["peak_gib"]),
        reason=c.reason,
        extra=c.extra,
        small_card_fits=(small or {}).get("fits"),
        small_card_usd=num(dig(small, "cost", "usd")),
        small_card_gib=num(dig(small, "memory", "device_gib")),
        small_card_batch=(small or {}).get("batch_note", ""),
        gpu=gpu,
    )


def small_card_rows(sweep: Sweep, cells: list[Cell], capacity_gib: float | None) -> dict[int, dict[str, Any]]:
    """The advisor's estimate of each complete cell on a 24 GB card (empty when the advisor's
    estimator is unavailable or the sweep's own card is already that small)."""
    if capacity_gib is not None and capacity_gib <= 24.5 and sweep.config.get("gpu", {}).get("name") != "cpu":
        return {}
    try:
        from advisor.config import catalog
        from advisor.config.schema import build
        from advisor.estimator.estimate import estimate, fit_batch
    except ImportError:
        return {}
    by_id = sweep.by_id
    out: dict[int, dict[str, Any]] = {}
    failed: list[str] = []
    for i, cell in enumerate(cells):
        config = by_id[cell.cell_ids[0]].config
        if not cell.n or not config:
            continue
        d = dict(config)
        d["gpu"] = catalog.load_option("gpu", SMALL_CARD)
        d["price"] = {"provider": None}
        try:
            cfg = build(d)
            row = estimate(cfg)
            if not row.get("fits"):  # the same global batch in smaller micro-batches, if that fits
                smaller = fit_batch(cfg)
                if smaller is not None:
                    row = estimate(smaller)
                    t = smaller.train
                    row["batch_note"] = (
                        f"micro-batch {t.micro_batch_size} × {t.grad_accum} accumulation steps"
                    )
            out[i] = row
        except Exception as e:  # the estimator is optional here: the report must still be written
            failed.append(f"{label(cell.method, cell.r, cell.rows)}: {str(e).strip().lstrip('- ')}")
    if failed:
        log.warning("no %s estimate for %d cell(s), e.g. %s", SMALL_CARD, len(failed), failed[0])
    return out


def build_context(sweep: Sweep, plots_dir: Path) -> Context:
    is_cpu = (sweep.config.get("gpu") or {}).get("name") == "cpu"
    gpu_name, capacity = card(sweep.config)
    records = record_table(sweep.results, is_cpu)
    table = cell_table(records)
    cells = [Cell.from_row(str(k), row) for k, row in table.iterrows()]
    by_id = sweep.by_id
    cards = [card(by_id[c.cell_ids[0]].config or sweep.config) for c in cells]
    small = small_card_rows(sweep, cells, capacity)
    several = len({name for name, _ in cards}) > 1  # a gpu axis: say per cell which card
    results = [
        cell_result(c, table.loc[c.configuration], small.get(i), cards[i][0] if several else "")
        for i, c in enumerate(cells)
    ]
    budget = sweep.meta.get("budget") or sweep.config.get("budget") or {}
    planned = len(sweep.planned | {c.configuration for c in cells})
    finished = sum(c.finished for c in cells)
    running = finished < len(cells) or planned > len(cells)
    small_name = ""
    if small:
        from advisor.config import catalog

        small_name = f"24 GB card ({catalog.load_option('gpu', SMALL_CARD).get('display_name', SMALL_CARD)})"
    rec = recommend(
        results,
        sweep.baseline_loss,
        gpu_name,
        budget_usd=num(budget.get("usd")),
        budget_hours=num(budget.get("hours")),
        running=(finished, planned) if running else None,
        small_card=small_name,
    )
    capacities = [cap for _, cap in cards]
    return Context(
        sweep,
        plots_dir,
        is_cpu,
        gpu_name,
        capacity,
        records,
        table,
        cells,
        results,
        rec,
        capacities,
        planned,
        finished,
    )

"""What every report section shares: the loaded sweep, per-cell numbers, the card, the decision."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reports.fmt import label
from reports.plots import Point
from reports.recommend import CellResult, Recommendation, recommend
from reports.records import Cell, Sweep, Trial, dig, num

log = logging.getLogger(__name__)
SMALL_CARD = "rtx-4090"  # the "24 GB card" the recommendation mentions when the sweep's card is bigger


def peak_gib(t: Trial, is_cpu: bool) -> float | None:
    """The peak that decides fitting: what nvidia-smi shows on a GPU, process RSS on the CPU."""
    m = t.measured
    keys = (
        ("rss_gib", "device_gib", "reserved_gib", "allocated_gib")
        if is_cpu
        else ("device_gib", "reserved_gib", "allocated_gib", "rss_gib")
    )
    for k in keys:
        if num(m.get(k)) is not None:
            return num(m.get(k))
    return None


@dataclass
class Context:
    sweep: Sweep
    plots_dir: Path
    is_cpu: bool
    gpu_name: str
    capacity_gib: float | None
    results: list[CellResult]  # aligned with sweep.cells
    rec: Recommendation
    capacities: list[float | None]  # usable GiB of each cell's card (they differ with a gpu axis)

    @property
    def one_card(self) -> bool:
        return len(set(self.capacities)) <= 1

    @property
    def pairs(self) -> list[tuple[Cell, CellResult]]:
        return list(zip(self.sweep.cells, self.results, strict=True))

    @property
    def peak_what(self) -> str:
        return "process RSS" if self.is_cpu else "device memory as nvidia-smi shows it"

    def points(self) -> list[Point]:
        out = []
        for c, r in self.pairs:
            peak = r.peak_gib
            if peak is None:  # oom / pruned cells may still have measured a peak
                peaks = [p for p in (peak_gib(t, self.is_cpu) for t in c.trials) if p is not None]
                peak = max(peaks) if peaks else None
            out.append(Point(c.method, c.r, c.rows, r.label, r.loss, r.std, r.usd, peak, c.status))
        return out


def card(config: dict[str, Any]) -> tuple[str, float | None]:
    """(display name, usable GiB across gpu.count) of the card a config runs on."""
    gpu = config.get("gpu") or {}
    usable = num(gpu.get("usable_mib"))
    name = gpu.get("display_name") or gpu.get("name") or "the sweep's device"
    return name, (usable / 1024 * int(gpu.get("count") or 1) if usable else None)


def _extra(cell: Cell) -> str:
    return " ".join(f"{k}={v}" for k, v in cell.extra)


def cell_result(cell: Cell, is_cpu: bool, small: dict[str, Any] | None = None, gpu: str = "") -> CellResult:
    chosen = cell.chosen
    peaks = [p for p in (peak_gib(t, is_cpu) for t in chosen) if p is not None]
    wall = cell.mean(lambda t: t.wall_s)
    reason = "; ".join(dict.fromkeys(t.reason for t in cell.trials if t.reason))
    return CellResult(
        method=cell.method,
        r=cell.r,
        rows=cell.rows,
        status=cell.status,
        eval_losses=tuple(t.eval_loss for t in chosen if t.eval_loss is not None),
        metric=cell.mean(lambda t: t.measured.get("metric")),
        usd=cell.mean(lambda t: t.measured.get("usd")),
        hours=wall / 3600 if wall is not None else None,
        peak_gib=max(peaks) if peaks else None,
        reason=reason,
        extra=_extra(cell),
        small_card_fits=(small or {}).get("fits"),
        small_card_usd=num(dig(small, "cost", "usd")),
        small_card_gib=num(dig(small, "memory", "device_gib")),
        small_card_batch=(small or {}).get("batch_note", ""),
        gpu=gpu,
    )


def small_card_rows(sweep: Sweep, capacity_gib: float | None) -> dict[int, dict[str, Any]]:
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
    out: dict[int, dict[str, Any]] = {}
    failed: list[str] = []
    for i, cell in enumerate(sweep.cells):
        if not cell.chosen or not cell.first.config:
            continue
        d = dict(cell.first.config)
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
    cards = [card(c.first.config or sweep.config) for c in sweep.cells]
    small = small_card_rows(sweep, capacity)
    several = len({name for name, _ in cards}) > 1  # a gpu axis: say per cell which card
    results = [
        cell_result(c, is_cpu, small.get(i), cards[i][0] if several else "")
        for i, c in enumerate(sweep.cells)
    ]
    budget = sweep.meta.get("budget") or sweep.config.get("budget") or {}
    running = (sweep.finished_cells, sweep.planned) if sweep.running else None
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
        running=running,
        small_card=small_name,
    )
    return Context(sweep, plots_dir, is_cpu, gpu_name, capacity, results, rec, [cap for _, cap in cards])

"""The report's plots (matplotlib, Agg backend, PNG). Each takes plain numbers, writes one file and
returns its path, or None when there is nothing to draw."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from advisor.config import methods

DPI = 100
COLORS = {"full": "#cf222e", "lora": "#0969da", "qlora": "#1a7f37"}
PNG_META = {"Software": None}  # no library version in the file: the same data gives the same bytes
STYLES = ("-", "--", "-.", ":")  # line styles telling apart series of one method


def _plain_log(axis, prefix: str = "") -> None:
    """Log-scale ticks at 1-2-5 written as plain numbers ($2, 5, 10), not 2×10⁰."""
    axis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{prefix}{v:,.3g}"))
    axis.set_minor_formatter(NullFormatter())


@dataclass(frozen=True)
class Point:
    method: str
    r: int | None
    rows: int | None
    label: str
    loss: float | None = None
    std: float | None = None
    usd: float | None = None
    peak_gib: float | None = None
    status: str = "complete"


def _f(x: float | None) -> float:
    """A number to draw (callers filter out the missing ones; NaN draws nothing)."""
    return float("nan") if x is None else float(x)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight", metadata=PNG_META)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _loss_axis(ax, losses: list[float]) -> None:
    """Plain loss ticks (no '+5.476' offset) and a readable range when the losses nearly coincide."""
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    lo, hi = min(losses), max(losses)
    pad = max((hi - lo) * 0.15, abs(hi) * 0.004)
    bottom, top = ax.get_ylim()
    ax.set_ylim(min(bottom, lo - pad), max(top, hi + pad))


def _baseline(ax, baseline: float | None) -> None:
    if baseline is not None:
        ax.axhline(baseline, color="#57606a", ls=":", lw=1.2, label=f"untrained base ({baseline:.3f})")


def quality_vs(points: list[Point], axis: str, baseline: float | None, path: Path) -> Path | None:
    """Eval loss against dataset rows (axis='rows', one line per method+rank) or rank
    (axis='r', one line per adapter method+rows; full drawn as a flat reference)."""
    pts = [p for p in points if p.loss is not None]
    if axis == "r":
        series_key = lambda p: (p.method, p.rows)  # noqa: E731
        xs_of = lambda p: p.r  # noqa: E731
    else:
        series_key = lambda p: (p.method, p.r)  # noqa: E731
        xs_of = lambda p: p.rows  # noqa: E731
    groups: dict[tuple, list[Point]] = {}
    for p in pts:
        groups.setdefault(series_key(p), []).append(p)
    xs_all = {xs_of(p) for p in pts if xs_of(p) is not None}
    if len(xs_all) < 2:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    seen: dict[str, int] = {}
    for (method, other), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        name = methods.short(method)
        tag = f"{name} · {other:,} rows" if axis == "r" else name + (f" r={other}" if other else "")
        if axis == "r" and method == "full":
            ax.axhline(_f(g[0].loss), color=COLORS.get(method, "k"), ls="--", lw=1, alpha=0.7, label=tag)
            continue
        g = sorted((p for p in g if xs_of(p) is not None), key=xs_of)
        if not g:
            continue
        k = seen[method] = seen.get(method, -1) + 1
        ax.errorbar(
            [xs_of(p) for p in g],
            [_f(p.loss) for p in g],
            yerr=[p.std or 0 for p in g],
            marker="o",
            capsize=3,
            color=COLORS.get(method),
            ls=STYLES[k % len(STYLES)],
            label=tag,
        )
    _baseline(ax, baseline)
    _loss_axis(ax, [_f(p.loss) for p in pts] + ([baseline] if baseline is not None else []))
    ax.set_xscale("log", base=2 if axis == "r" else 10)
    ax.set_xticks(sorted(xs_all))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("LoRA rank r" if axis == "r" else "training rows")
    ax.set_ylabel("eval loss (lower is better)")
    ax.set_title("Quality vs " + ("rank" if axis == "r" else "dataset size"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def memory(points: list[Point], capacity_gib: float | None, card: str, what: str, path: Path) -> Path | None:
    pts = [p for p in points if p.peak_gib is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.32 * len(pts)))
    y = range(len(pts))
    bars = ax.barh(list(y), [_f(p.peak_gib) for p in pts], color=[COLORS.get(p.method, "#888") for p in pts])
    for bar, p in zip(bars, pts, strict=True):
        if p.status != "complete":  # a partial run: its peak so far, hatched and labelled
            bar.set_hatch("//")
            bar.set_alpha(0.6)
            ax.annotate(
                p.status,
                (_f(p.peak_gib), bar.get_y() + bar.get_height() / 2),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
    ax.set_yticks(list(y), [p.label for p in pts], fontsize=8)
    ax.invert_yaxis()
    title = "Peak memory per cell against the card's capacity"
    if capacity_gib:
        ax.axvline(capacity_gib, color="#cf222e", ls="--", lw=1.5)
        ax.set_xlim(0, max(capacity_gib, *(_f(p.peak_gib) for p in pts)) * 1.12)
        title += f"\n(dashed: {card}, {capacity_gib:.1f} GiB usable)"
    ax.set_xlabel(f"measured peak memory, GiB ({what})")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def cost_quality(points: list[Point], front: list[Point], path: Path) -> Path | None:
    """Cost per run against eval loss; `front` (reports.tables.pareto) drawn as a step line."""
    pts = [p for p in points if p.usd is not None and p.loss is not None]
    if len(pts) < 2:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for m in methods.METHODS:
        g = [p for p in pts if p.method == m]
        if g:
            ax.scatter(
                [_f(p.usd) for p in g],
                [_f(p.loss) for p in g],
                color=COLORS.get(m, "#888"),
                s=36,
                label=methods.short(m),
                zorder=3,
            )
    ax.step(
        [_f(p.usd) for p in front],
        [_f(p.loss) for p in front],
        where="post",
        color="#57606a",
        lw=1.2,
        label="Pareto frontier",
        zorder=2,
    )
    for p in front:
        ax.annotate(p.label, (_f(p.usd), _f(p.loss)), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    _plain_log(ax.xaxis, "$")
    _loss_axis(ax, [_f(p.loss) for p in pts])
    ax.set_xlabel("cost per run, USD (log)")
    ax.set_ylabel("eval loss (lower is better)")
    ax.set_title("Cost vs quality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def calibration(pairs: dict[str, list[tuple[float, float, str]]], path: Path) -> Path | None:
    """pairs: quantity title -> [(predicted, measured, method)], one log-log panel per quantity."""
    panels = [(k, [(a, b, m) for a, b, m in v if a and b and a > 0 and b > 0]) for k, v in pairs.items()]
    panels = [(k, v) for k, v in panels if v]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, v) in zip(axes[0], panels, strict=True):
        lo = min(min(a, b) for a, b, _ in v) / 1.5
        hi = max(max(a, b) for a, b, _ in v) * 1.5
        ax.plot([lo, hi], [lo, hi], color="#57606a", lw=1, label="y = x")
        ax.fill_between(
            [lo, hi],
            [lo / 1.15, hi / 1.15],
            [lo * 1.15, hi * 1.15],
            color="#57606a",
            alpha=0.12,
            label="±15 %",
        )
        for m in methods.METHODS:
            g = [(a, b) for a, b, mm in v if mm == m]
            if g:
                ax.scatter(
                    [b for _, b in g],
                    [a for a, _ in g],
                    color=COLORS.get(m, "#888"),
                    s=30,
                    label=methods.short(m),
                    zorder=3,
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        _plain_log(ax.xaxis)
        _plain_log(ax.yaxis)
        ax.set_xlabel("measured")
        ax.set_ylabel("predicted")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Advisor calibration: predicted vs measured (log-log)")
    return _save(fig, path)

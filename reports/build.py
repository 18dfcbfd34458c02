"""`tunewise report SWEEP_DIR`: read the sweep's records, write report.md, report.html and plots/.

Works on a finished sweep and on one still running (the report says how many cells finished).
Every file is written to a temporary name and moved into place, so a reader never sees half a report.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Literal, TextIO

from reports import calibration, deploy, gap, sections, sections_more
from reports.context import Context, build_context
from reports.doc import Doc, Figure, Para, to_html, to_markdown
from reports.fmt import gib, scrub, usd
from reports.fmt import loss as fmt_loss
from reports.records import load

PLOT_NAMES = (
    "quality_vs_rows.png",
    "quality_vs_rank.png",
    "memory.png",
    "cost_quality.png",
    "calibration.png",
)


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def status_line(ctx: Context) -> str | None:
    if not ctx.running:
        return None
    return (
        f"Sweep still running: {ctx.finished_cells} of {ctx.planned} cells finished "
        "(or it was interrupted: rerun the same `tunewise sweep` command to resume). Numbers below are provisional."
    )


def compose(ctx: Context) -> Doc:
    sw = ctx.sweep
    model = (sw.config.get("model") or {}).get("name") or "model"
    matrix = (sw.meta.get("matrix") or {}).get("name") or "sweep"
    doc = Doc(scrub(f"Fine-tuning report: {model} on {ctx.gpu_name} ({matrix})"))
    line = status_line(ctx)
    if line:
        doc.add(Para(line, note=True))
    if sw.unreadable:  # never a recommendation that silently leaves cells out
        doc.add(
            Para(
                f"{len(sw.unreadable)} record file(s) could not be read, nor rebuilt from their cell's files: "
                "the recommendation below leaves those cells out (listed under Skipped cells; rerun the "
                "same `tunewise sweep` command to measure them again).",
                note=True,
            )
        )
    for part in (
        sections.recommendation,
        sections.quality,
        gap.adapters,
        sections.cost,
        calibration.calibration,
        sections_more.skipped,
        deploy.deployment,
        sections_more.reproducibility,
    ):
        doc.add(*part(ctx))
    return doc


def build_report(sweep_dir: Path, print_summary: bool = False) -> list[Path]:
    """Write report.md, report.html and plots/*.png into `sweep_dir`; return their paths."""
    return write_report(sweep_dir, print_summary)[0]


def write_report(sweep_dir: Path, print_summary: bool = False) -> tuple[list[Path], str]:
    """build_report's files and the recommendation's sentences (what a terminal ends with)."""
    sweep_dir = Path(sweep_dir)
    plots_dir = sweep_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    ctx = build_context(load(sweep_dir), plots_dir)
    doc = compose(ctx)
    line = status_line(ctx)
    figures = [b.path for b in doc.blocks if isinstance(b, Figure)]
    for name in PLOT_NAMES:  # a plot this run did not draw must not linger from an earlier run
        if plots_dir / name not in figures and (plots_dir / name).exists():
            (plots_dir / name).unlink()
    md, html = sweep_dir / "report.md", sweep_dir / "report.html"
    _write(md, to_markdown(doc))
    _write(html, to_html(doc))
    if print_summary:
        print_rich_summary(ctx)
    text = ctx.rec.text if not line else f"{line} {ctx.rec.text}"
    return [md, html, *figures], text


def print_rich_summary(ctx: Context, file: TextIO | None = None) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = Console(file=file or sys.stdout)
    line = status_line(ctx)
    if line:
        console.print(f"[yellow]{line}[/yellow]")
    console.print(Panel(ctx.rec.text, title="Recommendation", expand=False))
    t = Table(title="Cells", title_justify="left")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("cell", "left"),
        ("status", "left"),
        ("eval loss", "right"),
        ("peak", "right"),
        ("USD/run", "right"),
    )
    for h, j in columns:
        t.add_column(h, justify=j)
    for (c, r), p in zip(ctx.pairs, ctx.points(), strict=True):
        style = "bold green" if r is ctx.rec.pick else None
        t.add_row(
            r.label,
            c.status_label,
            fmt_loss(r.loss, r.std, len(r.eval_losses)),
            gib(p.peak_gib),
            usd(r.usd),
            style=style,
        )
    console.print(t)
    console.print(f"report: {ctx.sweep.dir / 'report.html'}", soft_wrap=True)

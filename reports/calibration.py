"""Report section 4: the advisor's estimates against what was measured, per cell (reports.tables)."""

from __future__ import annotations

from reports import plots
from reports.context import Context
from reports.doc import Block, Bullets, Figure, Heading, Para, Table
from reports.fmt import duration, gib, label, pct, signed_pct, usd
from reports.tables import OFF_BY, calibration_pairs, calibration_summary, value

MAX_FLAGGED = 12  # at most this many call-outs listed one by one
PANEL = {"GiB": "memory (GiB)", "h": "time (h): train, outside steps", "$": "cost (USD)"}


def _show(v: float | None, unit: str) -> str:
    return {"GiB": gib, "h": duration, "$": usd}[unit](v)


def calibration(ctx: Context) -> list[Block]:
    out: list[Block] = [Heading("Advisor calibration")]
    mem_note = (
        "On the CPU the measured peak of live tensor bytes compares with the estimate's allocated GiB, "
        "and process RSS with its device GiB."
        if ctx.is_cpu
        else "allocated/reserved compare with torch's max_memory_allocated/max_memory_reserved; device with nvidia-smi."
    )
    out.append(
        Para(
            f"Error = (predicted − measured) / measured. {mem_note} Train time compares the optimizer "
            "steps; time outside steps the rest of the run (start, load, evals, task metric, checkpoints, "
            "saving); cost the measured dollars of the whole run."
        )
    )
    pairs = calibration_pairs(ctx.records, ctx.is_cpu)
    if pairs.empty:
        return out + [Para("No cell has both an estimate and a measurement yet.")]
    summary = calibration_summary(pairs)
    out.append(
        Table(
            ["Quantity", "Cells", "Median error", f"Within {pct(OFF_BY)}", "Worst"],
            [
                [
                    str(s.quantity),
                    str(s.cells),
                    signed_pct(float(s.median)),
                    f"{s.within} of {s.cells}",
                    signed_pct(float(s.worst)),
                ]
                for s in summary.itertuples(index=False)
            ],
            "lrrrr",
        )  # fmt: skip
    )
    rows, flagged = [], []
    panels: dict[str, list[tuple[float, float, str]]] = {v: [] for v in PANEL.values()}
    for p in pairs.itertuples(index=False):
        n = int(p.records)
        name = label(str(p.method), value(p.r), value(p.rows), str(p.extra or "")) + (
            f" (mean of {n} seeds)" if n > 1 else ""
        )
        pred, meas, err, unit = float(p.predicted), float(p.measured), float(p.error), str(p.unit)
        mark = " !" if abs(err) > OFF_BY else ""
        rows.append([name, str(p.quantity), _show(pred, unit), _show(meas, unit), signed_pct(err) + mark])
        panels[PANEL[unit]].append((pred, meas, str(p.method)))
        if mark:
            flagged.append(
                f"{name}: {p.quantity} predicted {_show(pred, unit)}, measured {_show(meas, unit)} ({signed_pct(err)})."
            )
    out.append(Table(["Cell", "Quantity", "Predicted", "Measured", "Error"], rows, "llrrr"))
    if flagged:
        out.append(Para(f"Estimates off by more than {pct(OFF_BY)} (marked !):", note=True))
        shown = flagged[:MAX_FLAGGED]
        more = len(flagged) - len(shown)
        out.append(Bullets(shown + ([f"… and {more} more, marked ! in the table."] if more else [])))
    else:
        out.append(Para(f"Every estimate was within {pct(OFF_BY)} of the measurement."))
    path = plots.calibration(panels, ctx.plots_dir / "calibration.png")
    if path:
        out.append(
            Figure(
                path,
                f"plots/{path.name}",
                "Predicted vs measured per cell, log-log; y = x with a ±15 % band.",
            )
        )
    return out

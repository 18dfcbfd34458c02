"""Report section 4: the advisor's estimates against what was measured, per cell."""

from __future__ import annotations

from reports import plots
from reports.context import Context
from reports.doc import Bullets, Figure, Heading, Para, Table
from reports.fmt import duration, gib, label, pct, signed_pct, usd
from reports.records import Trial, dig, num

OFF_BY = 0.15  # estimates off by more than this share of the measured value are called out
MAX_FLAGGED = 12  # at most this many call-outs listed one by one


def _quantities(t: Trial, is_cpu: bool) -> list[tuple[str, float | None, float | None, str]]:
    """(name, predicted, measured, unit) pairs that design.md says compare on this device."""
    est, m = t.estimate, t.measured
    mem = est.get("memory") or {}
    q = [("allocated", num(mem.get("allocated_gib")), num(m.get("allocated_gib")), "GiB")]
    if is_cpu:
        q.append(("device vs RSS", num(mem.get("device_gib")), num(m.get("rss_gib")), "GiB"))
    else:
        q.append(("reserved", num(mem.get("reserved_gib")), num(m.get("reserved_gib")), "GiB"))
        q.append(("device", num(mem.get("device_gib")), num(m.get("device_gib")), "GiB"))
    if t.status == "complete":
        train_s = num((m.get("wall_s") or {}).get("train")) if isinstance(m.get("wall_s"), dict) else None
        q.append(("train time", num(dig(est, "time", "hours")), train_s / 3600 if train_s else None, "h"))
        q.append(("cost", num(dig(est, "cost", "usd")), num(m.get("usd")), "$"))
    return q


def _show(v: float | None, unit: str) -> str:
    return {"GiB": gib, "h": duration, "$": usd}[unit](v)


def calibration(ctx: Context) -> list:
    out: list = [Heading("Advisor calibration")]
    mem_note = (
        "On the CPU the measured peak of live tensor bytes compares with the estimate's allocated GiB, "
        "and process RSS with its device GiB."
        if ctx.is_cpu
        else "allocated/reserved compare with torch's max_memory_allocated/max_memory_reserved; device with nvidia-smi."
    )
    out.append(
        Para(
            f"Error = (predicted − measured) / measured. {mem_note} Train time compares with the "
            "measured training wall time; cost with the measured dollars of the whole run (load, train, eval)."
        )
    )
    rows, flagged = [], []
    errors: dict[str, list[float]] = {}
    pairs: dict[str, list[tuple[float, float, str]]] = {
        "memory (GiB)": [],
        "train time (h)": [],
        "cost (USD)": [],
    }
    panel = {"GiB": "memory (GiB)", "h": "train time (h)", "$": "cost (USD)"}
    for c in ctx.sweep.cells:
        # a cell's measurement: the mean over its chosen seeds; a pruned cell's peaks so far
        trials = c.chosen or [t for t in c.trials if t.status == "pruned"][:1]
        if not trials or not trials[0].estimate:
            continue
        name = label(c.method, c.r, c.rows) + (f" (mean of {len(trials)} seeds)" if len(trials) > 1 else "")
        per_trial = [_quantities(t, ctx.is_cpu) for t in trials]
        for k, (q, pred, _, unit) in enumerate(per_trial[0]):
            vals = [qs[k][2] for qs in per_trial if qs[k][2] is not None]
            meas = sum(vals) / len(vals) if vals else None
            if pred is None or meas is None or pred <= 0 or meas <= 0:  # 0 = rounded away
                continue
            err = (pred - meas) / meas
            errors.setdefault(q, []).append(err)
            mark = " !" if abs(err) > OFF_BY else ""
            rows.append([name, q, _show(pred, unit), _show(meas, unit), signed_pct(err) + mark])
            pairs[panel[unit]].append((pred, meas, c.method))
            if mark:
                flagged.append(
                    f"{name}: {q} predicted {_show(pred, unit)}, measured {_show(meas, unit)} ({signed_pct(err)})."
                )
    if not rows:
        return out + [Para("No cell has both an estimate and a measurement yet.")]
    out.append(
        Table(
            ["Quantity", "Cells", "Median error", f"Within {pct(OFF_BY)}", "Worst"],
            [
                [
                    q,
                    str(len(e)),
                    signed_pct(sorted(e)[len(e) // 2]),
                    f"{sum(abs(x) <= OFF_BY for x in e)} of {len(e)}",
                    signed_pct(max(e, key=abs)),
                ]
                for q, e in errors.items()
            ],
            "lrrrr",
        )  # fmt: skip
    )
    out.append(Table(["Cell", "Quantity", "Predicted", "Measured", "Error"], rows, "llrrr"))
    if flagged:
        out.append(Para(f"Estimates off by more than {pct(OFF_BY)} (marked !):", note=True))
        shown = flagged[:MAX_FLAGGED]
        more = len(flagged) - len(shown)
        out.append(Bullets(shown + ([f"… and {more} more, marked ! in the table."] if more else [])))
    else:
        out.append(Para(f"Every estimate was within {pct(OFF_BY)} of the measurement."))
    path = plots.calibration(pairs, ctx.plots_dir / "calibration.png")
    if path:
        out.append(
            Figure(
                path,
                f"plots/{path.name}",
                "Predicted vs measured per cell, log-log; y = x with a ±15 % band.",
            )
        )
    return out

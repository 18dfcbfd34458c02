"""Report section 4: the advisor's estimates against what was measured, per cell."""

from __future__ import annotations

from reports import plots
from reports.context import Context
from reports.doc import Bullets, Figure, Heading, Para, Table
from reports.fmt import duration, gib, label, pct, signed_pct, usd
from reports.records import Trial, dig, num

OFF_BY = 0.15  # estimates off by more than this share of the measured value are called out


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
    pairs: dict[str, list[tuple[float, float, str]]] = {
        "memory (GiB)": [],
        "train time (h)": [],
        "cost (USD)": [],
    }
    panel = {"GiB": "memory (GiB)", "h": "train time (h)", "$": "cost (USD)"}
    for c in ctx.sweep.cells:
        for t in c.trials:
            if t.status not in ("complete", "pruned") or not t.estimate:
                continue
            name = label(t.method, t.r, t.rows) + (f" · seed {t.seed}" if len(c.trials) > 1 else "")
            for q, pred, meas, unit in _quantities(t, ctx.is_cpu):
                if pred is None or meas is None or pred <= 0 or meas <= 0:  # 0 = rounded away
                    continue
                err = (pred - meas) / meas
                mark = " !" if abs(err) > OFF_BY else ""
                rows.append([name, q, _show(pred, unit), _show(meas, unit), signed_pct(err) + mark])
                pairs[panel[unit]].append((pred, meas, t.method))
                if mark:
                    flagged.append(
                        f"{name}: {q} predicted {_show(pred, unit)}, measured {_show(meas, unit)} ({signed_pct(err)})."
                    )
    if not rows:
        return out + [Para("No cell has both an estimate and a measurement yet.")]
    out.append(Table(["Cell", "Quantity", "Predicted", "Measured", "Error"], rows, "llrrr"))
    if flagged:
        out.append(Para(f"Estimates off by more than {pct(OFF_BY)} (marked !):", note=True))
        out.append(Bullets(flagged))
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

"""Report sections 1–3: the recommendation, quality, cost and resources."""

from __future__ import annotations

from pathlib import Path

from reports import plots, tables
from reports.context import Context
from reports.doc import Block, Bullets, Figure, Heading, Para, Table
from reports.fmt import DASH, duration, gib, label, pct, rate, scrub, usd
from reports.fmt import loss as fmt_loss
from reports.recommend import gain_fraction
from reports.tables import value


def _fig(path: Path | None, caption: str) -> list[Block]:
    return [Figure(path, f"plots/{path.name}", caption)] if path else []


def recommendation(ctx: Context) -> list[Block]:
    out: list[Block] = [Heading("Recommendation"), Para(ctx.rec.text)]
    if ctx.rec.rule:
        out.append(
            Para(
                f"How it was decided: the {ctx.rec.rule}. Quality is eval loss on the fixed validation split."
            )
        )
    return out


def _metric_name(ctx: Context) -> str | None:
    m = (ctx.sweep.config.get("train") or {}).get("metric", "exact_match")
    return None if m == "none" else str(m).replace("_", " ").capitalize()


def _full_statuses(ctx: Context) -> str:
    return ", ".join(sorted({c.status for c in ctx.cells if c.method == "full"}))


def quality(ctx: Context) -> list[Block]:
    sw, rec = ctx.sweep, ctx.rec
    metric = _metric_name(ctx)
    out: list[Block] = [Heading("Quality")]
    base = sw.baseline_loss
    if base is not None:
        m = (
            f", {metric.lower()} {pct(sw.baseline_metric, 1)}"
            if metric and sw.baseline_metric is not None
            else ""
        )
        out.append(Para(f"Untrained base model: eval loss {base:.3f}{m}."))
        ref = rec.reference
        if ref is not None:
            whose = (
                f"full fine-tuning's ({ref.label})"
                if rec.reference_is_full
                else f"the best cell's ({ref.label})"
            )
            why = (
                ""
                if rec.reference_is_full
                else (
                    f" Full fine-tuning has no completed cell ({_full_statuses(ctx)}), so the reference is the best cell."
                    if any(c.method == "full" for c in ctx.cells)
                    else " There is no full fine-tuning in this sweep, so the reference is the best cell."
                )
            )
            out.append(
                Para(f"Gain = (base − cell) / (base − reference): the share of {whose} improvement.{why}")
            )
    else:
        b = sw.baseline
        if b is None:
            what = "No baseline record (trials/baseline.json)"
        elif b.status in ("running", "pending"):
            what = "The untrained base is still being measured"
        else:
            why = f" ({scrub(b.reason)})" if b.reason else ""
            what = f"The baseline measurement of the untrained base ended {b.status}{why}"
        out.append(Para(f"{what}: gains cannot be computed; cells are compared on eval loss.", note=True))
    tuned = any(c.lr_tuned for c in ctx.cells)
    fields = {c.configuration: tables.field_means(ctx.table, c.configuration) for c, _ in ctx.pairs}
    names = list(dict.fromkeys(k for f in fields.values() for k in f))
    headers = (
        ["Cell", "Status", "Eval loss"]
        + ([metric] if metric else [])
        + ([f"{k.replace('_', ' ')} acc." for k in names] if metric else [])
        + ["Share of gain"]
        + (["Best lr"] if tuned else [])
    )
    rows = []
    for c, r in ctx.pairs:
        row = [r.label, c.status_label, fmt_loss(r.loss, r.std, len(r.eval_losses))]
        if metric:
            row.append(pct(r.metric, 1))
            row.extend(pct(fields[c.configuration].get(k), 0) for k in names)
        row.append(pct(gain_fraction(r, rec.reference, base), 0))
        if tuned:
            row.append(f"{c.lr:.1e}" if c.n and c.lr else DASH)
        rows.append(row)
    out.append(Table(headers, rows, "ll" + "r" * (len(headers) - 2)))
    if any(r.std is not None for r in ctx.results):
        out.append(Para("Eval loss is mean ± sample standard deviation over n seeds."))
    if metric and names:
        out.append(
            Para(
                f"{metric} scores the whole generated answer; the per-field columns ({', '.join(names)}) "
                "score each field of the JSON answer on its own (mean over seeds): partial learning that "
                "exact match cannot show."
            )
        )
    out.append(Heading("Quality vs dataset size", 3))
    out.extend(_trend(ctx, "rows") or [Para("The sweep has one dataset size: no comparison.")])
    pts = ctx.points()
    out.extend(
        _fig(
            plots.quality_vs(pts, "rows", base, ctx.plots_dir / "quality_vs_rows.png"),
            "Eval loss vs training rows, one line per method and rank (dotted: untrained base).",
        )
    )
    out.append(Heading("Quality vs rank", 3))
    out.extend(_trend(ctx, "r") or [Para("The sweep has one LoRA rank: no comparison.")])
    out.extend(
        _fig(
            plots.quality_vs(pts, "r", base, ctx.plots_dir / "quality_vs_rank.png"),
            "Eval loss vs LoRA rank, one line per method and dataset size (dashed: full fine-tuning).",
        )
    )
    return out


def _trend(ctx: Context, axis: str) -> list[Block]:
    """Smallest vs largest value of `axis` within each series (reports.tables.trends), as sentences."""
    base = ctx.sweep.baseline_loss
    items = []
    for t in tables.trends(ctx.table, axis).itertuples(index=False):
        method, r, extra = str(t.method), value(t.r), str(t.extra or "")
        r = int(r) if isinstance(r, float) and r.is_integer() else r  # "r=4", not "r=4.0"
        lo, hi, lo_loss, hi_loss = value(t.lo), value(t.hi), float(t.lo_loss), float(t.hi_loss)
        name = label(method, None if axis == "r" else r, value(t.rows) if axis == "r" else None, extra)
        what, than = (
            (f"{name}: {lo:,} rows", f"{hi:,} rows") if axis == "rows" else (f"{name}: r={lo}", f"r={hi}")
        )
        if base is not None and base > hi_loss and base > lo_loss:
            share = (base - lo_loss) / (base - hi_loss)
            items.append(
                f"{what} reaches {pct(share, 0)} of the gain of {than} (eval loss {lo_loss:.3f} vs {hi_loss:.3f})."
            )
        else:
            items.append(f"{what} has eval loss {lo_loss:.3f} vs {hi_loss:.3f} with {than}.")
    if not items:
        return []
    own = (ctx.sweep.config.get("data") or {}).get("path") or any(
        str(o).lstrip("+~").startswith("data.path=") for o in ctx.sweep.meta.get("overrides") or []
    )
    mine = "your data" if own else "the sweep's data"
    return [Para(f"Measured on {mine}:"), Bullets(items)]


def cost(ctx: Context) -> list[Block]:
    out: list[Block] = [Heading("Cost and resources")]
    cap = (
        "each cell against its own card's usable memory"
        if not ctx.one_card
        else f"{gib(ctx.capacity_gib)} usable on {ctx.gpu_name}"
        if ctx.capacity_gib
        else f"capacity of {ctx.gpu_name} unknown"
    )
    price = next(
        (
            (t.estimate or {}).get("cost")
            for t in ctx.sweep.records
            if ((t.estimate or {}).get("cost") or {}).get("usd_per_gpu_hour")
        ),
        None,
    )
    price_s = (
        (
            f" at {usd(price['usd_per_gpu_hour'])} per {'hour' if ctx.is_cpu else 'GPU-hour'} ({price.get('price_source') or 'catalog'}"
            f"{', ' + str(price['price_as_of']) if price.get('price_as_of') else ''})"
        )
        if price and ctx.one_card
        else ""
    )
    out.append(
        Para(
            f"Peak memory is {ctx.peak_what} ({cap}). Wall time (load, train, eval) and dollars are "
            f"measured per run (one seed){price_s}."
        )
    )
    rows = []
    for (c, r), p, cap_i in zip(ctx.pairs, ctx.points(), ctx.capacities, strict=True):
        share = pct(p.peak_gib / cap_i, 0) if p.peak_gib and cap_i else DASH
        rows.append(
            [
                r.label,
                c.status_label,
                gib(c.static_gib),
                gib(p.peak_gib),
                share,
                duration(r.hours),
                usd(r.usd),
                rate(c.tokens_per_s, "tokens/s"),
            ]
        )
    out.append(
        Table(
            [
                "Cell",
                "Status",
                "Static memory",
                "Peak memory",
                "Of card",
                "Wall time",
                "USD per run",
                "Throughput",
            ],
            rows,
            "ll" + "r" * 6,
        )
    )
    out.append(
        Para(
            "Static memory is what the method keeps for the whole run, measured from the real tensors after "
            "the first optimizer step: weights (4-bit storage and quantization state for QLoRA), gradients "
            "and optimizer state. It orders full > LoRA > QLoRA by construction of the methods; the peak adds "
            "activations, logits and temporaries, and on a CPU the process RSS also holds the Python and "
            "library footprint (~0.5 GiB), so for small models the peaks can come out in any order. "
            "bitsandbytes' CPU path dequantizes each 4-bit weight into a temporary 16-bit copy per matmul, "
            "which QLoRA's peak includes."
            if ctx.is_cpu
            else "Static memory is what the method keeps for the whole run, measured from the real tensors "
            "after the first optimizer step: weights (4-bit storage and quantization state for QLoRA), "
            "gradients and optimizer state; the peak adds activations, logits and temporaries."
        )
    )
    pts = ctx.points()
    out.extend(
        _fig(
            plots.memory(
                pts,
                ctx.capacity_gib if ctx.one_card else None,
                ctx.gpu_name,
                ctx.peak_what,
                ctx.plots_dir / "memory.png",
            ),
            f"Measured peak memory per cell; the dashed line is {ctx.gpu_name}'s usable memory."
            if ctx.one_card
            else "Measured peak memory per cell (the cells ran on different cards: see Of card).",
        )
    )
    by_cell = {c.configuration: p for c, p in zip(ctx.cells, pts, strict=True)}
    front = [by_cell[k] for k in tables.pareto(ctx.table).index]
    if front:
        out.append(
            Para(
                "Pareto frontier (no other cell is both cheaper and better): "
                + "; ".join(f"{p.label} ({usd(p.usd)}, {p.loss:.3f})" for p in front)
                + "."
            )
        )
    out.extend(
        _fig(
            plots.cost_quality(
                [p for p in pts if p.status == "complete"], front, ctx.plots_dir / "cost_quality.png"
            ),
            "Cost per run vs eval loss; the line marks the Pareto frontier.",
        )
    )
    return out

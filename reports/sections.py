"""Report sections 1–3: the recommendation, quality, cost and resources."""

from __future__ import annotations

from reports import plots
from reports.context import Context
from reports.doc import Bullets, Figure, Heading, Para, Table
from reports.fmt import DASH, duration, gib, label, pct, rate, scrub, usd
from reports.fmt import loss as fmt_loss
from reports.recommend import CellResult, gain_fraction


def _fig(path, caption: str) -> list:
    return [Figure(path, f"plots/{path.name}", caption)] if path else []


def recommendation(ctx: Context) -> list:
    out: list = [Heading("Recommendation"), Para(ctx.rec.text)]
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


def _full_statuses(sw) -> str:
    return ", ".join(sorted({c.status for c in sw.cells if c.method == "full"}))


def quality(ctx: Context) -> list:
    sw, rec = ctx.sweep, ctx.rec
    metric = _metric_name(ctx)
    out: list = [Heading("Quality")]
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
                    f" Full fine-tuning has no completed cell ({_full_statuses(sw)}), so the reference is the best cell."
                    if any(c.method == "full" for c in sw.cells)
                    else " There is no full fine-tuning in this sweep, so the reference is the best cell."
                )
            )
            out.append(
                Para(f"Gain = (base − cell) / (base − reference): the share of {whose} improvement.{why}")
            )
    else:
        b = sw.baseline or {}
        if not b:
            what = "No baseline record (trials/baseline.json)"
        elif b.get("status") in ("running", "pending"):
            what = "The untrained base is still being measured"
        else:
            why = f" ({scrub(str(b['reason']))})" if b.get("reason") else ""
            what = f"The baseline measurement of the untrained base ended {b.get('status') or 'without a loss'}{why}"
        out.append(Para(f"{what}: gains cannot be computed; cells are compared on eval loss.", note=True))
    tuned = any(c.lr_tuned for c in sw.cells)
    headers = (
        ["Cell", "Status", "Eval loss"]
        + ([metric] if metric else [])
        + ["Share of gain"]
        + (["Best lr"] if tuned else [])
    )
    rows = []
    for c, r in ctx.pairs:
        row = [r.label, c.status_label, fmt_loss(r.loss, r.std, len(r.eval_losses))]
        if metric:
            row.append(pct(r.metric, 1))
        row.append(pct(gain_fraction(r, rec.reference, base), 0))
        if tuned:
            row.append(f"{c.chosen[0].lr:.1e}" if c.chosen and c.chosen[0].lr else DASH)
        rows.append(row)
    out.append(Table(headers, rows, "ll" + "r" * (len(headers) - 2)))
    if any(r.std is not None for r in ctx.results):
        out.append(Para("Eval loss is mean ± sample standard deviation over n seeds."))
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


def _trend(ctx: Context, axis: str) -> list:
    """Smallest vs largest value of `axis` within each series, as sentences."""
    base = ctx.sweep.baseline_loss
    series: dict[tuple, list[CellResult]] = {}
    for r in ctx.results:
        if r.loss is None or (axis == "r" and r.method == "full"):
            continue
        key = (r.method, r.rows, r.extra) if axis == "r" else (r.method, r.r, r.extra)
        series.setdefault(key, []).append(r)
    items = []
    for g in series.values():
        g = sorted((r for r in g if getattr(r, axis) is not None), key=lambda r: getattr(r, axis))
        if len(g) < 2:
            continue
        lo, hi = g[0], g[-1]
        name = label(lo.method, None if axis == "r" else lo.r, lo.rows if axis == "r" else None, lo.extra)
        if axis == "rows":
            what = f"{name}: {lo.rows:,} rows"
            than = f"{hi.rows:,} rows"
        else:
            what = f"{name}: r={lo.r}"
            than = f"r={hi.r}"
        if base is not None and base > hi.loss and base > lo.loss:
            share = (base - lo.loss) / (base - hi.loss)
            items.append(
                f"{what} reaches {pct(share, 0)} of the gain of {than} (eval loss {lo.loss:.3f} vs {hi.loss:.3f})."
            )
        else:
            items.append(f"{what} has eval loss {lo.loss:.3f} vs {hi.loss:.3f} with {than}.")
    if not items:
        return []
    own = (ctx.sweep.config.get("data") or {}).get("path") or any(
        str(o).lstrip("+~").startswith("data.path=") for o in ctx.sweep.meta.get("overrides") or []
    )
    mine = "your data" if own else "the sweep's data"
    return [Para(f"Measured on {mine}:"), Bullets(items)]


def _static_gib(t) -> float | None:
    """Measured weights + gradients + optimizer state (GiB), from the runner's static_bytes."""
    sb = t.measured.get("static_bytes") or {}
    parts = [sb.get(k) for k in ("weights", "gradients", "optimizer")]
    return sum(parts) / 2**30 if all(isinstance(x, (int, float)) for x in parts) else None


def cost(ctx: Context) -> list:
    out: list = [Heading("Cost and resources")]
    cap = (
        "each cell against its own card's usable memory"
        if not ctx.one_card
        else f"{gib(ctx.capacity_gib)} usable on {ctx.gpu_name}"
        if ctx.capacity_gib
        else f"capacity of {ctx.gpu_name} unknown"
    )
    price = next(
        (
            t.estimate.get("cost")
            for t in ctx.sweep.trials
            if (t.estimate.get("cost") or {}).get("usd_per_gpu_hour")
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
    for (c, r), p in zip(ctx.pairs, ctx.points(), strict=True):
        cap_i = ctx.capacities[len(rows)]
        share = pct(p.peak_gib / cap_i, 0) if p.peak_gib and cap_i else DASH
        tps = c.mean(lambda t: t.measured.get("tokens_per_s"))
        static = c.mean(_static_gib)
        rows.append(
            [
                r.label,
                c.status_label,
                gib(static),
                gib(p.peak_gib),
                share,
                duration(r.hours),
                usd(r.usd),
                rate(tps, "tokens/s"),
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
    front = plots.pareto([p for p in pts if p.status == "complete"])
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
                [p for p in pts if p.status == "complete"], ctx.plots_dir / "cost_quality.png"
            ),
            "Cost per run vs eval loss; the line marks the Pareto frontier.",
        )
    )
    return out

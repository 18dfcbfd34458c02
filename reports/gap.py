"""Report section: why the adapters trail full fine-tuning, from what this sweep measured.

Shown when full fine-tuning is the reference and the best adapter configuration at the reference's
dataset size reaches less than CLOSE of its gain. Each point is a measurement of this sweep, never a
prior: the gain against the rank (does a larger rank recover the gap?), the eval curve (were the
adapters still improving when training stopped, and full fine-tuning not?), the learning rates (tuned
or one fixed rate), the share of parameters trained. What the sweep did not vary is said as such, with
the axis that would measure it.
"""

from __future__ import annotations

from advisor.config.methods import METHOD_NAMES
from reports.context import Cell, Context
from reports.doc import Block, Bullets, Heading, Para
from reports.fmt import label, pct
from reports.recommend import CellResult, gain_fraction

CLOSE = 0.9  # an adapter reaching this share of full fine-tuning's gain does not trail
ADAPTERS = tuple(m for m in METHOD_NAMES if m != "full")


def late_drop(ctx: Context, cell: Cell) -> tuple[float, float, float, float] | None:
    """(fraction a, fraction b, loss at a, loss at b) averaged over the configuration's chosen records:
    b the last eval, a the eval nearest half of b. None without two evals."""
    points = []
    by_id = ctx.sweep.by_id  # (a dict built per access)
    for cid in cell.chosen_ids:
        rec = by_id.get(cid)
        curve = [p for p in ((rec.measured or {}).get("eval_curve") or []) if len(p) >= 3] if rec else []
        if len(curve) < 2:
            continue
        end = curve[-1]
        mid = min(curve[:-1], key=lambda p: abs(float(p[1]) - float(end[1]) / 2))
        points.append((float(mid[1]), float(end[1]), float(mid[2]), float(end[2])))
    if not points:
        return None
    fa, fb, la, lb = (sum(col) / len(points) for col in zip(*points, strict=True))
    return fa, fb, la, lb


def _rank_points(rows: list[tuple[Cell, CellResult, float]]) -> list[str]:
    """Per adapter method with two or more ranks: how much of the gap the largest rank recovered."""
    out = []
    for method in ADAPTERS:
        ranked = sorted(
            ((c.r, g) for c, _, g in rows if c.method == method and c.r is not None), key=lambda t: t[0]
        )
        if len(ranked) < 2:
            continue
        (r_lo, g_lo), (r_hi, g_hi) = ranked[0], ranked[-1]
        steps = ", ".join(f"r={r} {pct(g, 0)}" for r, g in ranked)
        missing = 1 - g_lo
        recovered = (g_hi - g_lo) / missing if missing > 0 else 0.0
        name = label(method, None, None)
        if recovered >= 0.5:
            verdict = f"rank limits {name} here: a larger r is worth a cell"
        else:
            verdict = f"a larger rank alone would not close the gap ({r_hi / r_lo:g}× the rank recovered {pct(max(recovered, 0), 0)} of it)"
        out.append(f"Rank: {name} reaches {steps} of full fine-tuning's gain — {verdict}.")
    return out


def _curve_points(ctx: Context, ref: Cell, rows: list[tuple[Cell, CellResult, float]]) -> list[str]:
    """Were the adapters still improving when training stopped, and at that pace how many more steps
    would reach full fine-tuning's loss (a straight line through the eval nearest half-way and the last:
    a lower bound, since loss curves flatten)."""
    full = late_drop(ctx, ref)
    if full is None:
        return []
    target = full[3]
    items, needs = [], []
    for c, r, _ in rows:
        d = late_drop(ctx, c)
        if d is None:
            continue
        fa, fb, la, lb = d
        pace = (la - lb) / (fb - fa) if fb > fa else 0.0  # loss per whole run of training
        if pace > 0 and lb > target:
            times = (fb + (lb - target) / pace) / fb
            needs.append(times)
            items.append(
                f"{r.label} {la:.3f} → {lb:.3f} (≥ {times:.1f}× the steps to reach {target:.3f} at that pace)"
            )
        else:
            items.append(f"{r.label} {la:.3f} → {lb:.3f} (no longer improving)")
    if not items:
        return []
    fa, fb, la, lb = full
    epochs = (ctx.sweep.config.get("train") or {}).get("epochs")
    steps = f"train.epochs, {epochs} here" if epochs else "train.epochs"
    if needs and min(needs) <= 1.5:
        verdict = f"more steps ({steps}) would likely close much of the gap"
    elif needs:
        verdict = (
            f"the adapters were still improving, but even at an undiminished pace more steps ({steps}) "
            f"would close the gap only at {min(needs):.1f}× the training or more"
        )
    else:
        verdict = "the adapters had stopped improving: more steps would not close the gap"
    return [
        f"Still learning? Eval loss from {pct(fa, 0)} to {pct(fb, 0)} of training: full fine-tuning "
        f"{la:.3f} → {lb:.3f}; {'; '.join(items)} — {verdict}."
    ]


def _rate_point(ref: Cell, rows: list[tuple[Cell, CellResult, float]]) -> str:
    cells = [ref] + [c for c, _, _ in rows]
    rates = ", ".join(f"{label(c.method, c.r, None)} {c.lr:.0e}" for c in cells if c.lr)
    if any(c.lr_tuned for c in cells):
        return f"Learning rate: tuned per cell by this sweep (best: {rates})."
    return (
        f"Learning rate: one rate per method ({rates}), not tuned by this sweep — an adapter held back by "
        "its rate would look the same (sweep.lr_trials=N tries N rates per cell)."
    )


def _share_point(ref: Cell, rows: list[tuple[Cell, CellResult, float]]) -> str | None:
    if not ref.trainable_params:
        return None
    parts = [
        f"{label(c.method, c.r, None)} {pct(c.trainable_params / ref.trainable_params, 1)}"
        for c, _, _ in rows
        if c.trainable_params
    ]
    if not parts:
        return None
    return (
        f"Trained parameters, as a share of full fine-tuning's {ref.trainable_params:,.0f}: "
        f"{', '.join(dict.fromkeys(parts))} (the embeddings and norms stay frozen)."
    )


def adapters(ctx: Context) -> list[Block]:
    rec, base = ctx.rec, ctx.sweep.baseline_loss
    if not rec.reference_is_full or rec.reference is None or base is None:
        return []
    ref_cell = next((c for c, r in ctx.pairs if r is rec.reference), None)
    if ref_cell is None:
        return []
    rows: list[tuple[Cell, CellResult, float]] = []
    for c, r in ctx.pairs:
        g = gain_fraction(r, rec.reference, base)
        if c.method in ADAPTERS and c.rows == ref_cell.rows and c.extra == ref_cell.extra and g is not None:
            rows.append((c, r, g))
    if not rows or max(g for _, _, g in rows) >= CLOSE:
        return []
    best = max(rows, key=lambda t: t[2])
    head = (
        f"At {ref_cell.rows:,} rows the best adapter, {best[1].label}, reaches {pct(best[2], 0)} of full "
        f"fine-tuning's gain (eval loss {best[1].loss:.3f} vs {rec.reference.loss:.3f}). What this sweep "
        "measured about why:"
        if ref_cell.rows
        else f"The best adapter, {best[1].label}, reaches {pct(best[2], 0)} of full fine-tuning's gain. "
        "What this sweep measured about why:"
    )
    items = _rank_points(rows) + _curve_points(ctx, ref_cell, rows) + [_rate_point(ref_cell, rows)]
    share = _share_point(ref_cell, rows)
    if share:
        items.append(share)
    return [
        Heading("Why the adapters trail full fine-tuning", 3),
        Para(head),
        Bullets(items),
        Para(
            "Not varied by this sweep, so not known from it: more steps (train.epochs) and other target "
            "modules (method.target_modules), both possible matrix axes; trainable embeddings, which "
            "tunewise does not set."
        ),
    ]

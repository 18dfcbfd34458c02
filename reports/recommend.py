"""The recommendation: a pure decision over measured cells (table-tested, no I/O).

The rule, in the spirit of the usual guidance (QLoRA to prototype or when memory-bound, LoRA for
production, full fine-tuning only when LoRA falls short):

1. Candidates are complete cells, within the per-run budget when one is given.
2. Quality is eval loss on the fixed validation split (lower is better). With the untrained base's
   loss B, a cell's *gain* is B − loss; the reference gain is full fine-tuning's (best full cell)
   when full finished, else the best cell's.
3. A cell is *as good as the best* when its gain is within `tolerance_gain` (5 %) of the best
   candidate's gain — or, without a baseline, its loss within `tolerance_loss_rel` (1 %) of the best
   loss — or when it differs from the best by less than the noise: the seed-to-seed standard
   deviation when seeds were repeated, else `noise_gain` (1 %) of the baseline-to-best gain
   (`noise_loss` = 0.005 nats without a baseline).
4. Among those, adapters (LoRA, QLoRA) win over full fine-tuning, then the cheapest per run
   (USD, then hours, then peak memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from advisor.config import methods
from reports.fmt import label, pct, rows_phrase, usd

TOLERANCE_GAIN = 0.05  # a cell within 5 % of the best cell's gain counts as equally good
TOLERANCE_LOSS_REL = 0.01  # without a baseline: within 1 % of the best eval loss
NOISE_GAIN = 0.01  # one seed per cell: differences under 1 % of the baseline-to-best gain are noise
NOISE_LOSS = 0.005  # one seed, no baseline: differences under 0.005 nats of eval loss are noise


@dataclass(frozen=True)
class CellResult:
    """What the decision needs about one cell (per-run numbers; losses one per seed)."""

    method: str  # full | lora | qlora
    r: int | None
    rows: int | None
    status: str
    eval_losses: tuple[float, ...] = ()
    metric: float | None = None  # task metric (exact match, 0..1), higher is better
    usd: float | None = None  # measured dollars per run
    hours: float | None = None  # measured wall-clock hours per run
    peak_gib: float | None = None  # measured peak memory
    reason: str = ""
    extra: str = ""  # other coordinates, for the label
    small_card_fits: bool | None = None  # the advisor says it fits the small card (e.g. 24 GB)
    small_card_usd: float | None = None  # the advisor's per-run cost on that card
    small_card_gib: float | None = None  # the advisor's device memory on that card
    small_card_batch: str = ""  # how it fits there when the sweep's micro-batch does not
    gpu: str = ""  # the card it ran on, when the sweep has a gpu axis (else the sweep's card)

    @property
    def loss(self) -> float | None:
        return sum(self.eval_losses) / len(self.eval_losses) if self.eval_losses else None

    @property
    def std(self) -> float | None:
        n = len(self.eval_losses)
        if n < 2:
            return None
        m = self.loss or 0.0
        return math.sqrt(sum((x - m) ** 2 for x in self.eval_losses) / (n - 1))

    @property
    def label(self) -> str:
        return label(self.method, self.r, self.rows, self.extra)


@dataclass
class Recommendation:
    pick: CellResult | None
    best: CellResult | None  # lowest eval loss among candidates
    reference: CellResult | None  # whose gain is 100 %: best full cell, else the best cell
    reference_is_full: bool
    within_noise: bool  # the pick differs from the best by less than the noise
    sentences: list[str] = field(default_factory=list)
    rule: str = ""  # the tolerance and noise rule as applied, for the report

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def gain_fraction(cell: CellResult, reference: CellResult | None, baseline: float | None) -> float | None:
    """(baseline − cell) / (baseline − reference): the share of the reference's improvement."""
    if baseline is None or reference is None or cell.loss is None or reference.loss is None:
        return None
    denom = baseline - reference.loss
    return (baseline - cell.loss) / denom if denom > 0 else None


def _cost_key(c: CellResult) -> tuple[float, float, float]:
    inf = float("inf")
    return (c.usd if c.usd is not None else inf, c.hours if c.hours is not None else inf, c.peak_gib or inf)


def _noise(a: CellResult, b: CellResult, baseline: float | None) -> tuple[float, str]:
    stds = [s for s in (a.std, b.std) if s is not None]
    if stds:
        return max(stds), "their seed-to-seed spread"
    if baseline is not None and b.loss is not None and baseline > b.loss:
        margin = NOISE_GAIN * (baseline - b.loss)
        return margin, f"the noise margin ({pct(NOISE_GAIN)} of the baseline-to-best gain)"
    return NOISE_LOSS, f"the noise margin ({NOISE_LOSS} nats of eval loss)"


def recommend(
    cells: list[CellResult],
    baseline: float | None,
    gpu_name: str,
    budget_usd: float | None = None,
    budget_hours: float | None = None,
    running: tuple[int, int] | None = None,
    small_card: str = "",
) -> Recommendation:
    """Pick a cell. `running` = (finished, planned) while the sweep still runs."""
    done = [c for c in cells if c.status == "complete" and c.loss is not None]
    fulls = [c for c in done if c.method == "full"]
    in_budget = [
        c
        for c in done
        if (budget_usd is None or (c.usd is not None and c.usd <= budget_usd))
        and (budget_hours is None or (c.hours is not None and c.hours <= budget_hours))
    ]
    if not in_budget:
        return _nothing(cells, done, budget_usd, budget_hours, running)
    best = min(in_budget, key=lambda c: c.loss or 0.0)
    best_all = min(done, key=lambda c: c.loss or 0.0)
    reference = min(fulls, key=lambda c: c.loss or 0.0) if fulls else best_all
    assert best.loss is not None

    def as_good(c: CellResult) -> bool:
        assert c.loss is not None and best.loss is not None
        if baseline is not None and baseline > best.loss:
            within = (baseline - c.loss) >= (1 - TOLERANCE_GAIN) * (baseline - best.loss)
        else:
            within = c.loss <= best.loss * (1 + TOLERANCE_LOSS_REL)
        return within or abs(c.loss - best.loss) < _noise(c, best, baseline)[0]

    good = [c for c in in_budget if as_good(c)]
    adapters = [c for c in good if c.method != "full"]
    pick = min(adapters or good, key=_cost_key)
    noise, noise_what = _noise(pick, best, baseline)
    within_noise = pick is not best and abs((pick.loss or 0) - best.loss) < noise
    rule = (
        f"cheapest cell within {pct(TOLERANCE_GAIN)} of the best cell's gain over the base model"
        if baseline is not None
        else f"cheapest cell within {pct(TOLERANCE_LOSS_REL)} of the best eval loss (no baseline measured)"
    ) + f", or closer to the best than {noise_what}; adapters before full fine-tuning"
    rec = Recommendation(pick, best, reference, bool(fulls), within_noise, rule=rule)
    rec.sentences = _sentences(
        rec, cells, done, baseline, gpu_name, budget_usd, budget_hours, running, small_card
    )
    return rec


def _nothing(cells, done, budget_usd, budget_hours, running) -> Recommendation:
    if done:
        limits = " and ".join(
            x
            for x in (
                f"{usd(budget_usd)}" if budget_usd else "",
                f"{budget_hours:g} h" if budget_hours else "",
            )
            if x
        )
        cheapest = min(done, key=_cost_key)
        s = (
            f"No finished cell fits the per-run budget of {limits}; the cheapest, {cheapest.label}, "
            f"cost {usd(cheapest.usd)} per run."
        )
    elif running:
        s = f"No recommendation yet: {running[0]} of {running[1]} cells finished and none completed training."
    elif cells:
        s = "No recommendation: no cell completed training (see Skipped and failed cells for the reasons)."
    else:
        s = "No recommendation: the sweep has no trial records yet."
    return Recommendation(None, None, None, False, False, [s], rule="")


def _sentences(
    rec, cells, done, baseline, gpu_name, budget_usd, budget_hours, running, small_card
) -> list[str]:
    pick, best, ref = rec.pick, rec.best, rec.reference
    max_rows = max((c.rows for c in cells if c.rows), default=None)
    out = []
    if running:
        out.append(f"Provisional ({running[0]} of {running[1]} cells finished):")
    what = f"Use {_name(pick)} with {rows_phrase(pick.rows, max_rows)}"
    frac = gain_fraction(pick, ref, baseline)
    ref_name = "full fine-tuning's" if rec.reference_is_full else "the best cell's"
    if pick is ref:
        quality = f"the lowest eval loss measured, {pick.loss:.3f}" + (
            f" (untrained base {baseline:.3f})" if baseline is not None else ""
        )
    elif frac is None:
        quality = f"eval loss {pick.loss:.3f} vs {ref.loss:.3f} for {ref.label}"
    else:
        quality = f"{pct(frac, 0)} of {ref_name} gain"
    cost = ""
    on, ref_on = pick.gpu or gpu_name, ref.gpu or gpu_name
    if pick is not ref and pick.usd is not None and ref.usd:
        pair = (
            f"{usd(pick.usd)} vs {usd(ref.usd)} per run on {on}"
            if on == ref_on
            else f"{usd(pick.usd)} on {on} vs {usd(ref.usd)} on {ref_on}, per run"
        )
        cost = f" at {pct(pick.usd / ref.usd, 0)} of its cost ({pair})"
    elif pick.usd is not None:
        cost = f" for {usd(pick.usd)} per run on {on}"
    out.append(f"{what}: {quality}{cost}.")
    if rec.within_noise:
        _, noise_what = _noise(pick, best, baseline)
        out.append(
            f"It differs from the lowest loss ({best.label}, {best.loss:.3f}) by less than {noise_what}, "
            f"so the cheaper one is recommended."
        )
    if best is not min(done, key=lambda c: c.loss or 0.0):
        top = min(done, key=lambda c: c.loss or 0.0)
        limits = ", ".join(
            x
            for x in (
                f"{usd(budget_usd)}" if budget_usd else "",
                f"{budget_hours:g} h" if budget_hours else "",
            )
            if x
        )
        out.append(
            f"The lowest loss overall, {top.label}, is over the per-run budget ({limits}: {usd(top.usd)})."
        )
    blocked = {c.method for c in cells if c.status in ("oom", "infeasible")} - {c.method for c in done}
    relative = (
        " (gains are relative to the best cell)" if not rec.reference_is_full and baseline is not None else ""
    )
    if blocked:
        order = list(methods.METHODS)
        names = " and ".join(
            methods.title(m)
            for m in sorted(blocked, key=lambda m: order.index(m) if m in order else len(order))
        )
        how = sorted(
            {
                c.status.replace("oom", "out of memory")
                for c in cells
                if c.method in blocked and c.status in ("oom", "infeasible")
            }
        )
        out.append(
            f"{names} did not fit on {gpu_name} ({' / '.join(how)})"
            + (", so gains are relative to the best cell" if relative and "full" in blocked else "")
            + "."
        )
        relative = "" if "full" in blocked else relative
    if relative:
        why = "did not finish" if any(c.method == "full" for c in cells) else "is not in this sweep"
        out.append(f"Full fine-tuning {why}, so gains are relative to the best cell.")
    if small_card and pick.small_card_fits:
        batch = f" with {pick.small_card_batch}" if pick.small_card_batch else ""
        price = f" for an estimated {usd(pick.small_card_usd)} per run" if pick.small_card_usd else ""
        out.append(f"On a {small_card}, the same {_name(pick)} fits{batch}{price} (advisor estimate).")
    elif small_card and pick.small_card_fits is False:
        out.append(_small_card(small_card, done, ref, baseline))
    return out


def _small_card(card: str, done: list[CellResult], ref: CellResult, baseline: float | None) -> str:
    small = [c for c in done if c.small_card_fits]
    if not small:
        sized = [c for c in done if c.small_card_gib is not None]
        if not sized:
            return f"The advisor found no measured configuration that fits a {card}."
        s = min(sized, key=lambda c: c.small_card_gib or 0.0)
        return (
            f"No measured configuration fits a {card}, even at micro-batch 1: the advisor puts the "
            f"smallest, {_name(s)}, at {s.small_card_gib:.1f} GiB."
        )
    s = min(small, key=lambda c: c.loss or 0.0)
    f = gain_fraction(s, ref, baseline)
    reach = f"reaches {pct(f, 0)}" if f is not None else f"reaches eval loss {s.loss:.3f}"
    price = f" for an estimated {usd(s.small_card_usd)}" if s.small_card_usd else ""
    how = f" with {s.small_card_batch}" if s.small_card_batch else ""
    return f"On a {card}, {_name(s)}{how} {reach}{price} (fit and price from the advisor, same global batch)."


def _name(c: CellResult) -> str:
    if c.method == "full":
        return methods.phrase("full") + (f" · {c.extra}" if c.extra else "")
    return label(c.method, c.r, None, c.extra)

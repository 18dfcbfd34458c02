"""The advise verdict in words: the cheapest configuration that fits (within the budget, if one is
given), then per method whether it is possible at all, what it needs on the requested card and where
it is cheapest. Numbers come from the advise document; this module only phrases them.
"""

from __future__ import annotations

from typing import Any

from advisor.config import catalog
from advisor.config.methods import METHODS
from advisor.config.schema import RunConfig
from advisor.estimator import search

LABELS = {name: m.phrase for name, m in METHODS.items()}


def usd_text(usd: float) -> str:
    return f"${usd:,.0f}" if usd >= 100 else f"${usd:,.2f}"


def hours_text(hours: float) -> str:
    return f"{hours:,.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"


def _where(s: dict[str, Any], names: dict[str, str]) -> str:
    return f"{s['gpu_count']}× {names.get(s['gpu'], s['gpu'])}"


def _cost(s: dict[str, Any]) -> str:
    return f"{usd_text(s['usd'])}, {hours_text(s['hours'])}"


def _label(doc: dict[str, Any], m: str) -> str:
    return LABELS[m] + (
        f" r={doc['cheapest'][m]['r']}" if m != "full" and doc["cheapest"][m].get("r") else ""
    )


def _budget_text(cfg: RunConfig) -> str:
    parts = []
    if cfg.budget_usd is not None:
        parts.append(usd_text(cfg.budget_usd))
    if cfg.budget_hours is not None:
        parts.append(f"{cfg.budget_hours:,.4g} h")
    return " and ".join(parts)


def _order(s: dict[str, Any]) -> tuple[float, int, float]:
    return (round(s["usd"], 2), s["gpu_count"], s["hours"])


def verdict(doc: dict[str, Any], cfg: RunConfig) -> str:
    """Two sentences: the cheapest configuration that fits (within the budget, if one is given), then
    per method whether it is possible at all, how many requested cards it needs, and the cheapest card."""
    names = {k: v.get("display_name", k) for k, v in catalog.gpus().items()}
    budget = _budget_text(cfg)
    methods = doc["query"]["methods"]
    best = {m: search.summary(c, c["parallel"]) for m in methods if (c := doc["cheapest"][m])["fits"]}
    pool = {m: doc["cheapest"][m]["cheapest_within_budget"] for m in best} if budget else best
    pool = {m: s for m, s in pool.items() if s is not None}
    if pool:
        m = min(pool, key=lambda m: _order(pool[m]))
        first = (
            f"{'Within ' + budget + ', the' if budget else 'The'} cheapest configuration that fits is "
            f"{_label(doc, m)} on {_where(pool[m], names)} ({_cost(pool[m])})."
        )
    elif best:
        m = min(best, key=lambda m: _order(best[m]))
        first = (
            f"Nothing fits within {budget}: the cheapest configuration that fits is {_label(doc, m)} "
            f"on {_where(best[m], names)} ({_cost(best[m])})."
        )
    else:
        first = f"No method fits any catalog GPU (up to {search.MAX_CHEAPEST_GPUS} cards) at these settings."
    rest = "; ".join(_method_clause(doc, m, names, budget) for m in methods)
    return f"{first} {rest[:1].upper()}{rest[1:]}."


def _method_clause(doc: dict[str, Any], m: str, names: dict[str, str], budget: str) -> str:
    """'LoRA r=16 is possible within $100: needs 3× A100 (…), cheapest 1× MI300X (…)'."""
    label, ch, mg = _label(doc, m), doc["cheapest"][m], doc["min_gpus"][m]
    q = doc["query"]["gpu"]
    here_key = None
    if mg["count"]:
        par = f" with {mg['parallel']}" if mg["count"] > 1 else ""
        here = f"needs {mg['count']}× {q['display_name']}{par} ({_cost(mg)})"
        here_key = (q["name"], mg["count"])
    else:
        here = mg["reason"]
    if not ch["fits"]:
        return f"{label} fits no catalog GPU: {here}"
    shown, status = search.summary(ch, ch["parallel"]), ""
    if budget:
        within = ch["cheapest_within_budget"]
        status = f" is {'' if within else 'not '}possible within {budget}"
        shown = within or shown
    parts = [here]
    if (shown["gpu"], shown["gpu_count"]) == here_key:
        parts[0] += ", the cheapest option"
    else:
        parts.append(f"cheapest {_where(shown, names)} ({_cost(shown)})")
    single = ch["cheapest_single_card"]
    if single is None:
        parts.append("no single card fits")
    elif (single["gpu"], single["gpu_count"]) not in (here_key, (shown["gpu"], shown["gpu_count"])):
        parts.append(f"cheapest single card {names.get(single['gpu'], single['gpu'])} ({_cost(single)})")
    return f"{label}{status}: " + ", ".join(parts)

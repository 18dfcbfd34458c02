"""`tunewise advise`: the advise document (design.md) — estimates per method and rank on the requested
card, the minimum GPU count, the cheapest catalog card, the reverse questions, a budget verdict in
words and the literature quality prior.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from advisor.config import catalog
from advisor.config.checks import method as method_section
from advisor.config.schema import RunConfig
from advisor.errors import Problems
from advisor.estimator import search
from advisor.estimator.quality import quality_prior
from advisor.estimator.verdict import verdict

COMPARE_RANKS = (8, 16, 64)  # ranks shown side by side when the user did not set method.r


def for_method(cfg: RunConfig, method: str, r: int | None = None) -> RunConfig:
    """`cfg` with `method`: lora/qlora keep the adapter settings of an adapter cfg.method (rank r if
    given); otherwise the method's settings are its conf/method/<method>.yaml option's."""
    if method == cfg.method.name and (r is None or method == "full"):
        return cfg
    if method != "full" and cfg.method.is_adapter:
        section = {**dataclasses.asdict(cfg.method), "name": method}
    else:
        section = catalog.load_option("method", method)
    if r is not None and method != "full":
        section["r"] = r
    p = Problems()
    built = method_section(section, p)
    p.raise_if_any()
    return cfg.replace(method=built)


def _merge(row: dict[str, Any], traced: dict[str, Any], cfg: RunConfig) -> dict[str, Any]:
    """`traced` over the analytic `row`, nested dicts (memory, time) merged key by key.

    A trace counts torch's live tensors (allocated) and replays them through the caching-allocator
    model (reserved); memory outside torch (device − reserved: CUDA context, workspaces, paged states)
    stays the analytic model's, added on top, and `fits` is judged again on the resulting device_gib.
    A trace without a reserved figure keeps the analytic slack (reserved − allocated) instead."""
    out = dict(row)
    for k, v in traced.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    alloc = traced.get("memory", {}).get("allocated_gib")
    if alloc is not None:
        mem, was = out["memory"], row["memory"]
        resv = traced["memory"].get("reserved_gib")
        if resv is None or cfg.gpu.is_cpu:  # on a CPU there is no caching allocator: RSS rules
            resv = was["reserved_gib"] + alloc - was["allocated_gib"]
        mem["reserved_gib"] = round(resv, 6)
        mem["device_gib"] = round(resv + was["device_gib"] - was["reserved_gib"], 6)
        out["fits"] = mem["device_gib"] <= cfg.gpu.usable_mib / 1024
    return out


def _stats(cfg: RunConfig) -> Any:
    if not cfg.data.path:
        return None
    from advisor.data.stats import dataset_stats

    return dataset_stats(cfg)


def _query(cfg: RunConfig, methods: tuple[str, ...], ranks: list[int], stats: Any, notes: list[str]) -> dict:
    t = cfg.train
    data: dict[str, Any] = {"path": cfg.data.path}
    if stats is None:
        data.update(rows=cfg.data.rows, avg_tokens=cfg.data.avg_tokens)
    else:  # data.rows caps the training rows taken from the file
        data.update(rows_cap=cfg.data.rows, stats=stats.to_dict())
    m = cfg.model
    return {
        "model": {
            "name": m.name,
            "architecture": m.architecture,
            "hidden_size": m.hidden_size,
            "num_hidden_layers": m.num_hidden_layers,
            "vocab_size": m.vocab_size,
            "max_position_embeddings": m.max_position_embeddings,
        },
        "gpu": {
            "name": cfg.gpu.name,
            "display_name": cfg.gpu.display_name,
            "count": cfg.gpu.count,
            "usable_gib": round(cfg.gpu.usable_gib, 2),
            "bf16_supported": cfg.gpu.bf16_supported,
            "bnb_supported": cfg.gpu.bnb_supported,
        },
        "parallel": cfg.parallel,
        "methods": list(methods),
        "ranks": ranks,
        "data": data,
        "train": {
            "micro_batch_size": t.micro_batch_size,
            "grad_accum": t.grad_accum,
            "global_batch": t.micro_batch_size * t.grad_accum * cfg.gpu.count,
            "seq_len": t.seq_len,
            "epochs": t.epochs,
            "max_steps": t.max_steps,
            "gradient_checkpointing": t.gradient_checkpointing,
            "optimizer": t.optimizer,
            "precision": cfg.precision,
            "attention": t.attention,
            "packing": t.packing,
            "chunked_loss": t.chunked_loss,
        },
        "budget": {"usd": cfg.budget_usd, "hours": cfg.budget_hours, "scope": "per run"},
        "price": dataclasses.asdict(cfg.price),
        "mode": cfg.advisor_mode,
        "notes": notes,
    }


def advise(
    cfg: RunConfig,
    methods: tuple[str, ...],
    given: set[str],
    tracer: Callable[[RunConfig], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The advise document for `cfg` comparing `methods`; `given` = keys the user set (e.g. method.r)."""
    notes = list(cfg.notes)
    adapter_r = for_method(cfg, "lora").method.r  # cfg's rank, or conf/method/lora.yaml's
    assert adapter_r is not None  # an adapter's rank is validated positive
    ranks = [adapter_r] if "method.r" in given else sorted({*COMPARE_RANKS, adapter_r})
    if methods == ("full",):
        ranks = []
    if "qlora" in methods and not cfg.gpu.bnb_supported:
        notes.append(
            f"QLoRA needs bitsandbytes, which does not run on {cfg.gpu.display_name}: no QLoRA rows "
            "for this card (min_gpus/reverse skip it; cheapest searches the cards where it runs)."
        )
    if tracer is not None:
        notes.append(
            "Rows on the requested card are traced (advisor.mode=trace); min_gpus, cheapest and "
            "reverse search with the analytic estimator."
        )
    stats = _stats(cfg)
    est = search.Estimates(stats=stats, calibration=cfg.calibration)

    rows = []
    for m in methods:
        if m == "qlora" and not cfg.gpu.bnb_supported:
            continue
        for r in [None] if m == "full" else ranks:
            c = for_method(cfg, m, r)
            row = est.row(c)
            rows.append(_merge(row, tracer(c), c) if tracer is not None else row)
    notes += [n for n in dict.fromkeys(n for r in rows for n in r.get("notes", ())) if n not in notes]

    min_gpus: dict[str, Any] = {}
    cheapest: dict[str, Any] = {}
    reverse: dict[str, Any] = {}
    for m in methods:
        c = for_method(cfg, m, adapter_r)
        cheapest[m] = _cheapest(est, c)
        if m == "qlora" and not cfg.gpu.bnb_supported:
            min_gpus[m] = {
                "count": None,
                "reason": f"cannot run on {cfg.gpu.display_name} (bitsandbytes 4-bit does not run there)",
            }
            reverse[m] = None
            continue
        min_gpus[m] = search.min_gpus(est, c)
        reverse[m] = _reverse(est, c, min_gpus[m])

    doc = {
        "query": _query(cfg, methods, ranks, stats, notes),
        "estimates": rows,
        "min_gpus": min_gpus,
        "cheapest": cheapest,
        "reverse": reverse,
        "verdict": "",
        "quality_prior": quality_prior(methods),
    }
    doc["verdict"] = verdict(doc, cfg)
    return doc


def _reverse(est: search.Estimates, c: RunConfig, mg: dict[str, Any]) -> dict[str, Any]:
    """The reverse answers on the requested card and count; when nothing fits there even at micro-batch
    1 and the shortest seq_len, on the smallest count that fits the configured run (said in `note`)."""
    here = search.reverse(est, c)
    if here["max_seq_len_micro_batch_1"]["seq_len"] is not None or not mg["count"]:
        return {**here, "note": None}
    at = search.at_count(c, mg["count"], mg["parallel"])
    note = (
        f"nothing fits {c.gpu.count}× {c.gpu.display_name}; answered for {mg['count']}× "
        f"({mg['parallel']}), the smallest count that fits the configured run"
    )
    return {**search.reverse(est, at), "note": note}


def _cheapest(est: search.Estimates, c: RunConfig) -> dict[str, Any]:
    """The cheapest fitting (card, count) as a full row, with the cheapest within budget and the
    cheapest single card beside it."""
    found, skipped = search.candidates(est, c)
    best = search.cheapest(found)
    if best is None:
        return {
            "method": c.method.name,
            "r": c.method.r,
            "fits": False,
            "skipped": skipped,
            "reason": f"fits no catalog GPU at up to {search.MAX_CHEAPEST_GPUS} cards",
        }
    within = search.cheapest(found, within_budget=True)
    single = search.cheapest(found, single_card=True)
    return {
        **est.row(best[1]),
        "parallel": best[0]["parallel"],
        "cheapest_within_budget": within[0] if within else None,
        "cheapest_single_card": single[0] if single else None,
        "skipped": skipped,
    }

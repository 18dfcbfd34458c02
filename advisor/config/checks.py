"""Validation of each section, every problem collected (key, value, what is allowed).

Each function takes one section as a plain dict with every key present (`schema.build` fills missing
keys from conf/ first), checks unknown and missing keys and the types against the dataclass
(`fieldtypes`), then the values, and returns the dataclass — or None when the section is unusable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from advisor.config import fieldtypes, outside
from advisor.config.methods import METHOD_NAMES
from advisor.config.sections import (
    DataConfig,
    GpuConfig,
    MethodConfig,
    ModelConfig,
    Price,
    PriceRow,
    TrainConfig,
)
from advisor.errors import Problems

OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd")
BNB_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
PRECISIONS = ("bf16", "amp_bf16", "amp_fp16", "fp16", "fp32")
ATTENTIONS = ("sdpa", "flash", "eager")
PARALLELS = ("ddp", "fsdp", "zero2", "zero3")
SHARDED_PARALLELS = ("fsdp", "zero2", "zero3")  # FSDP2 in the runner (runners.parallel.group)
SHARDED_OPTIMIZERS = ("adamw", "sgd")  # bitsandbytes' optimizers cannot step FSDP's sharded DTensors
QUANT_TYPES = ("nf4", "fp4")
DATA_FORMATS = ("auto", "instruction", "chat")
ADVISOR_MODES = ("analytic", "trace")
METRICS = ("exact_match", "none")
PRICE_TIERS = ("specialist", "hyperscaler", "marketplace")  # the order the default price looks in
CPU_MEMORY_GB_PER_GIB = 1.073741824


def keys(cls: type, d: dict[str, Any], prefix: str, p: Problems) -> set[str]:
    """Unknown keys, missing keys and wrong types of one section; returns the keys not to check further."""
    names = fieldtypes.hints(cls)
    for k in sorted(set(d) - set(names)):
        p.add(f"{prefix}{k}", d[k], "unknown key", sorted(names))
    missing = [k for k in names if k not in d]
    for k in missing:
        p.extend([f"{prefix}{k}: missing (conf/ and every record written by to_dict() set it)"])
    return fieldtypes.check(cls, d, prefix, p) | set(missing)


def positive(p: Problems, key: str, v: Any, integer: bool = True, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    ok = isinstance(v, int) and not isinstance(v, bool) if integer else isinstance(v, (int, float))
    if not ok or v <= 0:
        p.add(
            key,
            v,
            "must be a positive " + ("integer" if integer else "number") + (" or null" if allow_none else ""),
        )


def _known(d: dict[str, Any], cls: type) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k in fieldtypes.hints(cls)}


def model(d: dict[str, Any], p: Problems, *, read_config_path: bool = True) -> ModelConfig | None:
    """The model section; `model.config_path` (a HF config.json) replaces the architecture fields,
    unless `read_config_path` is False (a resolved record: its fields are what was read)."""
    cp = d.get("config_path")
    if cp and read_config_path:
        path = Path(cp)
        if path.is_dir():
            path = path / "config.json"
        try:
            hf = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested too deeply
            p.add(
                "model.config_path",
                cp,
                f"cannot read a HF config.json ({e.__class__.__name__}: {str(e)[:200]})",
            )
            return None
        if not isinstance(hf, dict):
            p.add("model.config_path", cp, f"a HF config.json holds a JSON object, not a {type(hf).__name__}")
            return None
        d = {**d, **outside.hf_config_to_model_fields(hf, d.get("name") or path.parent.name)}
        d["total_params"] = None
    n = len(p.items)
    bad = keys(ModelConfig, d, "model.", p)
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        if k not in bad:
            positive(p, f"model.{k}", d[k])
    kv, heads, hidden = d.get("num_key_value_heads"), d.get("num_attention_heads"), d.get("hidden_size")
    if isinstance(heads, int) and heads > 0 and not {"num_key_value_heads", "num_attention_heads"} & bad:
        if not isinstance(kv, int) or kv <= 0 or heads % kv:
            p.add(
                "model.num_key_value_heads", kv, f"must be a positive divisor of num_attention_heads={heads}"
            )
        if d.get("head_dim") is None and isinstance(hidden, int) and hidden % heads:
            p.add(
                "model.num_attention_heads",
                heads,
                f"does not divide hidden_size={hidden} (set model.head_dim for such architectures)",
            )
    if "head_dim" not in bad:
        positive(p, "model.head_dim", d["head_dim"], allow_none=True)
    ne, top_k = d.get("num_local_experts"), d.get("num_experts_per_tok")
    if ne is not None and (not isinstance(top_k, int) or top_k <= 0 or top_k > ne):
        p.add("model.num_experts_per_tok", top_k, f"must be between 1 and num_local_experts={ne}")
    if len(p.items) > n:
        return None
    return ModelConfig(**_known(d, ModelConfig))


def method(d: dict[str, Any], p: Problems) -> MethodConfig | None:
    n = len(p.items)
    bad = keys(MethodConfig, d, "method.", p)
    name = d.get("name")
    if "name" not in bad and name not in METHOD_NAMES:
        p.add("method", name, "unknown method", METHOD_NAMES)
    adapter = name in ("lora", "qlora")
    if adapter and "r" not in bad:
        positive(p, "method.r", d["r"])
    if adapter and "alpha" not in bad:
        positive(p, "method.alpha", d["alpha"], integer=False, allow_none=True)
    if "dropout" not in bad and not 0 <= d["dropout"] < 1:
        p.add("method.dropout", d["dropout"], "must be in [0, 1)")
    tm_given = d.get("target_modules")
    tm: str | tuple[str, ...] = ()
    if isinstance(tm_given, str):  # `all-linear`, or names separated by commas
        tm = (
            tm_given
            if tm_given == "all-linear"
            else tuple(s.strip() for s in tm_given.split(",") if s.strip())
        )
    elif isinstance(tm_given, (list, tuple)):
        tm = tuple(str(s) for s in tm_given)
    if "target_modules" not in bad and not tm:
        p.add("method.target_modules", tm_given, "must be `all-linear` or a non-empty list of module names")
    if "quant_type" not in bad and d["quant_type"] not in QUANT_TYPES:
        p.add("method.quant_type", d["quant_type"], "unknown 4-bit type", QUANT_TYPES)
    if len(p.items) > n:
        return None
    return MethodConfig(
        name=str(name),
        r=d["r"] if adapter else None,  # full fine-tuning has no rank: ignored, recorded as null
        alpha=d["alpha"] if adapter else None,
        dropout=float(d["dropout"]),
        target_modules=tm,
        quant_type=d["quant_type"],
        double_quant=d["double_quant"],
    )


def train(d: dict[str, Any], p: Problems) -> TrainConfig | None:
    n = len(p.items)
    bad = keys(TrainConfig, d, "train.", p)

    def pos(k: str, integer: bool = True, allow_none: bool = False) -> None:
        if k not in bad:
            positive(p, f"train.{k}", d[k], integer=integer, allow_none=allow_none)

    pos("lr", integer=False, allow_none=True)
    for k in ("lr_full", "lr_adapter", "epochs"):
        pos(k, integer=False)
    for k in ("micro_batch_size", "grad_accum", "seq_len", "eval_points", "max_new_tokens"):
        pos(k)
    for k in ("max_steps", "eval_every_steps", "checkpoint_every_steps", "metric_rows"):
        pos(k, allow_none=True)
    pos("memory_cap_gib", integer=False, allow_none=True)
    if "warmup_ratio" not in bad and not 0 <= d["warmup_ratio"] < 1:
        p.add("train.warmup_ratio", d["warmup_ratio"], "must be in [0, 1)")
    for k, allowed in (
        ("optimizer", OPTIMIZERS),
        ("precision", PRECISIONS),
        ("attention", ATTENTIONS),
        ("metric", METRICS),
    ):
        if k not in bad and d[k] not in allowed:
            p.add(f"train.{k}", d[k], f"unknown {k}", allowed)
    if len(p.items) > n:
        return None
    return TrainConfig(**_known(d, TrainConfig))


def data(d: dict[str, Any], p: Problems) -> DataConfig | None:
    n = len(p.items)
    bad = keys(DataConfig, d, "data.", p)
    for k, integer in (("rows", True), ("avg_tokens", False), ("val_rows_max", True)):
        if k not in bad:
            positive(p, f"data.{k}", d[k], integer=integer)
    sigma = d.get("length_sigma")
    if (
        "length_sigma" not in bad
        and sigma is not None
        and not (isinstance(sigma, (int, float)) and sigma >= 0)
    ):
        p.add(
            "data.length_sigma",
            sigma,
            "must be a non-negative number (0 = every example avg_tokens long) or null",
        )
    if "val_fraction" not in bad and not 0 < d["val_fraction"] < 1:
        p.add("data.val_fraction", d["val_fraction"], "must be in (0, 1)")
    if "format" not in bad and d["format"] not in DATA_FORMATS:
        p.add("data.format", d["format"], "unknown data format", DATA_FORMATS)
    if len(p.items) > n:
        return None
    fields = d["fields"]
    pairs = tuple((str(k), str(v)) for k, v in (fields.items() if isinstance(fields, dict) else fields))
    return DataConfig(**{**_known(d, DataConfig), "fields": pairs})


def _price_row(r: Any, i: int, p: Problems) -> PriceRow | None:
    prefix = f"gpu.prices[{i}]."
    if not isinstance(r, dict):
        p.add(prefix[:-1], r, "must be a mapping (provider, tier, usd_per_gpu_hour, as_of, source, per_core)")
        return None
    n = len(p.items)
    bad = keys(PriceRow, r, prefix, p)
    if "usd_per_gpu_hour" not in bad and r["usd_per_gpu_hour"] < 0:
        p.add(f"{prefix}usd_per_gpu_hour", r["usd_per_gpu_hour"], "must be a non-negative number")
    if "tier" not in bad and r["tier"] not in PRICE_TIERS:
        p.add(f"{prefix}tier", r["tier"], "unknown price tier", PRICE_TIERS)
    if len(p.items) > n:
        return None
    return PriceRow(**{**_known(r, PriceRow), "usd_per_gpu_hour": float(r["usd_per_gpu_hour"])})


def gpu(d: dict[str, Any], p: Problems) -> GpuConfig | None:
    """The gpu section; for `cpu`, usable_mib / memory_gb null = this machine's RAM, read now."""
    d = dict(d)
    if d.get("name") == "cpu":
        if d.get("usable_mib") is None:
            d["usable_mib"] = outside.machine_ram_mib()
        if d.get("memory_gb") is None:
            d["memory_gb"] = round(d["usable_mib"] / 1024 * CPU_MEMORY_GB_PER_GIB, 1)
    n = len(p.items)
    bad = keys(GpuConfig, d, "gpu.", p)
    if "count" not in bad:
        positive(p, "gpu.count", d["count"])
    if "usable_mib" not in bad:
        positive(p, "gpu.usable_mib", d["usable_mib"])
    if "usd_per_hour" not in bad and d["usd_per_hour"] is not None and d["usd_per_hour"] < 0:
        p.add("gpu.usd_per_hour", d["usd_per_hour"], "must be a non-negative number or null")
    rows = [_price_row(r, i, p) for i, r in enumerate(d.get("prices") or [])] if "prices" not in bad else []
    if len(p.items) > n:
        return None
    return GpuConfig(
        **{
            **_known(d, GpuConfig),
            "bandwidth_gbs": float(d["bandwidth_gbs"]),
            "prices": tuple(r for r in rows if r is not None),
        }
    )


def choose_price(gpu: GpuConfig, provider: str | None, p: Problems | None = None) -> Price:
    """The price for `gpu`: gpu.usd_per_hour, else the row matching price.provider, else the cheapest
    on-demand specialist row (then hyperscaler, then marketplace). CPU rows are per core: × this
    machine's cores, read now and recorded in the provider ("… × 8 cores")."""
    if gpu.usd_per_hour is not None:
        return Price(float(gpu.usd_per_hour), "user override (gpu.usd_per_hour)", "override", "", "")
    rows = list(gpu.prices)
    if provider:
        match = [r for r in rows if provider.lower() in r.provider.lower()]
        if not match and p is not None:
            p.add(
                "price.provider",
                provider,
                f"no price row for gpu={gpu.name}",
                [r.provider for r in rows] or ["none"],
            )
        rows = match or rows
    else:
        for tier in PRICE_TIERS:
            tiered = [r for r in rows if r.tier == tier]
            if tiered:
                rows = tiered
                break
    if not rows:
        return Price(0.0, "no catalog price (set gpu.usd_per_hour)", "none", "", "")
    r = min(rows, key=lambda r: r.usd_per_gpu_hour)
    if not r.per_core:
        return Price(r.usd_per_gpu_hour, r.provider, r.tier, r.as_of, r.source)
    cores = outside.machine_cores()
    return Price(r.usd_per_gpu_hour * cores, f"{r.provider} × {cores} cores", r.tier, r.as_of, r.source)


def stored_price(d: dict[str, Any], p: Problems) -> Price | None:
    """A price recorded by `to_dict()` (usd_per_gpu_hour set), taken as it is."""
    n = len(p.items)
    bad = fieldtypes.check(Price, d, "price.", p)
    for k in sorted(set(d) - set(fieldtypes.hints(Price))):
        p.add(f"price.{k}", d[k], "unknown key in a recorded price", list(fieldtypes.hints(Price)))
    for k in sorted(set(fieldtypes.hints(Price)) - set(d)):
        p.extend([f"price.{k}: missing from a recorded price (usd_per_gpu_hour is set)"])
    if "usd_per_gpu_hour" not in bad and d["usd_per_gpu_hour"] < 0:
        p.add("price.usd_per_gpu_hour", d["usd_per_gpu_hour"], "must be a non-negative number")
    if len(p.items) > n:
        return None
    return Price(**{**_known(d, Price), "usd_per_gpu_hour": float(d["usd_per_gpu_hour"])})


def parallel_problems(cfg: Any) -> list[str]:
    """What the runner refuses in a multi-process cell of this RunConfig (the plan asks before starting
    one): bitsandbytes' optimizers under FSDP (measured: bitsandbytes 0.50 has no sharding rule for
    its update op)."""
    n, par, opt = cfg.gpu.count, cfg.parallel, cfg.train.optimizer
    if n > 1 and par in SHARDED_PARALLELS and opt not in SHARDED_OPTIMIZERS:
        return [
            f"train.optimizer={opt}: bitsandbytes' optimizers cannot update FSDP's sharded parameters "
            f"(parallel={par}, gpu.count={n}; allowed: {', '.join(SHARDED_OPTIMIZERS)}, or parallel=ddp)"
        ]
    return []

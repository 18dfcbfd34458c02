"""The resolved configuration as frozen dataclasses — the one type core code takes.

`sweep/` converts Hydra's DictConfig to a plain dict once and calls `RunConfig.from_dict`; the
advisor, runners and reports never see a DictConfig. Validation collects every problem and raises
one `ConfigError` listing them all (key, value, what is allowed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.config import catalog
from advisor.config.methods import METHOD_NAMES
from advisor.errors import ConfigError, Problems

METHODS = METHOD_NAMES
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd")
PRECISIONS = ("bf16", "amp_bf16", "amp_fp16", "fp16", "fp32")
ATTENTIONS = ("sdpa", "flash", "eager")
PARALLELS = ("ddp", "fsdp", "zero2", "zero3")
QUANT_TYPES = ("nf4", "fp4")
DATA_FORMATS = ("auto", "instruction", "chat")
ADVISOR_MODES = ("analytic", "trace")
METRICS = ("exact_match", "none")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture (HF config field names) and where real weights come from."""

    name: str
    architecture: str  # HF model_type
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    head_dim: int | None = None  # None = hidden_size // num_attention_heads
    num_local_experts: int | None = None
    num_experts_per_tok: int | None = None
    total_params: int | None = None  # catalog reference count, when known
    attention_bias: bool | None = None  # None = the family's default
    mlp_bias: bool | None = None
    path: str | None = None
    config_path: str | None = None
    trust_remote_code: bool = False

    @property
    def head_dim_eff(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class MethodConfig:
    name: str = "lora"  # full | lora | qlora
    r: int | None = 16
    alpha: float | None = 32
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    quant_type: str = "nf4"
    double_quant: bool = True

    @property
    def is_adapter(self) -> bool:
        return self.name in ("lora", "qlora")

    @property
    def alpha_eff(self) -> float:
        return self.alpha if self.alpha is not None else 2.0 * (self.r or 0)


@dataclass(frozen=True)
class TrainConfig:
    lr: float | None = None
    lr_full: float = 2e-5  # default learning rate of full fine-tuning (when lr is null)
    lr_adapter: float = 2e-4  # default learning rate of LoRA and QLoRA (when lr is null)
    micro_batch_size: int = 4
    grad_accum: int = 4
    seq_len: int = 1024
    epochs: float = 3
    max_steps: int | None = None
    warmup_ratio: float = 0.03
    eval_every_steps: int | None = None
    eval_points: int = 4  # evals spread evenly over the planned steps when eval_every_steps is null
    gradient_checkpointing: bool = True
    optimizer: str = "adamw"
    precision: str = "bf16"
    attention: str = "sdpa"
    packing: bool = False
    chunked_loss: bool = False
    memory_cap_gib: float | None = None
    checkpoint_every_steps: int | None = None
    metric: str = "exact_match"
    max_new_tokens: int = 64
    metric_rows: int | None = 64
    merge: bool = False


@dataclass(frozen=True)
class DataConfig:
    path: str | None = None
    val_path: str | None = None
    val_fraction: float = 0.1
    val_rows_max: int = 1000
    out_dir: str | None = None  # `data prepare` output folder; None = outputs/data/<input stem>
    rows: int = 10000
    avg_tokens: float = 512
    format: str = "auto"
    fields: tuple[tuple[str, str], ...] = (
        ("instruction", "instruction"),
        ("input", "input"),
        ("output", "output"),
        ("messages", "messages"),
    )

    def field_name(self, key: str) -> str:
        return dict(self.fields).get(key, key)


@dataclass(frozen=True)
class PriceRow:
    provider: str
    tier: str
    usd_per_gpu_hour: float
    as_of: str
    source: str
    per_core: bool = False


@dataclass(frozen=True)
class GpuConfig:
    name: str
    display_name: str
    usable_mib: int
    bandwidth_gbs: float
    bf16_dense_tflops: float | None
    fp32_tflops: float | None
    bf16_supported: bool
    bnb_supported: bool
    memory_gb: float | None = None
    tdp_w: float | None = None
    count: int = 1
    usd_per_hour: float | None = None
    prices: tuple[PriceRow, ...] = ()

    @property
    def is_cpu(self) -> bool:
        return self.name == "cpu"

    @property
    def usable_gib(self) -> float:
        return self.usable_mib / 1024


@dataclass(frozen=True)
class Price:
    """The price chosen for a run: USD per GPU-hour with where it came from."""

    usd_per_gpu_hour: float
    provider: str
    tier: str
    as_of: str
    source: str


@dataclass(frozen=True)
class RunConfig:
    """Everything one run (or one advise row) depends on."""

    model: ModelConfig
    method: MethodConfig
    train: TrainConfig
    data: DataConfig
    gpu: GpuConfig
    price: Price
    parallel: str = "ddp"
    seed: int = 0
    budget_usd: float | None = None
    budget_hours: float | None = None
    advisor_mode: str = "analytic"
    calibration: str | None = None
    notes: tuple[str, ...] = ()  # resolution notes shown to the user (e.g. bf16 -> fp16 fallback)

    @property
    def lr(self) -> float:
        if self.train.lr is not None:
            return self.train.lr
        return self.train.lr_full if self.method.name == "full" else self.train.lr_adapter

    @property
    def precision(self) -> str:
        """Effective precision on this card (bf16 falls back to fp16 where the card lacks bf16)."""
        p = self.train.precision
        if not self.gpu.bf16_supported:
            return {"bf16": "fp16", "amp_bf16": "amp_fp16"}.get(p, p)
        return p

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with nested changes: replace(method={'r': 8}, train={'seq_len': 2048})."""
        kw: dict[str, Any] = {}
        for k, v in changes.items():
            cur = getattr(self, k)
            kw[k] = (
                dataclasses.replace(cur, **v) if isinstance(v, dict) and dataclasses.is_dataclass(cur) else v
            )
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data (the shape `from_dict` reads back)."""
        d = dataclasses.asdict(self)
        d["data"]["fields"] = dict(self.data.fields)
        d["method"]["target_modules"] = (
            self.method.target_modules
            if isinstance(self.method.target_modules, str)
            else list(self.method.target_modules)
        )
        d["gpu"]["prices"] = [dataclasses.asdict(p) for p in self.gpu.prices]
        d["budget"] = {"usd": d.pop("budget_usd"), "hours": d.pop("budget_hours")}
        d["advisor"] = {"mode": d.pop("advisor_mode"), "calibration": d.pop("calibration")}
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return build(d)


# ----------------------------------------------------------------------------------------------
# Building from a plain dict (the composed Hydra config, or to_dict()'s output), with validation.


def _machine_ram_mib() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def hf_config_to_model_fields(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """Map a Hugging Face config.json to ModelConfig fields (GPT-2's n_* names included)."""
    mt = cfg.get("model_type", "llama")
    if mt == "gpt2":
        h = cfg.get("n_embd", 768)
        return {
            "name": name,
            "architecture": "gpt2",
            "hidden_size": h,
            "num_hidden_layers": cfg.get("n_layer", 12),
            "num_attention_heads": cfg.get("n_head", 12),
            "num_key_value_heads": cfg.get("n_head", 12),
            "intermediate_size": cfg.get("n_inner") or 4 * h,
            "vocab_size": cfg.get("vocab_size", 50257),
            "tie_word_embeddings": cfg.get("tie_word_embeddings", True),
            "max_position_embeddings": cfg.get("n_positions", 1024),
        }
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    heads = text.get("num_attention_heads")
    out = {
        "name": name,
        "architecture": text.get("model_type", mt),
        "hidden_size": text.get("hidden_size"),
        "num_hidden_layers": text.get("num_hidden_layers"),
        "num_attention_heads": heads,
        "num_key_value_heads": text.get("num_key_value_heads") or heads,
        "intermediate_size": text.get("intermediate_size"),
        "vocab_size": text.get("vocab_size"),
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        "max_position_embeddings": text.get("max_position_embeddings", 4096),
        "head_dim": text.get("head_dim"),
        "num_local_experts": text.get("num_local_experts") or text.get("num_experts"),
        "num_experts_per_tok": text.get("num_experts_per_tok"),
    }
    if "attention_bias" in text:
        out["attention_bias"] = bool(text["attention_bias"])
    if "mlp_bias" in text:
        out["mlp_bias"] = bool(text["mlp_bias"])
    return out


_MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}


def _model(d: dict[str, Any], p: Problems) -> ModelConfig | None:
    d = {k: v for k, v in d.items() if k in _MODEL_KEYS}
    cp = d.get("config_path")
    if cp:
        path = Path(cp)
        if path.is_dir():
            path = path / "config.json"
        try:
            hf = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            p.add("model.config_path", cp, f"cannot read a HF config.json ({e.__class__.__name__}: {e})")
            return None
        d = {**d, **hf_config_to_model_fields(hf, d.get("name") or path.parent.name)}
        d["total_params"] = None
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        v = d.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            p.add(f"model.{k}", v, "must be a positive integer")
    if d.get("num_key_value_heads") is None:
        d["num_key_value_heads"] = d.get("num_attention_heads")
    kv, heads, hidden = d.get("num_key_value_heads"), d.get("num_attention_heads"), d.get("hidden_size")
    if isinstance(heads, int) and heads > 0:
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
    hd = d.get("head_dim")
    if hd is not None and (not isinstance(hd, int) or hd <= 0):
        p.add("model.head_dim", hd, "must be a positive integer or null")
    ne, k = d.get("num_local_experts"), d.get("num_experts_per_tok")
    if ne is not None and (not isinstance(k, int) or k <= 0 or k > ne):
        p.add("model.num_experts_per_tok", k, f"must be between 1 and num_local_experts={ne}")
    if len(p.items):
        return None
    try:
        return ModelConfig(**d)
    except TypeError as e:
        p.add("model", d.get("name"), f"incomplete architecture ({e})")
        return None


def _method(d: dict[str, Any], p: Problems) -> MethodConfig:
    name = d.get("name", "lora")
    if name not in METHODS:
        p.add("method", name, "unknown method", METHODS)
    r = d.get("r")
    if name in ("lora", "qlora") and (not isinstance(r, int) or isinstance(r, bool) or r <= 0):
        p.add("method.r", r, "LoRA rank must be a positive integer")
    alpha = d.get("alpha")
    if alpha is not None and (not isinstance(alpha, (int, float)) or alpha <= 0):
        p.add("method.alpha", alpha, "must be a positive number or null (= 2 × r)")
    dropout = d.get("dropout", 0.0) or 0.0
    if not 0 <= dropout < 1:
        p.add("method.dropout", dropout, "must be in [0, 1)")
    tm = d.get("target_modules", "all-linear")
    if isinstance(tm, str):
        tm = tm if tm == "all-linear" else tuple(s.strip() for s in tm.split(",") if s.strip())
    elif isinstance(tm, (list, tuple)) and tm and all(isinstance(s, str) for s in tm):
        tm = tuple(tm)
    else:
        p.add("method.target_modules", tm, "must be `all-linear` or a non-empty list of module names")
        tm = "all-linear"
    qt = d.get("quant_type", "nf4")
    if qt not in QUANT_TYPES:
        p.add("method.quant_type", qt, "unknown 4-bit type", QUANT_TYPES)
    return MethodConfig(
        name=name,
        r=r if name != "full" else None,
        alpha=alpha if name != "full" else None,
        dropout=float(dropout),
        target_modules=tm,
        quant_type=qt,
        double_quant=bool(d.get("double_quant", True)),
    )


def _positive(p: Problems, key: str, v: Any, integer: bool = True, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    ok = isinstance(v, int) and not isinstance(v, bool) if integer else isinstance(v, (int, float))
    if not ok or v <= 0:
        p.add(
            key,
            v,
            "must be a positive " + ("integer" if integer else "number") + (" or null" if allow_none else ""),
        )


def _train(d: dict[str, Any], p: Problems) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    for k in unknown:
        p.add(f"train.{k}", d[k], "unknown key", sorted(names))
    d = {k: v for k, v in d.items() if k in names}
    _positive(p, "train.lr", d.get("lr"), integer=False, allow_none=True)
    _positive(p, "train.lr_full", d.get("lr_full", 1.0), integer=False)
    _positive(p, "train.lr_adapter", d.get("lr_adapter", 1.0), integer=False)
    for k in ("micro_batch_size", "grad_accum", "seq_len"):
        _positive(p, f"train.{k}", d.get(k, 1))
    _positive(p, "train.epochs", d.get("epochs", 1), integer=False)
    _positive(p, "train.eval_points", d.get("eval_points", 1))
    for k in ("max_steps", "eval_every_steps", "checkpoint_every_steps", "metric_rows"):
        _positive(p, f"train.{k}", d.get(k), allow_none=True)
    _positive(p, "train.memory_cap_gib", d.get("memory_cap_gib"), integer=False, allow_none=True)
    _positive(p, "train.max_new_tokens", d.get("max_new_tokens", 1))
    wr = d.get("warmup_ratio", 0.03)
    if not isinstance(wr, (int, float)) or not 0 <= wr < 1:
        p.add("train.warmup_ratio", wr, "must be in [0, 1)")
    for k, allowed in (
        ("optimizer", OPTIMIZERS),
        ("precision", PRECISIONS),
        ("attention", ATTENTIONS),
        ("metric", METRICS),
    ):
        if k in d and d[k] not in allowed:
            p.add(f"train.{k}", d[k], f"unknown {k}", allowed)
    return TrainConfig(**d)


def _data(d: dict[str, Any], p: Problems) -> DataConfig:
    names = {f.name for f in dataclasses.fields(DataConfig)}
    for k in sorted(set(d) - names):
        p.add(f"data.{k}", d[k], "unknown key", sorted(names))
    d = {k: v for k, v in d.items() if k in names}
    _positive(p, "data.rows", d.get("rows", 1))
    _positive(p, "data.avg_tokens", d.get("avg_tokens", 1), integer=False)
    _positive(p, "data.val_rows_max", d.get("val_rows_max", 1))
    vf = d.get("val_fraction", 0.1)
    if not isinstance(vf, (int, float)) or not 0 < vf < 1:
        p.add("data.val_fraction", vf, "must be in (0, 1)")
    if d.get("format", "auto") not in DATA_FORMATS:
        p.add("data.format", d.get("format"), "unknown data format", DATA_FORMATS)
    fields = d.get("fields")
    if isinstance(fields, dict):
        d["fields"] = tuple((str(k), str(v)) for k, v in fields.items())
    elif fields is None:
        d.pop("fields", None)
    return DataConfig(**d)


def _gpu(d: dict[str, Any], p: Problems) -> GpuConfig | None:
    d = dict(d)
    name = d.get("name")
    prices = tuple(
        PriceRow(**{k: v for k, v in r.items() if k in PriceRow.__annotations__})
        for r in d.get("prices") or []
    )
    count = d.get("count", 1)
    _positive(p, "gpu.count", count)
    usd = d.get("usd_per_hour")
    if usd is not None and (not isinstance(usd, (int, float)) or usd < 0):
        p.add("gpu.usd_per_hour", usd, "must be a non-negative number or null")
    if name == "cpu":
        if d.get("usable_mib") is None:
            d["usable_mib"] = _machine_ram_mib()
        if d.get("memory_gb") is None:
            d["memory_gb"] = round(d["usable_mib"] / 1024 * 1.073741824, 1)
    try:
        return GpuConfig(
            name=name,
            display_name=d.get("display_name") or name,
            usable_mib=int(d["usable_mib"]),
            bandwidth_gbs=float(d.get("bandwidth_gbs") or 0),
            bf16_dense_tflops=d.get("bf16_dense_tflops"),
            fp32_tflops=d.get("fp32_tflops"),
            bf16_supported=bool(d.get("bf16_supported", True)),
            bnb_supported=bool(d.get("bnb_supported", True)),
            memory_gb=d.get("memory_gb"),
            tdp_w=d.get("tdp_w"),
            count=count if isinstance(count, int) and count > 0 else 1,
            usd_per_hour=usd,
            prices=prices,
        )
    except (KeyError, TypeError, ValueError) as e:
        p.add("gpu", name, f"incomplete GPU entry ({e})")
        return None


def choose_price(gpu: GpuConfig, provider: str | None, p: Problems | None = None) -> Price:
    """The price for `gpu`: gpu.usd_per_hour, else the row matching price.provider, else the cheapest
    on-demand specialist row (then hyperscaler, then marketplace). CPU rows are per core."""
    scale = machine_cores() if gpu.is_cpu else 1
    if gpu.usd_per_hour is not None:
        return Price(float(gpu.usd_per_hour), "user override (gpu.usd_per_hour)", "override", "", "")
    rows = list(gpu.prices)
    if provider:
        provider = provider.split(" × ")[0]  # to_dict() writes per-core rows as "<provider> × N cores"
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
        for tier in ("specialist", "hyperscaler", "marketplace"):
            tiered = [r for r in rows if r.tier == tier]
            if tiered:
                rows = tiered
                break
    if not rows:
        return Price(0.0, "no catalog price (set gpu.usd_per_hour)", "none", "", "")
    r = min(rows, key=lambda r: r.usd_per_gpu_hour)
    usd = r.usd_per_gpu_hour * (scale if r.per_core else 1)
    prov = f"{r.provider} × {scale} cores" if r.per_core else r.provider
    return Price(usd, prov, r.tier, r.as_of, r.source)


def _num_or_none(p: Problems, key: str, v: Any) -> float | None:
    if v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
        p.add(key, v, "must be a non-negative number or null")
        return None
    return float(v)


def build(d: dict[str, Any]) -> RunConfig:
    """Validate a plain config dict and build the RunConfig; raise ConfigError with every problem."""
    p = Problems()
    model_d = d.get("model") or {}
    gpu_d = d.get("gpu") or {}
    model = _model(model_d, p)
    method = _method(d.get("method") or {}, p)
    train = _train(dict(d.get("train") or {}), p)
    data = _data(dict(d.get("data") or {}), p)
    gpu = _gpu(gpu_d, p)
    parallel = d.get("parallel", "ddp")
    if parallel not in PARALLELS:
        p.add("parallel", parallel, "unknown parallelism", PARALLELS)
    budget = d.get("budget") or {}
    budget_usd = _num_or_none(p, "budget.usd", budget.get("usd"))
    budget_hours = _num_or_none(p, "budget.hours", budget.get("hours"))
    adv = d.get("advisor") or {}
    mode = adv.get("mode", "analytic")
    if mode not in ADVISOR_MODES:
        p.add("advisor.mode", mode, "unknown advisor mode", ADVISOR_MODES)
    seed = d.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        p.add("seed", seed, "must be an integer")
    notes: list[str] = []
    price = Price(0.0, "", "", "", "")
    if gpu is not None:
        price = choose_price(gpu, (d.get("price") or {}).get("provider"), p)
        if method.name == "qlora" and not gpu.bnb_supported:
            p.add(
                "method",
                "qlora",
                f"bitsandbytes 4-bit does not run on gpu={gpu.name} ({gpu.display_name})",
                [g for g, v in catalog.gpus().items() if v.get("bnb_supported")],
            )
        if (
            train.optimizer in ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
            and not gpu.bnb_supported
        ):
            p.add(
                "train.optimizer",
                train.optimizer,
                f"bitsandbytes optimizers do not run on gpu={gpu.name}",
                ["adamw", "sgd"],
            )
        if not gpu.bf16_supported and train.precision in ("bf16", "amp_bf16"):
            notes.append(f"{gpu.display_name} has no bf16: using fp16 instead of {train.precision}.")
    p.raise_if_any()
    assert model is not None and gpu is not None
    return RunConfig(
        model=model,
        method=method,
        train=train,
        data=data,
        gpu=gpu,
        price=price,
        parallel=parallel,
        seed=seed,
        budget_usd=budget_usd,
        budget_hours=budget_hours,
        advisor_mode=mode,
        calibration=adv.get("calibration"),
        notes=tuple(notes),
    )


def from_names(
    model: str = "llama-3.1-8b", method: str = "lora", gpu: str = "a100-80gb", **over: dict[str, Any]
) -> RunConfig:
    """Build a RunConfig straight from catalog names (tests, benchmarks, advise internals).

    `over` holds partial sections merged over the defaults: train={'seq_len': 2048},
    lora={'r': 8} (method keys), data={'rows': 1000}, budget={'usd': 100}, arch={'num_hidden_layers': 2}
    (model keys), card={'count': 2} (gpu keys), price, advisor, parallel, seed.
    """
    d: dict[str, Any] = {
        "model": {**catalog.load_option("model", model), **over.pop("arch", {})},
        "method": {**catalog.load_option("method", method), **over.pop("lora", {})},
        "gpu": {**catalog.load_option("gpu", gpu), **over.pop("card", {})},
    }
    d.update(over)
    return build(d)


__all__ = [
    "ConfigError",
    "RunConfig",
    "ModelConfig",
    "MethodConfig",
    "TrainConfig",
    "DataConfig",
    "GpuConfig",
    "Price",
    "PriceRow",
    "build",
    "from_names",
    "choose_price",
    "field",
]

"""The resolved configuration as frozen dataclasses — the one type core code takes.

`sweep/` converts Hydra's DictConfig to a plain dict once and calls `RunConfig.from_dict`; the
advisor, runners and reports never see a DictConfig. `build` fills every key the dict leaves out from
conf/ (config.yaml's sections; a model/method/gpu section from the catalog option it names), checks
types and values and raises one `ConfigError` listing every problem (key, value, what is allowed).
`from_names` builds from the same defaults as `tunewise advise`.

`RunConfig.to_dict()` records what was detected or chosen when the config was first built (the price,
this machine's RAM, a HF config.json's architecture) and `from_dict` takes it as it is:
`RunConfig.from_dict(cfg.to_dict()) == cfg` on any machine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from advisor.config import catalog, checks, fieldtypes
from advisor.config.outside import hf_config_to_model_fields, machine_cores
from advisor.config.sections import (
    DataConfig,
    GpuConfig,
    MethodConfig,
    ModelConfig,
    Price,
    PriceRow,
    TrainConfig,
)
from advisor.errors import ConfigError, Problems

# Top-level keys of conf/config.yaml read into RunConfig's own fields (dotted YAML key → field).
TOP_LEVEL = {
    "parallel": "parallel",
    "seed": "seed",
    "budget.usd": "budget_usd",
    "budget.hours": "budget_hours",
    "advisor.mode": "advisor_mode",
    "advisor.calibration": "calibration",
}
GROUPS = ("model", "method", "gpu")  # sections that are catalog options (conf/<group>/*.yaml)
SECTIONS = ("train", "data", "price", "budget", "advisor")  # sections whose defaults are config.yaml's
OUTPUT_ONLY = ("notes", "resolved")  # written by to_dict(), derived again on load
# composed config read by the sweep and the CLI
OTHER_KEYS = ("sweep", "matrix", "format", "breakdown", "offline", "from", "tracking", "tracking_uri")
SECTION_TYPES: dict[str, type] = {
    "model": ModelConfig,
    "method": MethodConfig,
    "train": TrainConfig,
    "data": DataConfig,
    "gpu": GpuConfig,
}


@dataclass(frozen=True)
class RunConfig:
    """Everything one run (or one advise row) depends on."""

    model: ModelConfig
    method: MethodConfig
    train: TrainConfig
    data: DataConfig
    gpu: GpuConfig
    price: Price  # chosen once (gpu.usd_per_hour, price.provider or the cheapest row) and recorded
    parallel: str  # ddp | fsdp | zero2 | zero3
    seed: int
    budget_usd: float | None  # advise: per run; sweep: the whole sweep
    budget_hours: float | None
    advisor_mode: str  # analytic | trace
    calibration: str | None  # sweep dir or file of trial records
    notes: tuple[str, ...]  # resolution notes shown to the user (e.g. bf16 -> fp16 fallback)

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
        """A copy with nested changes: replace(method={'r': 8}, train={'seq_len': 2048}).
        Nothing is validated or chosen again (the price stays): `build` a dict for that."""
        kw: dict[str, Any] = {}
        for k, v in changes.items():
            cur = getattr(self, k)
            is_section = isinstance(v, dict) and dataclasses.is_dataclass(cur) and not isinstance(cur, type)
            kw[k] = dataclasses.replace(cur, **v) if is_section else v  # type: ignore[type-var]
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data, shaped like conf/ (the shape `from_dict` reads),
        with the chosen price and `resolved: true` (nothing detected or chosen is read again)."""
        d = dataclasses.asdict(self)
        d["data"]["fields"] = dict(self.data.fields)
        tm = self.method.target_modules
        d["method"]["target_modules"] = tm if isinstance(tm, str) else list(tm)
        d["gpu"]["prices"] = [dataclasses.asdict(p) for p in self.gpu.prices]
        d["budget"] = {"usd": d.pop("budget_usd"), "hours": d.pop("budget_hours")}
        d["advisor"] = {"mode": d.pop("advisor_mode"), "calibration": d.pop("calibration")}
        d["notes"] = list(self.notes)
        d["resolved"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """`build(d)`: a composed config, `to_dict()`'s output or a record's `config` (old ones too)."""
        return build(d)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, nested mappings merged key by key (as Hydra merges configs)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _section(d: dict[str, Any], key: str, base: dict[str, Any], p: Problems) -> dict[str, Any]:
    given = d.get(key)
    if given is None:
        return dict(base)
    if not isinstance(given, dict):
        p.add(key, given, "must be a mapping of keys to values")
        return dict(base)
    return _merge(base, given)


def _group(d: dict[str, Any], group: str, p: Problems) -> dict[str, Any] | None:
    """A model/method/gpu section, keys it leaves out taken from the catalog option it names."""
    given = d.get(group)
    if not isinstance(given, dict):
        allowed = catalog.option_names(group)
        p.add(group, given, f"must be a {group} section (a catalog option: {group}=NAME)", allowed)
        return None
    name = given.get("name")
    option = catalog.option_view(group, name) if isinstance(name, str) else None
    return _merge(option, given) if option is not None else dict(given)


def _top(p: Problems, key: str, value: Any) -> Any:
    hint = fieldtypes.hints(RunConfig)[TOP_LEVEL[key]]
    if not fieldtypes.matches(value, hint):
        p.add(key, value, f"must be {fieldtypes.describe(hint)}")
        return None
    return value


def _non_negative(p: Problems, key: str, v: Any) -> float | None:
    v = _top(p, key, v)
    if v is not None and v < 0:
        p.add(key, v, "must be a non-negative number or null")
        return None
    return None if v is None else float(v)


def _price(gpu: GpuConfig, d: dict[str, Any], p: Problems) -> Price | None:
    """The recorded price when `d` holds one (usd_per_gpu_hour set), else chosen now."""
    if d.get("usd_per_gpu_hour") is not None:
        return checks.stored_price(d, p)
    for k in sorted(k for k, v in d.items() if k != "provider" and v is not None):
        p.add(
            f"price.{k}",
            d[k],
            "unknown key (price.provider chooses a row; a record holds usd_per_gpu_hour …)",
        )
    provider = d.get("provider")
    if provider is not None and not isinstance(provider, str):
        p.add("price.provider", provider, "must be a provider name (a substring) or null")
        provider = None
    return checks.choose_price(gpu, provider, p)


def build(d: dict[str, Any]) -> RunConfig:
    """Validate a plain config dict and build the RunConfig; raise ConfigError with every problem."""
    p = Problems()
    known = {*GROUPS, *SECTIONS, *OUTPUT_ONLY, *OTHER_KEYS, *(k.split(".")[0] for k in TOP_LEVEL)}
    for k in sorted(set(d) - known):
        p.add(k, d[k], "unknown key", sorted(known))
    resolved = d.get("resolved") is True
    sec = {k: _section(d, k, catalog.defaults_view(k), p) for k in SECTIONS}
    model_d, method_d, gpu_d = (_group(d, g, p) for g in GROUPS)
    model = checks.model(model_d, p, read_config_path=not resolved) if model_d is not None else None
    method = checks.method(method_d, p) if method_d is not None else None
    gpu = checks.gpu(gpu_d, p) if gpu_d is not None else None
    train = checks.train(sec["train"], p)
    data = checks.data(sec["data"], p)
    parallel = _top(p, "parallel", d.get("parallel", catalog.defaults_view("parallel")))
    if parallel is not None and parallel not in checks.PARALLELS:
        p.add("parallel", parallel, "unknown parallelism", checks.PARALLELS)
    seed = _top(p, "seed", d.get("seed", catalog.defaults_view("seed")))
    for part in ("budget", "advisor"):
        fields = [k.split(".")[1] for k in TOP_LEVEL if k.startswith(f"{part}.")]
        for k in sorted(set(sec[part]) - set(fields)):
            p.add(f"{part}.{k}", sec[part][k], "unknown key", fields)
    budget_usd = _non_negative(p, "budget.usd", sec["budget"].get("usd"))
    budget_hours = _non_negative(p, "budget.hours", sec["budget"].get("hours"))
    mode = _top(p, "advisor.mode", sec["advisor"].get("mode"))
    if mode is not None and mode not in checks.ADVISOR_MODES:
        p.add("advisor.mode", mode, "unknown advisor mode", checks.ADVISOR_MODES)
    calibration = _top(p, "advisor.calibration", sec["advisor"].get("calibration"))
    notes: list[str] = []
    price = None
    if gpu is not None:  # what the card cannot run (read from the raw sections: reported with the rest)
        price = _price(gpu, sec["price"], p)
        if (method_d or {}).get("name") == "qlora" and not gpu.bnb_supported:
            p.add(
                "method",
                "qlora",
                f"bitsandbytes 4-bit does not run on gpu={gpu.name} ({gpu.display_name})",
                [g for g, v in catalog.gpus().items() if v.get("bnb_supported")],
            )
        optimizer, precision = sec["train"].get("optimizer"), sec["train"].get("precision")
        if optimizer in checks.BNB_OPTIMIZERS and not gpu.bnb_supported:
            p.add(
                "train.optimizer",
                optimizer,
                f"bitsandbytes optimizers do not run on gpu={gpu.name}",
                ["adamw", "sgd"],
            )
        if not gpu.bf16_supported and precision in ("bf16", "amp_bf16"):
            notes.append(f"{gpu.display_name} has no bf16: using fp16 instead of {precision}.")
    p.raise_if_any()
    assert model and method and train and data and gpu and price  # raise_if_any: none is None
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
        calibration=calibration,
        notes=tuple(notes),
    )


def key_type(key: str) -> Any:
    """The annotation of a dotted config key a RunConfig reads (`method.r` → `int | None`,
    `budget.usd` → `float | None`, `price.provider` → `str | None`); KeyError for any other key.
    A group name (`method`, `gpu`, …) is the option's name: `str`."""
    if key in GROUPS or key == "data":
        return str
    if key == "price.provider":
        return str | None
    if key in TOP_LEVEL:
        return fieldtypes.hints(RunConfig)[TOP_LEVEL[key]]
    section, _, name = key.partition(".")
    hints = fieldtypes.hints(SECTION_TYPES[section]) if section in SECTION_TYPES else {}
    if name not in hints:
        raise KeyError(key)
    return hints[name]


def from_names(
    model: str | None = None, method: str | None = None, gpu: str | None = None, **over: dict[str, Any]
) -> RunConfig:
    """Build a RunConfig straight from catalog names (tests, benchmarks, advise internals): the same
    config `tunewise advise model=… method=… gpu=…` composes (names default to conf/advise.yaml's).

    `over` holds partial sections merged over the defaults: train={'seq_len': 2048},
    lora={'r': 8} (method keys), data={'rows': 1000}, budget={'usd': 100}, arch={'num_hidden_layers': 2}
    (model keys), card={'count': 2} (gpu keys), price, advisor, parallel, seed.
    """
    chosen = catalog.choices("advise")
    d: dict[str, Any] = {
        "model": _merge(catalog.load_option("model", model or chosen["model"]), over.pop("arch", {})),
        "method": _merge(catalog.load_option("method", method or chosen["method"]), over.pop("lora", {})),
        "gpu": _merge(catalog.load_option("gpu", gpu or chosen["gpu"]), over.pop("card", {})),
    }
    d.update(over)
    return build(d)


__all__ = [
    "ConfigError",
    "DataConfig",
    "GpuConfig",
    "MethodConfig",
    "ModelConfig",
    "Price",
    "PriceRow",
    "RunConfig",
    "TrainConfig",
    "build",
    "from_names",
    "hf_config_to_model_fields",
    "machine_cores",
]

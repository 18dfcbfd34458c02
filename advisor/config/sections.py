"""The sections of a run's config as frozen dataclasses (the schema); the values live in conf/.

Each dataclass checks one YAML section: its fields are the section's keys, with the same names and
types (tests/advisor/test_config_yaml.py holds them equal). Defaults are written once, in conf/:
- `train:` and `data:` come from conf/config.yaml; TrainConfig() and DataConfig() read their defaults
  from there (so code that builds a section by hand gets the CLI's values);
- `model`, `method` and `gpu` are group options (conf/model/*.yaml, …): every option file is a
  complete section, so these dataclasses have no defaults.
conf/config.yaml's comments document every key (units in the names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from advisor.config import catalog

_TRAIN: dict[str, Any] = catalog.defaults("train")
_DATA: dict[str, Any] = catalog.defaults("data")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture (HF config field names) and where real weights come from (conf/model/*.yaml)."""

    name: str
    architecture: str  # HF model_type
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    head_dim: int | None  # None = hidden_size // num_attention_heads
    num_local_experts: int | None  # None = dense
    num_experts_per_tok: int | None
    total_params: int | None  # catalog reference count, when known
    attention_bias: bool | None  # None = the family's default
    mlp_bias: bool | None  # None = the family's default
    path: str | None  # weights for real runs (folder or Hub id); None = estimate only
    config_path: str | None  # architecture from this HF config.json instead of the fields above
    trust_remote_code: bool

    @property
    def head_dim_eff(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class MethodConfig:
    """full | lora | qlora and the adapter settings (conf/method/*.yaml)."""

    name: str
    r: int | None  # LoRA rank; None for full
    alpha: float | None  # None = 2 × r
    dropout: float
    target_modules: str | tuple[str, ...]  # "all-linear" or module names
    quant_type: str  # QLoRA 4-bit type: nf4 | fp4
    double_quant: bool

    @property
    def is_adapter(self) -> bool:
        return self.name in ("lora", "qlora")

    @property
    def alpha_eff(self) -> float:
        return self.alpha if self.alpha is not None else 2.0 * (self.r or 0)


@dataclass(frozen=True)
class TrainConfig:
    """The `train:` section; every default is conf/config.yaml's."""

    lr: float | None = _TRAIN["lr"]  # None = lr_full / lr_adapter by method
    lr_full: float = _TRAIN["lr_full"]
    lr_adapter: float = _TRAIN["lr_adapter"]
    micro_batch_size: int = _TRAIN["micro_batch_size"]  # sequences per forward/backward
    grad_accum: int = _TRAIN["grad_accum"]  # micro-batches per optimizer step
    seq_len: int = _TRAIN["seq_len"]  # tokens
    epochs: float = _TRAIN["epochs"]
    max_steps: int | None = _TRAIN["max_steps"]  # optimizer steps; overrides epochs
    warmup_ratio: float = _TRAIN["warmup_ratio"]
    eval_every_steps: int | None = _TRAIN["eval_every_steps"]  # None = eval_points evenly spread
    eval_points: int = _TRAIN["eval_points"]
    gradient_checkpointing: bool = _TRAIN["gradient_checkpointing"]
    optimizer: str = _TRAIN["optimizer"]
    precision: str = _TRAIN["precision"]
    attention: str = _TRAIN["attention"]
    packing: bool = _TRAIN["packing"]
    chunked_loss: bool = _TRAIN["chunked_loss"]
    memory_cap_gib: float | None = _TRAIN["memory_cap_gib"]
    checkpoint_every_steps: int | None = _TRAIN["checkpoint_every_steps"]  # None = derived
    metric: str = _TRAIN["metric"]
    max_new_tokens: int = _TRAIN["max_new_tokens"]  # tokens generated per scored row
    metric_rows: int | None = _TRAIN["metric_rows"]  # None = every validation row
    merge: bool = _TRAIN["merge"]


@dataclass(frozen=True)
class DataConfig:
    """The `data:` section; every default is conf/config.yaml's (the data group options set some)."""

    path: str | None = _DATA["path"]  # None = estimate from rows × avg_tokens
    val_path: str | None = _DATA["val_path"]
    val_fraction: float = _DATA["val_fraction"]
    val_rows_max: int = _DATA["val_rows_max"]
    out_dir: str | None = _DATA["out_dir"]  # `data prepare` output; None = outputs/data/<input stem>
    rows: int = _DATA["rows"]
    avg_tokens: float = _DATA["avg_tokens"]  # tokens per example
    length_sigma: float | None = _DATA["length_sigma"]  # spread of lengths around avg_tokens; 0 = fixed
    format: str = _DATA["format"]
    fields: tuple[tuple[str, str], ...] = tuple(_DATA["fields"].items())  # (role, field name in the rows)

    def field_name(self, key: str) -> str:
        return dict(self.fields).get(key, key)


@dataclass(frozen=True)
class PriceRow:
    """One catalog price of a card (conf/gpu/*.yaml `prices:`)."""

    provider: str
    tier: str  # specialist | hyperscaler | marketplace
    usd_per_gpu_hour: float  # per core when per_core
    as_of: str
    source: str
    per_core: bool  # a CPU row: USD per core-hour, multiplied by the machine's cores


@dataclass(frozen=True)
class GpuConfig:
    """A card (conf/gpu/*.yaml); `cpu` is this machine, its RAM detected where usable_mib is null."""

    name: str
    display_name: str
    memory_gb: float | None  # marketed memory (GB)
    usable_mib: int  # memory a process can use (MiB): the fit test uses this
    bandwidth_gbs: float
    bf16_dense_tflops: float | None  # None = measured (cpu)
    fp32_tflops: float | None
    bf16_supported: bool
    tdp_w: float | None
    bnb_supported: bool
    count: int  # GPUs per run
    usd_per_hour: float | None  # price override per GPU-hour; None = a catalog row
    prices: tuple[PriceRow, ...]

    @property
    def is_cpu(self) -> bool:
        return self.name == "cpu"

    @property
    def usable_gib(self) -> float:
        return self.usable_mib / 1024


@dataclass(frozen=True)
class Price:
    """The price chosen for a run: USD per GPU-hour with where it came from. Chosen once, when a config
    is first built, and stored in `to_dict()`: loading a record never chooses again."""

    usd_per_gpu_hour: float
    provider: str
    tier: str
    as_of: str
    source: str

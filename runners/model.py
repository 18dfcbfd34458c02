"""Load the tokenizer and the model from `model.path`, and wrap it for the method.

Precision (`cfg.precision`, after the card's bf16 → fp16 fallback):
- `bf16` / `fp16` / `fp32`: weights loaded in that dtype and trained in it (pure; no master copy);
- `amp_bf16` / `amp_fp16`: fp32 weights (the master copy) with `torch.autocast` to bf16/fp16.
LoRA: peft `LoraConfig(r, lora_alpha, lora_dropout, target_modules, task_type=CAUSAL_LM)` on the frozen
base; peft keeps the adapter weights in fp32 (its `autocast_adapter_dtype` default).
QLoRA: `BitsAndBytesConfig(load_in_4bit, quant_type, double_quant, compute dtype bf16/fp16/fp32 per
precision)`, then `prepare_model_for_kbit_training` (which casts the non-quantized parameters to fp32),
then LoRA. Gradient checkpointing is HF's per-layer, non-reentrant.
Under FSDP (`sharded=True`, runners.parallel.group) QLoRA follows the FSDP-QLoRA recipe: the 4-bit
weights are stored in the compute dtype (`bnb_4bit_quant_storage`), so FSDP shards and gathers them
like any parameter, and `prepare_model_for_kbit_training` is not applied (no fp32 copies of the
non-4-bit parameters; gradient checkpointing set up as for LoRA).
On a GPU, FSDP's `fully_shard` moves each layer to the device as it shards it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard

import torch

from advisor.config.schema import RunConfig
from advisor.errors import ConfigError

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel
    from transformers import PreTrainedTokenizerBase

    # what transformers types AutoModelForCausalLM.from_pretrained to return: a model that generates
    from transformers.models.auto.modeling_auto import _BaseModelWithGenerate as CausalLM

    Model: TypeAlias = CausalLM | PeftModel  # the model a run trains: the base, or PEFT around it

ATTN_IMPL = {"sdpa": "sdpa", "eager": "eager", "flash": "flash_attention_2"}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def device() -> torch.device:
    """This process's device: its GPU (the rank's, set by runners.parallel.group.join), else the CPU."""
    return (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )


def weight_dtype(cfg: RunConfig) -> torch.dtype:
    """dtype the weights are loaded in (fp32 for the amp regimes: the master copy)."""
    return DTYPES.get(cfg.precision, torch.float32)


def autocast_dtype(cfg: RunConfig) -> torch.dtype | None:
    return {"amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}.get(cfg.precision)


def compute_dtype(cfg: RunConfig) -> torch.dtype:
    """QLoRA's bnb_4bit_compute_dtype: the 16-bit type of the precision (fp32 when precision=fp32)."""
    return autocast_dtype(cfg) or weight_dtype(cfg)


def check(cfg: RunConfig) -> None:
    """Problems only visible on this machine (device, attention kernel), raised before loading."""
    problems = []
    if not cfg.model.path:
        problems.append(
            f"model.path=None: a real run needs weights (a local folder or a Hub id) for model={cfg.model.name}"
        )
    elif Path(cfg.model.path).expanduser().exists() is False and Path(cfg.model.path).is_absolute():
        problems.append(f"model.path={cfg.model.path!r}: folder not found")
    if cfg.train.attention == "flash" and device().type != "cuda":
        problems.append(
            "train.attention='flash': flash attention needs a CUDA device (allowed here: sdpa, eager)"
        )
    if problems:
        raise ConfigError(problems)


def load_tokenizer(cfg: RunConfig) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path(cfg), trust_remote_code=cfg.model.trust_remote_code)
    if not getattr(tok, "is_fast", False):
        raise ConfigError(f"model.path={cfg.model.path!r}: needs a fast (Rust) tokenizer")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    pad_id(tok)
    return tok


def pad_id(tok: PreTrainedTokenizerBase) -> int:
    """The id padded batches use (load_tokenizer falls back to EOS, then UNK)."""
    pid = tok.pad_token_id
    if not isinstance(pid, int):
        raise ConfigError(
            f"model.path={tok.name_or_path!r}: the tokenizer has no pad, eos or unk token to pad batches with"
        )
    return pid


def model_path(cfg: RunConfig) -> str:
    """cfg.model.path (check() refused a run without one before anything loads)."""
    if not cfg.model.path:
        raise ConfigError(f"model.path=None: a real run needs weights for model={cfg.model.name}")
    return cfg.model.path


def lora_config(cfg: RunConfig) -> LoraConfig:
    """peft's LoraConfig of an adapter method: the one the runner trains and the trace models."""
    from peft import LoraConfig

    m = cfg.method
    if m.r is None:
        raise ConfigError(f"method.r=None: method={m.name} needs a rank (a positive integer)")
    tm = m.target_modules
    return LoraConfig(
        r=m.r,
        # peft annotates lora_alpha as int but only divides by it (scaling = lora_alpha / r): a float
        # alpha is used as given
        lora_alpha=m.alpha_eff,  # type: ignore[arg-type]
        lora_dropout=m.dropout,
        target_modules=tm if isinstance(tm, str) else list(tm),
        task_type="CAUSAL_LM",
    )


def load_model(cfg: RunConfig, sharded: bool = False) -> Model:
    """The model on the run's device, wrapped for the method, in training mode (`sharded`: as FSDP
    will shard it; see the module docstring)."""
    model: Model = load_base(cfg, sharded)
    if cfg.method.is_adapter:
        from peft import get_peft_model

        try:
            model = get_peft_model(model, lora_config(cfg))
        except ValueError as e:
            raise ConfigError(f"method.target_modules={cfg.method.target_modules!r}: {e}") from None
    model.train()
    return model


def load_base(cfg: RunConfig, sharded: bool = False) -> CausalLM:
    """The base model as training sees it: dtype per precision, 4-bit + kbit preparation for QLoRA,
    gradient checkpointing per config; no adapter yet (PeftModel.from_pretrained goes on top of this).
    `sharded`: the FSDP recipe (4-bit storage in the compute dtype, no kbit preparation; left on the
    CPU on a GPU machine, for fully_shard to move layer by layer)."""
    from transformers import AutoModelForCausalLM

    dev = device()
    kw: dict[str, Any] = {
        "trust_remote_code": cfg.model.trust_remote_code,
        "attn_implementation": ATTN_IMPL[cfg.train.attention],
    }
    if cfg.method.name == "qlora":
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=cfg.method.quant_type,
            bnb_4bit_use_double_quant=cfg.method.double_quant,
            bnb_4bit_compute_dtype=compute_dtype(cfg),
            **({"bnb_4bit_quant_storage": compute_dtype(cfg)} if sharded else {}),
        )
        kw["dtype"] = compute_dtype(cfg)
        if dev.type == "cuda":
            kw["device_map"] = {"": dev.index or 0}
    else:
        kw["dtype"] = weight_dtype(cfg)
    model = AutoModelForCausalLM.from_pretrained(model_path(cfg), **kw)
    if cfg.method.name == "qlora":
        _one_4bit_layout(model)
    if cfg.method.name != "qlora" and not (sharded and dev.type == "cuda"):
        # transformers' stubs type PreTrainedModel.to by its first parameter (a model): a device is valid
        model.to(dev)  # type: ignore[arg-type]
    model.config.use_cache = False
    gc_kwargs = {"use_reentrant": False}
    if cfg.method.name == "qlora" and not sharded:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.train.gradient_checkpointing,
            gradient_checkpointing_kwargs=gc_kwargs,
        )
    elif cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    return model


def _one_4bit_layout(model: torch.nn.Module) -> None:
    """Keep bitsandbytes' 4-bit layers in one weight layout for the whole run. On CPUs with AVX512-BF16,
    the first no-grad forward (an eval) repacks a layer's weight for a bf16 inference kernel and marks
    its quant_state, and every later forward — training included — runs that kernel: an eval would
    change the training that follows it (measured: 1e-3 in the eval loss 3 steps later), and under FSDP,
    which gathers the weight anew in the original layout for every forward, the mark misreads it."""
    for m in model.modules():
        if getattr(m, "support_avx512bf16_for_cpu", False):
            m.support_avx512bf16_for_cpu = False  # type: ignore[assignment]


def trainable_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def is_peft(model: Model) -> TypeGuard[PeftModel]:
    """Whether peft wrapped the model (a full fine-tune never imports peft: 2-3 s of bitsandbytes)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def save_adapter(model: Model, folder: Path, state: dict[str, torch.Tensor] | None = None) -> int | None:
    """PEFT adapter (loadable with PeftModel.from_pretrained); bytes on disk. None for full fine-tuning.
    `state`: the parameters gathered from the ranks of a sharded model (runners.parallel.group)."""
    if not is_peft(model):
        return None
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(str(tmp), state_dict=state)
    _replace_dir(tmp, folder)
    return dir_bytes(folder)


def save_merged(model: Model, tok: PreTrainedTokenizerBase, folder: Path) -> None:
    """Merged weights (base + adapter; for full fine-tuning the trained weights) with the tokenizer."""
    tmp = folder.with_name(folder.name + ".tmp")
    merged = model.merge_and_unload() if is_peft(model) else model
    merged.save_pretrained(str(tmp))
    tok.save_pretrained(tmp)
    _replace_dir(tmp, folder)


def _replace_dir(tmp: Path, folder: Path) -> None:
    import shutil

    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)

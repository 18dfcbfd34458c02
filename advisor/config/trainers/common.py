"""What the three trainers share: Hugging Face optimizer names, DeepSpeed and FSDP settings, PEFT's
default LoRA targets, data files. Each maps onto tunewise's keys or is refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from advisor.config.trainers.source import Reader

# transformers' OptimizerNames (and axolotl's) → train.optimizer. Any other name is refused: its
# optimizer states (Adafactor's factored ones, Lion's single moment, GaLore's projections, 4-bit
# torchao states, …) are not what tunewise's optimizers hold.
OPTIMIZERS = {
    "adamw_torch": "adamw",
    "adamw_torch_fused": "adamw",
    "adamw_bnb_8bit": "adamw_8bit",
    "adamw_8bit": "adamw_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "paged_adamw_32bit": "paged_adamw_32bit",
    "sgd": "sgd",
}
# train.optimizer → the name each tool writes (transformers' names; all three use them)
OPTIMIZER_NAMES = {
    "adamw": "adamw_torch",
    "adamw_8bit": "adamw_bnb_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "paged_adamw_32bit": "paged_adamw_32bit",
    "sgd": "sgd",
}
# PEFT's default LoRA targets when none are named (peft.utils.constants.
# TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING; tests/advisor/test_from_trl.py holds them equal)
PEFT_DEFAULT_TARGETS = {
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "mixtral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"),
    "gemma3_text": ("q_proj", "v_proj"),
    "gpt2": ("c_attn",),
}
# FSDP sharding strategies (torch's names, as HF/accelerate/axolotl write them) → parallel
SHARDING = {"FULL_SHARD": "fsdp", "SHARD_GRAD_OP": "zero2", "NO_SHARD": "ddp"}
GPU_COUNT_NOTE = "the launcher decides how many GPUs run it (not in the file); give gpu.count=N"


def optimizer(r: Reader, key: str, default: str | None = None, why: str = "") -> None:
    name = r.get(key)
    if name is None:
        if default is not None:
            r.default("train.optimizer", OPTIMIZERS[default], why or f"the default {key}: {default}")
        return
    ours = OPTIMIZERS.get(str(name).lower())
    if ours is None:
        r.refuse(
            key,
            f"the {name} optimizer's states are not modelled (tunewise models "
            f"{', '.join(sorted(OPTIMIZERS))})",
            ["train.optimizer"],
        )
        return
    r.put("train.optimizer", ours, key)


def warmup(r: Reader) -> None:
    """warmup_ratio (transformers 4), or warmup_steps below 1 (transformers 5: a ratio of the steps)."""
    ratio = r.number("warmup_ratio")
    if ratio is not None:
        r.put("train.warmup_ratio", ratio, "warmup_ratio")
        return
    steps = r.number("warmup_steps")
    if steps is not None and 0 < steps < 1:
        r.put("train.warmup_ratio", steps, "warmup_steps")
    elif steps:
        r.src.no_effect.append("warmup_steps")


def find_file(name: str, base: Path) -> Path | None:
    """A file a config names: as given (relative to the working directory), else relative to the
    config's folder or one of its parents (examples name files from their project's root)."""
    p = Path(name).expanduser()
    if p.is_file():
        return p
    if p.is_absolute():
        return None
    for folder in (base, *base.parents):
        if (folder / p).is_file():
            return folder / p
    return None


def load_doc(path: Path) -> Any:
    text = path.read_text()
    if path.suffix.lower() == ".json":
        return json.loads(text)
    return yaml.safe_load(text)


def deepspeed(r: Reader, key: str) -> None:
    """DeepSpeed's ZeRO stage and offload → parallel (a path or an inline mapping)."""
    value = r.get(key)
    if value is None:
        return
    doc: Any = value
    if isinstance(value, str):
        found = find_file(value, r.path.parent)
        if found is None:
            stage = next((s for s in ("3", "2") if f"z{s}" in value or f"zero{s}" in value), None)
            hint = f" (its name says ZeRO-{stage}: parallel=zero{stage})" if stage else ""
            r.refuse(key, f"the DeepSpeed file {value} is not there to read{hint}", ["parallel"])
            return
        try:
            doc = load_doc(found)
        except (OSError, ValueError, yaml.YAMLError) as e:
            r.refuse(key, f"cannot read the DeepSpeed file {found}: {e}", ["parallel"])
            return
    zero = (doc.get("zero_optimization") or {}) if isinstance(doc, dict) else {}
    stage = zero.get("stage", 0)
    for what, label in (("offload_param", "parameter"), ("offload_optimizer", "optimizer-state")):
        device = (zero.get(what) or {}).get("device")
        if device not in (None, "none"):
            r.refuse(
                f"{key}: zero_optimization.{what}.device",
                f"ZeRO {label} offload to {device} is not modelled (the GPU would hold less and each "
                "step wait on transfers)",
                ["parallel"],
                value=device,
            )
            return
    parallel = {0: "ddp", 2: "zero2", 3: "zero3"}.get(stage)
    if parallel is None:
        r.refuse(key, f"ZeRO stage {stage} is not modelled (tunewise models stages 0, 2 and 3)", ["parallel"])
        return
    r.put("parallel", parallel, key)
    r.src.not_modelled.append({"key": "gpu.count", "value": None, "why": GPU_COUNT_NOTE})


def _fsdp_options(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    if isinstance(value, list):
        return [str(v) for v in value]
    return ["full_shard"] if value is True else []


def fsdp(r: Reader, key: str, config_key: str, version_key: str | None = None) -> None:
    """HF/accelerate FSDP settings (`fsdp: full_shard auto_wrap` or a list, and `fsdp_config` with
    or without the `fsdp_` prefix, FSDP1 and FSDP2) → parallel; offload is refused."""
    opts = [o.lower() for o in _fsdp_options(r.get(key))]
    cfg = r.get(config_key) or {}
    if not isinstance(cfg, dict):
        cfg = {}
    c = {k.removeprefix("fsdp_"): v for k, v in cfg.items()}
    if not opts and not c:
        return
    offload = [
        k
        for k, v in cfg.items()
        if k.removeprefix("fsdp_") in ("offload_params", "cpu_offload") and v is True
    ]
    if "offload" in opts or offload:
        r.refuse(
            f"{config_key}.{offload[0]}" if offload else key,
            "FSDP parameter offload to CPU is not modelled (the GPU would hold less and each step "
            "wait on transfers)",
            ["parallel"],
            value=True if offload else r.doc.get(key),
        )
        r.used.add(config_key)
        return
    version = c.get("version") or (r.get(version_key) if version_key else None)
    strategy = str(c.get("sharding_strategy") or "").upper()
    if not strategy:
        strategy = next((o.upper() for o in opts if o.upper() in SHARDING or "hybrid" in o), "")
    reshard = c.get("reshard_after_forward")
    if str(version) == "2" and reshard is not None and not strategy:
        strategy = "FULL_SHARD" if reshard in (True, "FULL_SHARD") else "SHARD_GRAD_OP"
    strategy = strategy or "FULL_SHARD"  # FSDP's default
    parallel = SHARDING.get(strategy)
    if parallel is None:
        r.refuse(config_key if c else key, f"FSDP {strategy} is not modelled", ["parallel"], value=strategy)
        return
    r.put("parallel", parallel, key if opts else config_key)
    if c.get("activation_checkpointing") is True:
        r.put("train.gradient_checkpointing", True, config_key)
    r.src.not_modelled.append({"key": "gpu.count", "value": None, "why": GPU_COUNT_NOTE})


def data_file(r: Reader, key: str, name: str) -> bool:
    """data.path when `name` is a local file (else False: a Hub dataset, which advise cannot read
    offline; the caller says so)."""
    found = find_file(name, r.path.parent)
    if found is None or found.suffix.lower() not in (".jsonl", ".json", ".csv", ".parquet"):
        return False
    r.put("data.path", str(found), key)
    return True


def hub_data_note(r: Reader, key: str) -> None:
    r.unmodelled(
        key,
        "not a local file: tunewise reads no Hub datasets (offline), so the run is sized from "
        "data.rows × data.avg_tokens; give data.path=FILE for your data's own token counts",
    )


def slice_rows(split: Any) -> int | None:
    """N of a `train[:N]` split (datasets' slicing), else None."""
    if not isinstance(split, str) or "[:" not in split or not split.endswith("]"):
        return None
    n = split.split("[:", 1)[1][:-1]
    return int(n) if n.isdigit() else None


def attention(r: Reader, key: str, names: dict[str, str], default_why: str) -> None:
    """train.attention from the tool's attention key (`names`: its values → ours; unset: sdpa)."""
    value = r.get(key)
    if value is None:
        r.default("train.attention", "sdpa", default_why)
    elif str(value) in names:
        r.put("train.attention", names[str(value)], key)
    else:
        allowed = ", ".join(names)
        r.refuse(key, f"{value} attention is not modelled ({allowed} are)", ["train.attention"])


def liger(r: Reader, key: str) -> None:
    """Liger's kernels: the fused loss is modelled, the other kernels' savings are not."""
    if r.flag(key):
        r.put("train.chunked_loss", True, key)
        why = "Liger's other fused kernels save fewer activations: the estimate is an upper bound"
        r.src.not_modelled.append({"key": key, "value": True, "why": why})


def lora_variants(r: Reader, dora_key: str) -> None:
    """The LoRA variants the estimator does not model are refused: DoRA, LoRA on parameters."""
    if r.flag(dora_key):
        r.refuse(dora_key, "DoRA's magnitude vectors and per-step weight norms are not modelled", ["method"])
    if r.has("lora_target_parameters"):
        r.refuse(
            "lora_target_parameters",
            "LoRA on parameters (MoE experts) is not modelled",
            ["method.target_modules"],
        )

"""TRL's `trl sft --config FILE` (ScriptArguments + SFTConfig + ModelConfig + DatasetMixtureConfig in
one YAML or JSON; TRL 1.16) — or a plain transformers TrainingArguments file — ↔ tunewise keys.

Defaults: SFTConfig's when the file has an SFT key (max_length 1024, packing false,
gradient_checkpointing true, learning_rate 2e-5, bf16 on), else TrainingArguments' (gradient
checkpointing off, learning_rate 5e-5, no bf16); both: per_device_train_batch_size 8,
gradient_accumulation_steps 1, num_train_epochs 3. ModelConfig: dtype float32 (the weights load in
fp32 unless `dtype` says otherwise — with bf16 on that is tunewise's amp_bf16), use_peft false (full
fine-tuning), lora_r 16, lora_alpha 32, lora_dropout 0.05, targets PEFT's per-architecture default,
use_bnb_nested_quant false (no double quantization), bnb_4bit_quant_type nf4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advisor.config.schema import RunConfig
from advisor.config.trainers import common
from advisor.config.trainers.model import base_model, model_id, prequantized
from advisor.config.trainers.source import Reader, Source
from advisor.config.trainers.written import (
    Export,
    alpha_int,
    data_format,
    dump_yaml,
    optimizer_name,
    refuse,
    trainer_parallel,
)

NAME = "trl"
SFT_KEYS = (
    "max_length",
    "max_seq_length",
    "packing",
    "dataset_text_field",
    "completion_only_loss",
    "assistant_only_loss",
    "use_peft",
    "lora_r",
    "dataset_name",
    "datasets",
    "padding_free",
)
TRAINING_KEYS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "learning_rate",
    "output_dir",
    "optim",
)
IMPLEMENTATIONS = {
    "flash_attention_2": "flash",
    "flash_attention_3": "flash",
    "sdpa": "sdpa",
    "eager": "eager",
}
DTYPES = ("auto", "bfloat16", "float16", "float32")
NO_EFFECT = {
    "output_dir",
    "logging_steps",
    "logging_dir",
    "save_steps",
    "save_strategy",
    "save_total_limit",
    "eval_strategy",
    "eval_steps",
    "per_device_eval_batch_size",
    "report_to",
    "run_name",
    "push_to_hub",
    "hub_model_id",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "weight_decay",
    "max_grad_norm",
    "warmup_steps",
    "dataset_text_field",
    "completion_only_loss",
    "assistant_only_loss",
    "dataset_train_split",
    "dataset_test_split",
    "dataset_config",
    "dataset_streaming",
    "eos_token",
    "pad_token",
    "chat_template_path",
    "model_revision",
    "lora_task_type",
    "use_rslora",
    "gradient_checkpointing_kwargs",
    "overwrite_output_dir",
    "dataloader_num_workers",
    "dataset_num_proc",
    "remove_unused_columns",
    "seed",
    "logging_first_step",
    "ddp_timeout",
    "resume_from_checkpoint",
    "do_train",
    "do_eval",
    "bnb_4bit_quant_storage",
    "trust_remote_code",
}
NO_EFFECT_PREFIXES = ("adam_", "hub_", "logging_", "save_", "eval_", "push_")


def score(doc: dict[str, Any]) -> int:
    return (3 if "model_name_or_path" in doc else 0) + sum(k in doc for k in SFT_KEYS + TRAINING_KEYS)


def read(doc: dict[str, Any], path: Path) -> Source:
    r = Reader(NAME, path, doc)
    sft = any(k in doc for k in SFT_KEYS)
    who = "SFTConfig's" if sft else "TrainingArguments'"
    arch = None
    if r.has("model_name_or_path"):
        arch = base_model(r, "model_name_or_path")
    else:
        r.refuse(
            "model_name_or_path",
            "the file names no model (a TrainingArguments file)",
            ["model", "model.config_path"],
            missing=True,
        )
    method = prequantized(r, _method(r), "model_name_or_path")
    if method is not None:
        r.src.values["method"] = method
    if method in ("lora", "qlora"):
        _lora(r, method, arch)
    for key, ours, integer, default in (
        ("per_device_train_batch_size", "train.micro_batch_size", True, 8),
        ("gradient_accumulation_steps", "train.grad_accum", True, 1),
        ("num_train_epochs", "train.epochs", False, 3.0),
        ("learning_rate", "train.lr", False, 2e-5 if sft else 5e-5),
    ):
        v = r.number(key, integer)
        r.put(ours, v, key) if v is not None else r.default(ours, default, f"{who} default {key}")
    length = r.number("max_length", integer=True) or r.number("max_seq_length", integer=True)
    if length is not None:
        r.put("train.seq_len", length, "max_length" if r.has("max_length") else "max_seq_length")
    elif sft:
        r.default("train.seq_len", 1024, "SFTConfig's default max_length")
    else:
        r.refuse(
            "max_length", "a TrainingArguments file has no sequence length", ["train.seq_len"], missing=True
        )
    steps = r.number("max_steps", integer=True)
    if steps is not None and steps > 0:
        r.put("train.max_steps", steps, "max_steps")
    common.warmup(r)
    packing = r.flag("packing")
    r.put("train.packing", packing, "packing") if packing is not None else r.default(
        "train.packing", False, f"{who} default packing"
    )
    if r.flag("padding_free"):
        r.unmodelled(
            "padding_free",
            "batches without padding are not modelled (the estimate pads to the longest example)",
        )
    common.optimizer(r, "optim", "adamw_torch_fused", "transformers' default optim")
    _precision(r, sft, method)
    gc = r.flag("gradient_checkpointing")
    if gc is None:
        r.default("train.gradient_checkpointing", sft, f"{who} default gradient_checkpointing")
    else:
        r.put("train.gradient_checkpointing", gc, "gradient_checkpointing")
    if r.flag("activation_offloading"):
        r.refuse(
            "activation_offloading",
            "activations offloaded to CPU are not modelled",
            ["train.gradient_checkpointing"],
        )
    common.attention(r, "attn_implementation", IMPLEMENTATIONS, "transformers' default attention")
    common.liger(r, "use_liger_kernel")
    common.deepspeed(r, "deepspeed")
    common.fsdp(r, "fsdp", "fsdp_config")
    _data(r)
    seed = r.number("seed", integer=True)
    r.put("seed", seed, "seed") if seed is not None else r.default("seed", 42, "transformers' default seed")
    for key, why in (
        (
            "lora_modules_to_save",
            "these modules train in full beside the adapters: their gradients and optimizer states are not in the estimate",
        ),
        ("tf32", "TF32 speeds fp32 matmuls only; the time model does not distinguish it"),
        ("torch_compile", "compiled kernels change the step time; the estimate is for eager PyTorch"),
        ("model_init_kwargs", "extra from_pretrained arguments are not read"),
    ):
        r.unmodelled_if_on(key, why)
    return r.finish(NO_EFFECT, NO_EFFECT_PREFIXES)


def _method(r: Reader) -> str:
    four, eight = r.flag("load_in_4bit"), r.flag("load_in_8bit")
    if eight:
        r.refuse(
            "load_in_8bit",
            "8-bit base weights (LLM.int8) are not modelled (16-bit LoRA and 4-bit QLoRA are)",
            ["method"],
        )
    if not r.flag("use_peft"):
        r.src.read.append({"key": "use_peft", "value": r.doc.get("use_peft", False), "as": "method=full"})
        if four:
            r.refuse("load_in_4bit", "4-bit weights without an adapter cannot be trained", ["method"])
        return "full"
    method = "qlora" if four else "lora"
    r.src.read.append({"key": "use_peft", "value": True, "as": f"method={method}"})
    return method


def _lora(r: Reader, method: str, arch: str | None) -> None:
    for key, ours, integer, default in (
        ("lora_r", "method.r", True, 16),
        ("lora_alpha", "method.alpha", False, 32),
        ("lora_dropout", "method.dropout", False, 0.05),
    ):
        v = r.number(key, integer)
        r.put(ours, v, key) if v is not None else r.default(ours, default, f"ModelConfig's default {key}")
    tm = r.get("lora_target_modules")
    if tm is not None:
        names = [tm] if isinstance(tm, str) else [str(x) for x in tm]
        r.put(
            "method.target_modules", "all-linear" if names == ["all-linear"] else names, "lora_target_modules"
        )
    elif arch in common.PEFT_DEFAULT_TARGETS:
        r.default(
            "method.target_modules", list(common.PEFT_DEFAULT_TARGETS[arch]), f"PEFT's default for {arch}"
        )
    else:
        r.refuse(
            "lora_target_modules",
            "no LoRA targets and no PEFT default known for this architecture",
            ["method.target_modules"],
        )
    common.lora_variants(r, "use_dora")
    if method == "qlora":
        qt = r.get("bnb_4bit_quant_type")
        r.put("method.quant_type", qt, "bnb_4bit_quant_type") if qt else r.default(
            "method.quant_type", "nf4", "ModelConfig's default bnb_4bit_quant_type"
        )
        dq = r.flag("use_bnb_nested_quant")
        r.put("method.double_quant", dq, "use_bnb_nested_quant") if dq is not None else r.default(
            "method.double_quant", False, "ModelConfig's default use_bnb_nested_quant"
        )


def _precision(r: Reader, sft: bool, method: str | None) -> None:
    dtype = str(r.get("dtype") or r.get("torch_dtype") or "float32")
    if dtype not in DTYPES:
        r.refuse("dtype", f"dtype {dtype} is not one of {', '.join(DTYPES)}", ["train.precision"])
        return
    bf16, fp16 = r.flag("bf16"), r.flag("fp16")
    if bf16 is None:
        bf16 = sft and not fp16
    half = "bf16" if dtype in ("bfloat16", "auto") else "fp16" if dtype == "float16" else None
    if bf16:
        precision = "bf16" if half else "amp_bf16"
    elif fp16:
        precision = "fp16" if half else "amp_fp16"
    else:
        precision = half or "fp32"
    if method == "qlora" and precision.startswith("amp"):
        precision = precision.removeprefix("amp_")  # the 4-bit base computes in the bf16/fp16 compute dtype
    key = (
        "dtype"
        if r.has("dtype")
        else "torch_dtype"
        if r.has("torch_dtype")
        else "bf16"
        if r.has("bf16")
        else "fp16"
        if r.has("fp16")
        else None
    )
    if key is None:
        r.default(
            "train.precision",
            precision,
            "ModelConfig's default dtype float32 with SFTConfig's bf16 autocast"
            if sft
            else "fp32 (no dtype, bf16 or fp16)",
        )
    else:
        r.put("train.precision", precision, key)
        r.used.update({"bf16", "fp16"})
    if dtype == "auto":
        r.src.not_modelled.append(
            {"key": "dtype", "value": "auto", "why": "the checkpoint's own dtype, read as bf16"}
        )


def _data(r: Reader) -> None:
    sets = r.get("datasets")
    if isinstance(sets, list) and len(sets) == 1 and isinstance(sets[0], dict):
        files = sets[0].get("data_files")
        file = files[0] if isinstance(files, list) and len(files) == 1 else files
        rows = common.slice_rows(sets[0].get("split"))
        if rows is not None:
            r.put("data.rows", rows, "datasets")
        if isinstance(file, str) and common.data_file(r, "datasets", file):
            return
        common.hub_data_note(r, "datasets")
    elif sets:
        r.unmodelled("datasets", "several datasets: tunewise reads one data file (give data.path=FILE)")
    name = r.get("dataset_name")
    if name is not None and not (common.data_file(r, "dataset_name", str(name))):
        common.hub_data_note(r, "dataset_name")


# ---------------------------------------------------------------------------------------------------
def export(cfg: RunConfig, name: str, folder: Path) -> Export:
    """The `trl sft --config` YAML of `cfg`."""
    t, m = cfg.train, cfg.method
    p = cfg.precision
    dtype, bf16, fp16 = {
        "bf16": ("bfloat16", True, False),
        "amp_bf16": ("float32", True, False),
        "fp16": ("float16", False, True),
        "amp_fp16": ("float32", False, True),
        "fp32": ("float32", False, False),
    }[p]
    if m.name == "qlora" and p.startswith("amp"):
        raise refuse(NAME, "train.precision", p, "TRL's 4-bit base computes in the dtype it loads in")
    doc: dict[str, Any] = {"model_name_or_path": model_id(cfg.model), "dtype": dtype}
    if cfg.model.trust_remote_code:
        doc["trust_remote_code"] = True
    if m.is_adapter:
        tm = m.target_modules
        doc.update(
            use_peft=True,
            lora_r=m.r,
            lora_alpha=alpha_int(cfg, NAME),
            lora_dropout=m.dropout,
            lora_target_modules="all-linear" if tm == "all-linear" else list(tm),
        )
        if m.name == "qlora":
            doc.update(
                load_in_4bit=True, bnb_4bit_quant_type=m.quant_type, use_bnb_nested_quant=m.double_quant
            )
    files: dict[str, str] = {}
    notes: list[str] = []
    data_name = ""
    if cfg.data.path:
        data = str(Path(cfg.data.path).resolve())
        if data_format(cfg) != "chat" or cfg.data.field_name("messages") != "messages":
            data_name = f"{name}.messages.jsonl"  # written by the caller (sweep.export): the rows as messages
            data = str(folder.resolve() / data_name)
            notes.append(
                f"{data_name}: {cfg.data.path}'s rows as chat messages (TRL's SFT reads `messages` rows)"
            )
        doc["datasets"] = [{"path": "json", "data_files": data, "split": f"train[:{cfg.data.rows}]"}]
    doc.update(
        max_length=t.seq_len,
        packing=t.packing,
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=float(t.epochs),
    )
    if t.max_steps:
        doc["max_steps"] = t.max_steps
    doc.update(
        learning_rate=cfg.lr,
        lr_scheduler_type="cosine",
        warmup_steps=t.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the steps
        weight_decay=0.0,
        optim=optimizer_name(cfg),
        bf16=bf16,
        fp16=fp16,
        gradient_checkpointing=t.gradient_checkpointing,
        attn_implementation={"flash": "flash_attention_2", "sdpa": "sdpa", "eager": "eager"}[t.attention],
    )
    if t.chunked_loss:
        raise refuse(
            NAME,
            "train.chunked_loss",
            True,
            "TRL's fused loss comes only with all of Liger's kernels (use_liger_kernel)",
        )
    doc["seed"] = cfg.seed
    doc.update(trainer_parallel(cfg, folder, name, files, {"fsdp_version": 2, "reshard_after_forward": True}))
    doc.update(output_dir=f"outputs/{name}", report_to="tensorboard", logging_steps=10)
    main = f"{name}.yaml"
    n = cfg.gpu.count
    files[main] = dump_yaml(
        doc,
        f"TRL SFT config written by `tunewise export` ({cfg.model.name}, {m.name}).\nRun: trl sft --config {main}",
    )
    command = (
        "trl sft --config {config}"
        if n == 1
        else f"accelerate launch --num_processes {n} -m trl.scripts.sft --config {{config}}"
    )
    return Export(NAME, main, files, command, notes, messages_file=data_name if notes else None)

"""axolotl's YAML (axolotl.utils.schemas.config.AxolotlInputConfig, axolotl 0.19) ↔ tunewise keys.

Defaults are axolotl's own where the file leaves a key out: sequence_len 512, micro_batch_size 1,
gradient_accumulation_steps 1, num_epochs 1, optimizer adamw_torch_fused, lora_dropout 0.0,
gradient_checkpointing false, bf16 auto (bf16 where the card has it), and for QLoRA nf4 with double
quantization (axolotl's loader). Weights load in bf16 whenever bf16 is on (`resolve_dtype`), so
`bf16` is tunewise's pure-bf16 precision; fp32 master weights with autocast cannot be said in axolotl.
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
    deepspeed_file,
    dump_yaml,
    optimizer_name,
    refuse,
)

NAME = "axolotl"
MARKERS = ("base_model", "micro_batch_size", "sequence_len", "num_epochs", "adapter", "lora_target_linear")
ATTENTION = {"flash_attention": "flash", "sdp_attention": "sdpa", "eager_attention": "eager"}
IMPLEMENTATIONS = {
    "flash_attention_2": "flash",
    "flash_attention_3": "flash",
    "sdpa": "sdpa",
    "eager": "eager",
}
LIGER_KERNELS = ("liger_rope", "liger_rms_norm", "liger_glu_activation", "liger_layer_norm", "liger_swiglu")
FUSED_LOSS_PLUGINS = ("cut_cross_entropy",)
NO_EFFECT = {
    "strict",
    "base_model_config",
    "model_type",
    "tokenizer_type",
    "tokenizer_config",
    "tokenizer_use_fast",
    "tokenizer_legacy",
    "output_dir",
    "dataset_prepared_path",
    "eval_sample_packing",
    "lr_scheduler",
    "lr_scheduler_kwargs",
    "cosine_min_lr_ratio",
    "weight_decay",
    "max_grad_norm",
    "logging_steps",
    "evals_per_epoch",
    "eval_steps",
    "saves_per_epoch",
    "save_steps",
    "save_strategy",
    "eval_strategy",
    "save_total_limit",
    "resume_from_checkpoint",
    "auto_resume_from_checkpoints",
    "special_tokens",
    "chat_template",
    "default_system_message",
    "train_on_inputs",
    "group_by_length",
    "use_tensorboard",
    "loss_watchdog_threshold",
    "loss_watchdog_patience",
    "early_stopping_patience",
    "warmup_steps",
    "lora_model_dir",
    "lora_fan_in_fan_out",
    "peft_use_rslora",
    "loraplus_lr_ratio",
    "loraplus_lr_embedding",
    "gradient_checkpointing_kwargs",
    "fsdp_final_state_dict_type",
    "dataset_processes",
    "dataset_num_proc",
    "shuffle_merged_datasets",
    "debug",
    "ddp_timeout",
    "ddp_bucket_cap_mb",
    "ddp_find_unused_parameters",
    "save_safetensors",
    "save_only_model",
    "load_best_model_at_end",
    "metric_for_best_model",
    "greater_is_better",
    "include_tokens_per_second",
    "profiler_steps",
    "plugins",
    "xformers_attention",
    "sdp_attention",
    "flash_attention",
    "eager_attention",
    "sage_attention",
    "flex_attention",
    "flash_attn_cross_entropy",
    "flash_attn_rms_norm",
    "flash_attn_fuse_mlp",
    "test_datasets",
    "hub_model_id",
    "hub_strategy",
    "push_dataset_to_hub",
    "hf_use_auth_token",
    "merge_lora",
}
NO_EFFECT_PREFIXES = ("wandb_", "mlflow_", "comet_", "trackio_", "dataloader_", "save_", "eval_", "hub_")


def score(doc: dict[str, Any]) -> int:
    return (10 if "base_model" in doc else 0) + sum(k in doc for k in MARKERS)


def read(doc: dict[str, Any], path: Path) -> Source:
    r = Reader(NAME, path, doc)
    arch = base_model(r, "base_model")
    method = _method(r)
    method = prequantized(r, method, "base_model")
    if method is not None:
        r.src.values["method"] = method
    if method in ("lora", "qlora"):
        _lora(r, method, arch)
    _train(r)
    common.deepspeed(r, "deepspeed")
    common.fsdp(r, "fsdp", "fsdp_config", "fsdp_version")
    _data(r)
    if r.has("trust_remote_code"):
        r.put("model.trust_remote_code", bool(r.flag("trust_remote_code")), "trust_remote_code")
    seed = r.number("seed", integer=True)
    if seed is not None:
        r.put("seed", seed, "seed")
    for key, why in (
        ("unfrozen_parameters", "training a chosen subset of the weights is not modelled"),
        ("relora", "ReLoRA's merge-and-restart cycles are not modelled"),
        ("lisa_n_layers", "LISA's layer sampling is not modelled"),
        ("gptq", "GPTQ-quantized base weights are not modelled (tunewise models bitsandbytes 4-bit)"),
        ("rl", "preference / RL training (a reference model, several forwards per step) is not modelled"),
        ("reward_model", "reward-model training is not modelled"),
        ("process_reward_model", "reward-model training is not modelled"),
        ("qat", "quantization-aware training is not modelled"),
    ):
        if r.get(key) not in (None, False):
            r.refuse(key, why, ["method"])
    for key, why in (
        ("torch_compile", "compiled kernels change the step time; the estimate is for eager PyTorch"),
        ("tokens", "added tokens grow the embedding and lm_head"),
        (
            "pad_to_sequence_len",
            "pads every micro-batch to sequence_len; the estimate pads to the longest example",
        ),
        ("tf32", "TF32 speeds fp32 matmuls only; the time model does not distinguish it"),
        (
            "lora_modules_to_save",
            "these modules train in full beside the adapters: their gradients and optimizer states are not in the estimate",
        ),
        ("gpu_memory_limit", "a cap on the loader's memory, not on training"),
    ):
        r.unmodelled_if_on(key, why)
    return r.finish(NO_EFFECT, NO_EFFECT_PREFIXES)


def _method(r: Reader) -> str | None:
    adapter = r.get("adapter")
    four, eight = r.flag("load_in_4bit"), r.flag("load_in_8bit")
    if eight:
        r.refuse(
            "load_in_8bit",
            "8-bit base weights (LLM.int8) are not modelled (tunewise models 16-bit LoRA and 4-bit QLoRA)",
            ["method"],
        )
    if adapter is None:
        r.src.read.append({"key": "adapter", "value": None, "as": "method=full (no adapter)"})
        return "full"
    if adapter not in ("lora", "qlora"):
        r.refuse(
            "adapter", f"the {adapter} adapter is not modelled (tunewise models lora and qlora)", ["method"]
        )
        return None
    method = "qlora" if adapter == "qlora" or four else "lora"
    r.src.read.append({"key": "adapter", "value": adapter, "as": f"method={method}"})
    if adapter == "lora" and four:
        r.src.read.append(
            {"key": "load_in_4bit", "value": True, "as": "method=qlora (LoRA on 4-bit weights)"}
        )
    return method


def _lora(r: Reader, method: str, arch: str | None) -> None:
    rank = r.number("lora_r", integer=True)
    if rank is None:
        r.refuse("lora_r", "the file sets no LoRA rank (axolotl has no default)", ["method.r"], missing=True)
    else:
        r.put("method.r", rank, "lora_r")
    alpha = r.number("lora_alpha")
    if alpha is not None:
        r.put("method.alpha", alpha, "lora_alpha")
    else:
        r.default("method.alpha", None, "no lora_alpha: tunewise's 2 × r")
    dropout = r.number("lora_dropout")
    if dropout is not None:
        r.put("method.dropout", dropout, "lora_dropout")
    else:
        r.default("method.dropout", 0.0, "axolotl's default lora_dropout")
    if r.flag("lora_target_linear"):
        r.put("method.target_modules", "all-linear", "lora_target_linear")
        r.used.add("lora_target_modules")
    elif r.has("lora_target_modules"):
        tm = r.get("lora_target_modules")
        r.put("method.target_modules", [tm] if isinstance(tm, str) else list(tm), "lora_target_modules")
    elif arch in common.PEFT_DEFAULT_TARGETS:
        r.default(
            "method.target_modules", list(common.PEFT_DEFAULT_TARGETS[arch]), "PEFT's default for " + arch
        )
    else:
        r.refuse(
            "lora_target_modules",
            "no LoRA targets and no PEFT default known for this architecture",
            ["method.target_modules"],
        )
    common.lora_variants(r, "peft_use_dora")
    if r.has("peft_layers_to_transform"):
        r.refuse(
            "peft_layers_to_transform", "LoRA on some layers only is not modelled", ["method.target_modules"]
        )
    if method == "qlora":
        kw = r.get("bnb_config_kwargs") or {}
        if kw.get("bnb_4bit_quant_type"):
            r.put("method.quant_type", kw["bnb_4bit_quant_type"], "bnb_config_kwargs")
        else:
            r.default("method.quant_type", "nf4", "axolotl's QLoRA loader")
        if "bnb_4bit_use_double_quant" in kw:
            r.put("method.double_quant", bool(kw["bnb_4bit_use_double_quant"]), "bnb_config_kwargs")
        else:
            r.default("method.double_quant", True, "axolotl's QLoRA loader")


def _train(r: Reader) -> None:
    for key, ours, integer, default in (
        ("sequence_len", "train.seq_len", True, 512),
        ("micro_batch_size", "train.micro_batch_size", True, 1),
        ("num_epochs", "train.epochs", False, 1.0),
    ):
        v = r.number(key, integer)
        if v is not None:
            r.put(ours, v, key)
        else:
            r.default(ours, default, f"axolotl's default {key}")
    accum = r.number("gradient_accumulation_steps", integer=True)
    batch = r.number("batch_size", integer=True)
    if accum is not None:
        r.put("train.grad_accum", accum, "gradient_accumulation_steps")
    elif batch is not None:
        micro = int(r.src.values.get("train.micro_batch_size") or 1)
        r.put("train.grad_accum", max(1, batch // micro), "batch_size")
    else:
        r.default("train.grad_accum", 1, "axolotl's default gradient_accumulation_steps")
    steps = r.number("max_steps", integer=True)
    if steps:
        r.put("train.max_steps", steps, "max_steps")
    lr = r.number("learning_rate")
    if lr is not None:
        r.put("train.lr", lr, "learning_rate")
    warmup = r.number("warmup_ratio")
    if warmup is not None:
        r.put("train.warmup_ratio", warmup, "warmup_ratio")
    packing = r.flag("sample_packing")
    if packing is not None:
        r.put("train.packing", packing, "sample_packing")
    else:
        r.default("train.packing", False, "axolotl's default sample_packing")
    common.optimizer(r, "optimizer", "adamw_torch_fused", "axolotl's default optimizer adamw_torch_fused")
    _precision(r)
    gc = r.get("gradient_checkpointing")
    if gc in ("offload", "offload_disk"):
        r.refuse(
            "gradient_checkpointing",
            f"checkpoints offloaded to {'disk' if 'disk' in gc else 'CPU'} are not modelled",
            ["train.gradient_checkpointing"],
        )
    elif gc is None:
        r.default("train.gradient_checkpointing", False, "axolotl's default gradient_checkpointing")
    else:
        r.put("train.gradient_checkpointing", bool(gc), "gradient_checkpointing")
    if r.get("activation_offloading") not in (None, False):
        r.refuse(
            "activation_offloading",
            "activations offloaded to CPU are not modelled",
            ["train.gradient_checkpointing"],
        )
    _attention(r)
    _loss(r)


def _precision(r: Reader) -> None:
    if r.flag("fp8"):
        r.refuse(
            "fp8",
            "fp8 training is not modelled (bf16, fp16, fp32 and their mixed forms are)",
            ["train.precision"],
        )
    bf16, fp16 = r.get("bf16", "auto"), r.flag("fp16")
    if r.flag("bfloat16"):
        bf16 = True
    if (bf16 is True or bf16 == "auto") and not fp16:
        r.put("train.precision", "bf16", "bf16" if r.has("bf16") else None)
        if not r.has("bf16"):
            r.src.defaulted.append(
                {
                    "as": "train.precision=bf16",
                    "why": "axolotl's default bf16: auto (bf16 where the card has it, else fp16)",
                }
            )
    elif fp16 or r.flag("float16"):
        r.put("train.precision", "fp16", "fp16")
    else:
        r.put("train.precision", "fp32", "bf16")
    r.used.update({"float32", "float16"})


def _attention(r: Reader) -> None:
    impl = r.get("attn_implementation")
    if impl is not None:
        ours = IMPLEMENTATIONS.get(str(impl))
        if ours is None:
            r.refuse(
                "attn_implementation",
                f"{impl} attention is not modelled (sdpa, flash, eager are)",
                ["train.attention"],
            )
        else:
            r.put("train.attention", ours, "attn_implementation")
        return
    for key in ("xformers_attention", "flex_attention", "sage_attention"):
        if r.flag(key):
            r.refuse(
                key,
                f"{key.split('_')[0]} attention is not modelled (sdpa, flash, eager are)",
                ["train.attention"],
            )
            return
    for key, ours in ATTENTION.items():
        if r.flag(key):
            r.put("train.attention", ours, key)
            return
    r.default("train.attention", "sdpa", "transformers' default attention")


def _loss(r: Reader) -> None:
    plugins = [str(p) for p in r.get("plugins") or []]
    fused = [p for p in plugins if any(f in p for f in FUSED_LOSS_PLUGINS)]
    if r.flag("chunked_cross_entropy"):
        r.put("train.chunked_loss", True, "chunked_cross_entropy")
    elif r.flag("liger_fused_linear_cross_entropy"):
        r.put("train.chunked_loss", True, "liger_fused_linear_cross_entropy")
    elif fused:
        r.put("train.chunked_loss", True, "plugins")
    for key in LIGER_KERNELS:
        if r.flag(key):
            r.unmodelled(key, "a fused kernel that saves fewer activations: the estimate is an upper bound")


def _data(r: Reader) -> None:
    sets = r.get("datasets")
    if not sets:
        return
    if not isinstance(sets, list) or len(sets) != 1 or not isinstance(sets[0], dict):
        r.unmodelled("datasets", "several datasets: tunewise reads one data file (give data.path=FILE)")
        return
    d = sets[0]
    if not common.data_file(r, "datasets", str(d.get("path", ""))):
        common.hub_data_note(r, "datasets")
    kind = d.get("type")
    if kind == "alpaca":
        r.put("data.format", "instruction", "datasets")
    elif kind in ("chat_template", "sharegpt"):
        r.put("data.format", "chat", "datasets")
        if d.get("field_messages"):
            r.put("data.fields.messages", d["field_messages"], "datasets")
    elif isinstance(kind, dict):
        for ours, theirs in (
            ("instruction", "field_instruction"),
            ("input", "field_input"),
            ("output", "field_output"),
        ):
            if kind.get(theirs):
                r.put(f"data.fields.{ours}", kind[theirs], "datasets")
        r.put("data.format", "instruction", "datasets")
    rows = common.slice_rows(d.get("split"))
    if rows is not None:
        r.put("data.rows", rows, "datasets")
    val = r.number("val_set_size")
    if val is not None and 0 < val < 1:
        r.put("data.val_fraction", val, "val_set_size")


# ---------------------------------------------------------------------------------------------------
def export(cfg: RunConfig, name: str, folder: Path) -> Export:
    """The axolotl YAML of `cfg` (every setting the run used); `folder` is where it is written."""
    t, m = cfg.train, cfg.method
    if cfg.precision.startswith("amp"):
        raise refuse(
            NAME,
            "train.precision",
            cfg.precision,
            "axolotl loads the weights in bf16/fp16 whenever mixed precision is on (no fp32 master weights)",
        )
    doc: dict[str, Any] = {"base_model": model_id(cfg.model)}
    if cfg.model.trust_remote_code:
        doc["trust_remote_code"] = True
    if m.is_adapter:
        doc["adapter"] = m.name
        if m.name == "qlora":
            doc["load_in_4bit"] = True
            if (m.quant_type, m.double_quant) != ("nf4", True):
                doc["bnb_config_kwargs"] = {
                    "bnb_4bit_quant_type": m.quant_type,
                    "bnb_4bit_use_double_quant": m.double_quant,
                }
        doc["lora_r"] = m.r
        doc["lora_alpha"] = alpha_int(cfg, NAME)
        doc["lora_dropout"] = m.dropout
        if m.target_modules == "all-linear":
            doc["lora_target_linear"] = True
        else:
            doc["lora_target_modules"] = list(m.target_modules)
    doc.update(
        sequence_len=t.seq_len,
        sample_packing=t.packing,
        micro_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_epochs=float(t.epochs),
    )
    if t.max_steps:
        doc["max_steps"] = t.max_steps
    doc.update(
        optimizer=optimizer_name(cfg),
        learning_rate=cfg.lr,
        lr_scheduler="cosine",
        warmup_ratio=t.warmup_ratio,
        weight_decay=0.0,
        bf16=cfg.precision == "bf16",
        fp16=cfg.precision == "fp16",
        gradient_checkpointing=t.gradient_checkpointing,
    )
    doc[{"flash": "flash_attention", "sdpa": "sdp_attention", "eager": "eager_attention"}[t.attention]] = True
    if t.chunked_loss:
        doc["chunked_cross_entropy"] = True
    doc["seed"] = cfg.seed
    doc.update(_datasets(cfg))
    files: dict[str, str] = {}
    if cfg.gpu.count > 1:
        if cfg.parallel in ("zero2", "zero3"):
            files[f"{name}.deepspeed.json"] = deepspeed_file(cfg.parallel)
            doc["deepspeed"] = str(folder.resolve() / f"{name}.deepspeed.json")
        elif cfg.parallel == "fsdp":
            doc["fsdp_version"] = 2
            doc["fsdp_config"] = {
                "offload_params": False,
                "reshard_after_forward": True,
                "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                "state_dict_type": "FULL_STATE_DICT",
            }
    doc["output_dir"] = f"./outputs/{name}"
    doc["use_tensorboard"] = True
    main = f"{name}.yaml"
    files[main] = dump_yaml(
        doc,
        f"axolotl config written by `tunewise export` ({cfg.model.name}, {m.name}).\nRun: axolotl train {main}",
    )
    n = cfg.gpu.count
    command = (
        "axolotl train {config}"
        if n == 1
        else f"accelerate launch --num_processes {n} -m axolotl.cli.train {{config}}"
    )
    return Export(NAME, main, files, command)


def _datasets(cfg: RunConfig) -> dict[str, Any]:
    d = cfg.data
    if not d.path:
        return {}
    entry: dict[str, Any] = {"path": str(Path(d.path).resolve())}
    if data_format(cfg) == "chat":
        entry.update(type="chat_template", field_messages=d.field_name("messages"))
    else:
        names = {k: d.field_name(k) for k in ("instruction", "input", "output")}
        if names == {k: k for k in names}:
            entry["type"] = "alpaca"
        else:
            entry["type"] = {
                "field_instruction": names["instruction"],
                "field_input": names["input"],
                "field_output": names["output"],
                "format": "{instruction}\n{input}",
                "no_input_format": "{instruction}",
            }
    entry["split"] = f"train[:{d.rows}]"
    return {"datasets": [entry], "val_set_size": d.val_fraction}

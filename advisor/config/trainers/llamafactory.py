"""LLaMA-Factory's YAML (llamafactory.hparams: ModelArguments, DataArguments, FinetuningArguments and
transformers' Seq2SeqTrainingArguments; LLaMA-Factory 0.9.5) ↔ tunewise keys.

LLaMA-Factory's own defaults where the file leaves a key out: finetuning_type lora, lora_rank 8,
lora_alpha 2 × rank, lora_dropout 0, lora_target all, cutoff_len 2048, packing only for pre-training,
gradient checkpointing on (disable_gradient_checkpointing false), flash_attn auto (transformers'
choice: sdpa); transformers' for the trainer (per_device_train_batch_size 8, gradient_accumulation_steps
1, num_train_epochs 3, learning_rate 5e-5). Precision (llamafactory.model.adapter.init_adapter): the
weights load in the compute dtype and the trainable parameters are upcast to fp32 unless pure_bf16 —
so full fine-tuning with bf16 is tunewise's amp_bf16 (fp32 weights, bf16 autocast), pure_bf16 its
bf16, and LoRA/QLoRA with bf16 its bf16 (16-bit base, fp32 adapters).
Datasets are names in `dataset_dir`/dataset_info.json; one local file there is read as data.path.
"""

from __future__ import annotations

import json
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

NAME = "llamafactory"
MARKERS = (
    "finetuning_type",
    "stage",
    "cutoff_len",
    "template",
    "lora_rank",
    "lora_target",
    "quantization_bit",
    "dataset",
    "dataset_dir",
    "max_samples",
    "flash_attn",
    "pure_bf16",
)
ATTENTION = {"auto": "sdpa", "sdpa": "sdpa", "fa2": "flash", "fa3": "flash", "disabled": "eager"}
OTHER_OPTIMIZERS = ("use_galore", "use_apollo", "use_badam", "use_adam_mini", "use_muon")
NO_EFFECT = {
    "do_train",
    "do_eval",
    "do_predict",
    "template",
    "output_dir",
    "logging_steps",
    "save_steps",
    "plot_loss",
    "overwrite_output_dir",
    "save_only_model",
    "report_to",
    "lr_scheduler_type",
    "ddp_timeout",
    "resume_from_checkpoint",
    "preprocessing_num_workers",
    "dataloader_num_workers",
    "overwrite_cache",
    "eval_dataset",
    "per_device_eval_batch_size",
    "eval_strategy",
    "eval_steps",
    "save_strategy",
    "save_total_limit",
    "logging_dir",
    "run_name",
    "weight_decay",
    "max_grad_norm",
    "warmup_steps",
    "model_revision",
    "cache_dir",
    "use_fast_tokenizer",
    "split_special_tokens",
    "low_cpu_mem_usage",
    "push_to_hub",
    "hub_model_id",
    "tokenized_path",
    "buffer_size",
    "mix_strategy",
    "interleave_probs",
    "include_num_input_tokens_seen",
    "include_tokens_per_second",
    "compute_accuracy",
    "disable_shuffling",
    "print_param_status",
    "pissa_init",
    "pissa_iter",
    "pissa_convert",
    "use_rslora",
    "loraplus_lr_ratio",
    "loraplus_lr_embedding",
    "create_new_adapter",
    "adapter_name_or_path",
    "adapter_folder",
    "dataset_dir",
    "seed",
    "predict_with_generate",
    "val_size",
    "ignore_pad_token_for_loss",
    "include_effective_tokens_per_second",
    "trust_remote_code",
    "lora_alpha",
    "lora_dropout",
}
NO_EFFECT_PREFIXES = (
    "export_",
    "infer_",
    "vllm_",
    "sglang_",
    "adam_",
    "lr_scheduler",
    "hf_hub",
    "ms_hub",
    "om_hub",
)


def score(doc: dict[str, Any]) -> int:
    marks = sum(k in doc for k in MARKERS)  # model_name_or_path alone is TRL's and transformers' too
    return 4 * marks + (1 if marks and "model_name_or_path" in doc else 0)


def read(doc: dict[str, Any], path: Path) -> Source:
    r = Reader(NAME, path, doc)
    arch = base_model(r, "model_name_or_path")
    method = _method(r)
    method = prequantized(r, method, "model_name_or_path")
    if method is not None:
        r.src.values["method"] = method
    if method in ("lora", "qlora"):
        _lora(r, arch)
    _train(r, method)
    common.deepspeed(r, "deepspeed")
    common.fsdp(r, "fsdp", "fsdp_config")
    _data(r)
    if r.has("trust_remote_code"):
        r.put("model.trust_remote_code", bool(r.flag("trust_remote_code")), "trust_remote_code")
    seed = r.number("seed", integer=True)
    r.put("seed", seed, "seed") if seed is not None else r.default("seed", 42, "transformers' default seed")
    for key, why in (
        ("use_unsloth", "Unsloth's kernels and offloaded checkpoints are not modelled"),
        ("use_llama_pro", "LLaMA Pro's expanded blocks are not modelled"),
        ("mixture_of_depths", "mixture-of-depths is not modelled"),
        ("train_from_scratch", "training from random weights is not a fine-tuning tunewise models"),
    ):
        if r.flag(key) if key != "mixture_of_depths" else r.has(key):
            r.refuse(key, why, ["method"])
    for key, why in (
        (
            "additional_target",
            "these modules train in full beside the adapters: their gradients and optimizer states are not in the estimate",
        ),
        ("upcast_layernorm", "fp32 layer norms are not modelled"),
        ("upcast_lmhead_output", "fp32 lm_head outputs are not modelled"),
        ("rope_scaling", "RoPE scaling changes no memory tunewise models, but longer contexts may follow"),
        ("shift_attn", "shift short attention (LongLoRA) is not modelled"),
        ("resize_vocab", "a resized vocabulary grows the embedding and lm_head"),
        ("add_tokens", "added tokens grow the embedding and lm_head"),
        ("add_special_tokens", "added tokens grow the embedding and lm_head"),
        ("tf32", "TF32 speeds fp32 matmuls only; the time model does not distinguish it"),
        ("torch_compile", "compiled kernels change the step time; the estimate is for eager PyTorch"),
    ):
        r.unmodelled_if_on(key, why)
    return r.finish(NO_EFFECT, NO_EFFECT_PREFIXES)


def _method(r: Reader) -> str | None:
    stage = r.get("stage", "sft")
    if stage not in ("sft", "pt"):
        r.refuse("stage", f"stage {stage}: only supervised fine-tuning (sft, pt) is modelled", ["method"])
    kind = r.get("finetuning_type")
    if kind is None:
        kind = "lora"
        r.src.defaulted.append({"as": "method=lora", "why": "LLaMA-Factory's default finetuning_type: lora"})
    if kind not in ("lora", "full"):
        r.refuse("finetuning_type", f"{kind} fine-tuning is not modelled (lora and full are)", ["method"])
        return None
    bits = r.number("quantization_bit", integer=True)
    how = str(r.get("quantization_method", "bnb"))
    if bits is None:
        method = kind
    elif bits == 4 and how == "bnb" and kind == "lora":
        method = "qlora"
    elif bits == 8:
        r.refuse(
            "quantization_bit",
            "8-bit base weights are not modelled (16-bit LoRA and 4-bit QLoRA are)",
            ["method"],
        )
        return None
    else:
        r.refuse(
            "quantization_bit",
            f"{bits}-bit {how} quantization is not modelled (bitsandbytes 4-bit is)",
            ["method"],
        )
        return None
    if r.has("finetuning_type"):
        r.src.read.append({"key": "finetuning_type", "value": kind, "as": f"method={method}"})
    if method == "qlora":
        r.src.read.append(
            {"key": "quantization_bit", "value": bits, "as": "method=qlora (bitsandbytes 4-bit)"}
        )
        qt = r.get("quantization_type")
        r.put("method.quant_type", qt, "quantization_type") if qt else r.default(
            "method.quant_type", "nf4", "LLaMA-Factory's default quantization_type"
        )
        dq = r.flag("double_quantization")
        if dq is None:
            r.default("method.double_quant", True, "LLaMA-Factory's default double_quantization")
        else:
            r.put("method.double_quant", dq, "double_quantization")
    return method


def _lora(r: Reader, arch: str | None) -> None:
    del arch  # LLaMA-Factory's default target is `all`, not PEFT's per-architecture one
    rank = r.number("lora_rank", integer=True)
    if rank is None:
        rank = 8
        r.default("method.r", 8, "LLaMA-Factory's default lora_rank")
    else:
        r.put("method.r", rank, "lora_rank")
    alpha = r.number("lora_alpha")
    if alpha is None:
        r.default("method.alpha", None, "LLaMA-Factory's default lora_alpha: 2 × lora_rank")
    else:
        r.put("method.alpha", alpha, "lora_alpha")
    dropout = r.number("lora_dropout")
    if dropout is None:
        r.default("method.dropout", 0.0, "LLaMA-Factory's default lora_dropout")
    else:
        r.put("method.dropout", dropout, "lora_dropout")
    target = r.get("lora_target")
    if target is None:
        r.default("method.target_modules", "all-linear", "LLaMA-Factory's default lora_target: all")
    elif str(target).strip() == "all":
        r.put("method.target_modules", "all-linear", "lora_target")
    else:
        names = [
            s.strip() for s in (target if isinstance(target, list) else str(target).split(",")) if s.strip()
        ]
        r.put("method.target_modules", names, "lora_target")
    common.lora_variants(r, "use_dora")


def _train(r: Reader, method: str | None) -> None:
    for key, ours, integer, default, who in (
        ("cutoff_len", "train.seq_len", True, 2048, "LLaMA-Factory's"),
        ("per_device_train_batch_size", "train.micro_batch_size", True, 8, "transformers'"),
        ("gradient_accumulation_steps", "train.grad_accum", True, 1, "transformers'"),
        ("num_train_epochs", "train.epochs", False, 3.0, "transformers'"),
        ("learning_rate", "train.lr", False, 5e-5, "transformers'"),
    ):
        v = r.number(key, integer)
        if v is not None:
            r.put(ours, v, key)
        else:
            r.default(ours, default, f"{who} default {key}")
    steps = r.number("max_steps", integer=True)
    if steps is not None and steps > 0:
        r.put("train.max_steps", steps, "max_steps")
    common.warmup(r)
    packing, neat = r.flag("packing"), r.flag("neat_packing")
    if neat:
        r.put("train.packing", True, "neat_packing")
        r.src.not_modelled.append(
            {
                "key": "neat_packing",
                "value": True,
                "why": "packed without cross-attention between examples: read as train.packing",
            }
        )
    elif packing is not None:
        r.put("train.packing", packing, "packing")
    else:
        pt = r.doc.get("stage") == "pt"
        r.default("train.packing", pt, "LLaMA-Factory packs by default only for pre-training (stage pt)")
    common.optimizer(r, "optim", "adamw_torch_fused", "transformers' default optim")
    for key in OTHER_OPTIMIZERS:
        if r.flag(key):
            r.refuse(
                key,
                f"the {key.removeprefix('use_')} optimizer's states are not modelled",
                ["train.optimizer"],
            )
    _precision(r, method)
    if r.flag("disable_gradient_checkpointing"):
        r.put("train.gradient_checkpointing", False, "disable_gradient_checkpointing")
    else:
        r.default(
            "train.gradient_checkpointing",
            True,
            "LLaMA-Factory checkpoints by default (disable_gradient_checkpointing: false)",
        )
    if r.flag("use_unsloth_gc"):
        r.refuse(
            "use_unsloth_gc",
            "Unsloth's checkpoints offloaded to CPU are not modelled",
            ["train.gradient_checkpointing"],
        )
    common.attention(
        r, "flash_attn", ATTENTION, "LLaMA-Factory's default flash_attn: auto (transformers' choice)"
    )
    common.liger(r, "enable_liger_kernel")


def _precision(r: Reader, method: str | None) -> None:
    pure, bf16, fp16 = r.flag("pure_bf16"), r.flag("bf16"), r.flag("fp16")
    full = method == "full"
    if pure:
        r.put("train.precision", "bf16", "pure_bf16")
        if not full:
            r.src.not_modelled.append(
                {
                    "key": "pure_bf16",
                    "value": True,
                    "why": "adapters stay in bf16 (tunewise's estimate keeps them in fp32: a little more memory)",
                }
            )
        r.used.add("bf16")
    elif bf16:
        r.put("train.precision", "amp_bf16" if full else "bf16", "bf16")
    elif fp16:
        r.put("train.precision", "amp_fp16" if full else "fp16", "fp16")
    elif full:
        r.default(
            "train.precision",
            "fp32",
            "no bf16/fp16: LLaMA-Factory trains the upcast fp32 weights without autocast",
        )
    else:
        r.default(
            "train.precision",
            "bf16",
            "no bf16/fp16: LLaMA-Factory loads the base in the checkpoint's half precision",
        )


def _data(r: Reader) -> None:
    names = [s.strip() for s in str(r.get("dataset") or "").split(",") if s.strip()]
    rows = r.number("max_samples", integer=True)
    if rows is not None:
        n = max(1, len(names))
        r.put("data.rows", rows * n, "max_samples")
        if n > 1:
            r.src.not_modelled.append(
                {
                    "key": "max_samples",
                    "value": rows,
                    "why": f"a cap per dataset: {n} datasets hold at most {rows * n} rows",
                }
            )
    val = r.number("val_size")
    if val is not None and 0 < val < 1:
        r.put("data.val_fraction", val, "val_size")
    if not names:
        return
    if len(names) > 1:
        r.unmodelled("dataset", "several datasets: tunewise reads one data file (give data.path=FILE)")
        return
    folder = str(r.get("dataset_dir", "data"))
    info = common.find_file(str(Path(folder) / "dataset_info.json"), r.path.parent)
    entry = None
    if info is not None:
        try:
            entry = (json.loads(info.read_text()) or {}).get(names[0])
        except (OSError, ValueError):
            entry = None
    if not isinstance(entry, dict) or not entry.get("file_name"):
        common.hub_data_note(r, "dataset")
        return
    file = Path(str(entry["file_name"]))
    if not common.data_file(r, "dataset", str(file if file.is_absolute() else info.parent / file)):  # type: ignore[union-attr]
        common.hub_data_note(r, "dataset")
        return
    cols = entry.get("columns") or {}
    if entry.get("formatting", "alpaca") == "sharegpt":
        r.put("data.format", "chat", "dataset")
        if cols.get("messages"):
            r.put("data.fields.messages", cols["messages"], "dataset")
    else:
        r.put("data.format", "instruction", "dataset")
        for ours, theirs in (("instruction", "prompt"), ("input", "query"), ("output", "response")):
            if cols.get(theirs):
                r.put(f"data.fields.{ours}", cols[theirs], "dataset")


# ---------------------------------------------------------------------------------------------------
def export(cfg: RunConfig, name: str, folder: Path) -> Export:
    """The LLaMA-Factory YAML of `cfg`, its dataset_info.json (the data file registered under one
    name) and, for zero2/zero3, its DeepSpeed file."""
    t, m = cfg.train, cfg.method
    doc: dict[str, Any] = {"model_name_or_path": model_id(cfg.model)}
    if cfg.model.trust_remote_code:
        doc["trust_remote_code"] = True
    doc.update(stage="sft", do_train=True, finetuning_type="full" if m.name == "full" else "lora")
    if m.name == "qlora":
        doc.update(
            quantization_bit=4,
            quantization_method="bnb",
            quantization_type=m.quant_type,
            double_quantization=m.double_quant,
        )
    if m.is_adapter:
        tm = m.target_modules
        doc.update(
            lora_rank=m.r,
            lora_alpha=alpha_int(cfg, NAME),
            lora_dropout=m.dropout,
            lora_target="all" if tm == "all-linear" else ",".join(tm),
        )
    files: dict[str, str] = {}
    doc.update(_dataset(cfg, name, folder, files))
    doc.update(cutoff_len=t.seq_len, packing=t.packing)
    doc.update(
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=cfg.lr,
        num_train_epochs=float(t.epochs),
    )
    if t.max_steps:
        doc["max_steps"] = t.max_steps
    doc.update(
        lr_scheduler_type="cosine",
        warmup_steps=t.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the steps
        weight_decay=0.0,
        optim=optimizer_name(cfg),
    )
    doc.update(_precision_keys(cfg))
    if not t.gradient_checkpointing:
        doc["disable_gradient_checkpointing"] = True
    doc["flash_attn"] = {"flash": "fa2", "sdpa": "sdpa", "eager": "disabled"}[t.attention]
    if t.chunked_loss:
        raise refuse(
            NAME,
            "train.chunked_loss",
            True,
            "LLaMA-Factory's fused loss comes only with all of Liger's kernels (enable_liger_kernel)",
        )
    doc["seed"] = cfg.seed
    fsdp_config = {"fsdp_version": 2, "reshard_after_forward": True, "offload_params": False}
    doc.update(trainer_parallel(cfg, folder, name, files, fsdp_config))
    doc.update(output_dir=f"saves/{name}", report_to="tensorboard", logging_steps=10)
    main = f"{name}.yaml"
    n = cfg.gpu.count
    files[main] = dump_yaml(
        doc,
        f"LLaMA-Factory config written by `tunewise export` ({cfg.model.name}, {m.name}).\nRun: llamafactory-cli train {main}",
    )
    command = (
        "llamafactory-cli train {config}"
        if n == 1
        else f"FORCE_TORCHRUN=1 NPROC_PER_NODE={n} llamafactory-cli train {{config}}"
    )
    return Export(NAME, main, files, command)


def _precision_keys(cfg: RunConfig) -> dict[str, Any]:
    p, full = cfg.precision, cfg.method.name == "full"
    if full:
        keys = {
            "amp_bf16": {"bf16": True},
            "bf16": {"bf16": True, "pure_bf16": True},
            "amp_fp16": {"fp16": True},
            "fp32": {},
        }
    else:
        keys = {"bf16": {"bf16": True}, "fp16": {"fp16": True}}
    if p not in keys:
        why = (
            "LLaMA-Factory upcasts fully fine-tuned weights to fp32 unless pure_bf16 (there is no pure fp16)"
            if full
            else "LLaMA-Factory loads the base weights in half precision for LoRA"
        )
        raise refuse(NAME, "train.precision", p, why)
    return keys[p]


def _dataset(cfg: RunConfig, name: str, folder: Path, files: dict[str, str]) -> dict[str, Any]:
    d = cfg.data
    if not d.path:
        return {}
    entry: dict[str, Any] = {"file_name": str(Path(d.path).resolve())}
    if data_format(cfg) == "chat":
        entry.update(
            formatting="sharegpt",
            columns={"messages": d.field_name("messages")},
            tags={
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        )
    else:
        entry.update(
            formatting="alpaca",
            columns={
                "prompt": d.field_name("instruction"),
                "query": d.field_name("input"),
                "response": d.field_name("output"),
            },
        )
    files["dataset_info.json"] = json.dumps({name: entry}, indent=2) + "\n"
    return {
        "dataset": name,
        "dataset_dir": str(folder.resolve()),
        "max_samples": d.rows,
        "val_size": d.val_fraction,
    }

"""Values a config reads from outside conf/: this machine's RAM and cores, a Hugging Face config.json.

They are read once, when a config is first built; `RunConfig.to_dict()` records what was read
(`gpu.usable_mib`, the price per core × cores, the architecture), so loading a record on another
machine never reads that machine instead.
"""

from __future__ import annotations

import os
from typing import Any


def machine_ram_mib() -> int:
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
    text = cfg["text_config"] if isinstance(cfg.get("text_config"), dict) else cfg
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

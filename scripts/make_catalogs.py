"""Regenerate the model and GPU catalogs in conf/ from ../shared/reference/*.csv.

Run from the repository root: `python scripts/make_catalogs.py [REFERENCE_DIR]`. The YAML files are
committed; this script documents where every number came from and re-creates them when the
reference tables change. Plain YAML (no interpolation) so the advisor reads them without Hydra.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REF = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "reference"

MODEL_HEADER = """\
# Model architecture: {name} (Hugging Face model_type `{architecture}`).
# Source: shared/reference/models.csv; total_params verified equal to transformers' num_parameters()
# on the meta device. Field names follow the HF config. Counts are integers; sizes are in elements.
"""
MODEL_FIELDS = {
    "name": "catalog name",
    "architecture": "HF model_type (llama, mistral, mixtral, qwen2, qwen3, gemma2, gemma3_text, phi3, gpt2)",
    "hidden_size": "model width d (elements)",
    "num_hidden_layers": "decoder layers L",
    "num_attention_heads": "query heads",
    "num_key_value_heads": "key/value heads (GQA); equal to num_attention_heads for MHA",
    "intermediate_size": "MLP width (per expert for MoE)",
    "vocab_size": "vocabulary (rows of the embedding and lm_head)",
    "tie_word_embeddings": "lm_head shares the embedding matrix",
    "max_position_embeddings": "longest context the model was built for (tokens)",
    "head_dim": "per-head width; null = hidden_size / num_attention_heads",
    "num_local_experts": "MoE experts per layer (null = dense)",
    "num_experts_per_tok": "MoE experts active per token (top-k)",
    "total_params": "reference parameter count (transformers num_parameters())",
    "attention_bias": "bias on q/k/v/o projections; null = the family's default",
    "mlp_bias": "bias on the MLP projections; null = the family's default",
}


def _value(field: str, raw: str | None):
    if raw is None or raw == "":  # a field models.csv does not have (the biases): null
        return None
    if field in ("name", "architecture"):
        return raw
    if field == "tie_word_embeddings":
        return raw.lower() == "true"
    return int(raw)


def _yaml_scalar(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"' if any(c in v for c in ":#,[]{}") else v
    return str(v)


def make_models() -> None:
    with open(REF / "models.csv") as f:
        for row in csv.DictReader(f):
            name = row["name"]
            lines = [MODEL_HEADER.format(name=name, architecture=row["architecture"])]
            if row.get("notes"):
                lines.append(f"# Notes: {row['notes']}\n")
            for field, doc in MODEL_FIELDS.items():
                lines.append(f"{field}: {_yaml_scalar(_value(field, row.get(field)))}  # {doc}\n")
            lines.append(
                "# Where the weights come from for real runs (local folder or Hub id); null = estimate only.\n"
            )
            lines.append("path: null\n")
            lines.append("# Architecture from a local HF config.json instead of the fields above.\n")
            lines.append("config_path: null\n")
            lines.append("# Run code shipped with the model (never on unless you trust it).\n")
            lines.append("trust_remote_code: false\n")
            (ROOT / "conf" / "model" / f"{name}.yaml").write_text("".join(lines))


# Cards bitsandbytes' 4-bit kernels and 8-bit/paged optimizers support in the standard (CUDA) build.
# MI300X needs bitsandbytes' separate ROCm build, which tunewise does not assume.
BNB_UNSUPPORTED = {
    "mi300x": "bitsandbytes' CUDA build does not run on AMD GPUs (its ROCm backend is a separate build)"
}


def make_gpus() -> None:
    prices: dict[str, list[dict]] = {}
    with open(REF / "prices.csv") as f:
        for row in csv.DictReader(f):
            prices.setdefault(row["gpu_id"], []).append(row)
    with open(REF / "gpus.csv") as f:
        for row in csv.DictReader(f):
            gid = row["id"]
            out = [
                f"# GPU: {row['name']}. Source: shared/reference/gpus.csv ({row['source']}; confidence {row['confidence']}).\n",
                "# Prices: shared/reference/prices.csv, on-demand USD per GPU-hour with provider, tier and as-of date.\n",
                f"name: {gid}  # catalog name (gpu={gid})\n",
                f"display_name: {_yaml_scalar(row['name'])}  # how tables and reports name it\n",
                f"memory_gb: {row['memory_gb']}  # marketed memory (GB)\n",
                f"usable_mib: {row['usable_mib']}  # memory a process can use (MiB): the fit test uses this\n",
                f"bandwidth_gbs: {row['bandwidth_gbs']}  # HBM/GDDR bandwidth (GB/s)\n",
                f"bf16_dense_tflops: {row['bf16_dense_tflops']}  # dense bf16/fp16 tensor-core peak (TFLOP/s)\n",
                f"fp32_tflops: {row['fp32_tflops']}  # fp32 CUDA-core peak (TFLOP/s)\n",
                f"bf16_supported: {'true' if row['bf16_supported'] == 'yes' else 'false'}  # false: bf16 falls back to fp16\n",
                f"tdp_w: {row['tdp_w'] or 'null'}  # board power (W)\n",
                f"bnb_supported: {'false' if gid in BNB_UNSUPPORTED else 'true'}"
                + (
                    f"  # {BNB_UNSUPPORTED[gid]}\n"
                    if gid in BNB_UNSUPPORTED
                    else "  # bitsandbytes 4-bit and 8-bit optimizers run here\n"
                ),
                "count: 1  # GPUs per run (gpu.count)\n",
                "usd_per_hour: null  # price override per GPU-hour; null = catalog price (price.provider chooses the row)\n",
                "prices:\n",
            ]
            for p in prices.get(gid, []):
                out.append(f"  - provider: {_yaml_scalar(p['provider'])}\n")
                out.append(f"    tier: {p['tier']}  # specialist | hyperscaler | marketplace\n")
                out.append(f"    usd_per_gpu_hour: {p['usd_per_gpu_hour']}\n")
                out.append(f'    as_of: "{p["as_of"]}"\n')
                out.append(f"    source: {_yaml_scalar(p['source'])}\n")
                out.append("    per_core: false  # true: USD per core-hour (CPU rows)\n")
            if gid not in prices:
                out[-1] = "prices: []\n"
            (ROOT / "conf" / "gpu" / f"{gid}.yaml").write_text("".join(out))


# Hugging Face model ids each catalog architecture stands for (conf/hf_ids.yaml): the official base
# and instruct repos, and re-uploads under their own names. An entry with `max_position_embeddings`
# is the same architecture trained for another context length (Llama 3 vs 3.1, Qwen2.5 instruct).
# Re-uploads by MIRROR_ORGS under an official repo's name (and those names with a pre-quantized
# suffix) resolve without being listed. Only ids whose config.json matches the entry are listed.
HF_IDS: dict[str, list] = {
    "gpt2": ["openai-community/gpt2", "gpt2"],
    "llama-2-7b": ["meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf"],
    "llama-2-13b": ["meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-13b-chat-hf"],
    "llama-2-70b": ["meta-llama/Llama-2-70b-hf", "meta-llama/Llama-2-70b-chat-hf"],
    "llama-3.1-8b": [
        "meta-llama/Llama-3.1-8B",
        "meta-llama/Llama-3.1-8B-Instruct",
        "meta-llama/Meta-Llama-3.1-8B",
        "meta-llama/Meta-Llama-3.1-8B-Instruct",
        ("meta-llama/Meta-Llama-3-8B", 8192),
        ("meta-llama/Meta-Llama-3-8B-Instruct", 8192),
        ("unsloth/llama-3-8b", 8192),
        ("unsloth/llama-3-8b-Instruct", 8192),
    ],
    "llama-3.1-70b": [
        "meta-llama/Llama-3.1-70B",
        "meta-llama/Llama-3.1-70B-Instruct",
        "meta-llama/Meta-Llama-3.1-70B",
        "meta-llama/Meta-Llama-3.1-70B-Instruct",
        "meta-llama/Llama-3.3-70B-Instruct",
        ("meta-llama/Meta-Llama-3-70B", 8192),
        ("meta-llama/Meta-Llama-3-70B-Instruct", 8192),
        ("casperhansen/llama-3-70b-fp16", 8192),
    ],
    "llama-3.1-405b": [
        "meta-llama/Llama-3.1-405B",
        "meta-llama/Llama-3.1-405B-Instruct",
        "meta-llama/Meta-Llama-3.1-405B",
        "meta-llama/Meta-Llama-3.1-405B-Instruct",
    ],
    "llama-3.2-1b": ["meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B-Instruct"],
    "llama-3.2-3b": ["meta-llama/Llama-3.2-3B", "meta-llama/Llama-3.2-3B-Instruct"],
    "mistral-7b-v0.3": ["mistralai/Mistral-7B-v0.3", "mistralai/Mistral-7B-Instruct-v0.3"],
    "mixtral-8x7b": ["mistralai/Mixtral-8x7B-v0.1", "mistralai/Mixtral-8x7B-Instruct-v0.1"],
    "phi-3-mini": ["microsoft/Phi-3-mini-4k-instruct", ("microsoft/Phi-3-mini-128k-instruct", 131072)],
    "phi-4": ["microsoft/phi-4"],
    "qwen2.5-0.5b": ["Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B-Instruct"],
    "qwen2.5-1.5b": ["Qwen/Qwen2.5-1.5B", ("Qwen/Qwen2.5-1.5B-Instruct", 32768)],
    "qwen2.5-3b": ["Qwen/Qwen2.5-3B", "Qwen/Qwen2.5-3B-Instruct"],
    "qwen2.5-7b": ["Qwen/Qwen2.5-7B", ("Qwen/Qwen2.5-7B-Instruct", 32768)],
    "qwen2.5-14b": ["Qwen/Qwen2.5-14B", ("Qwen/Qwen2.5-14B-Instruct", 32768)],
    "qwen2.5-32b": ["Qwen/Qwen2.5-32B", ("Qwen/Qwen2.5-32B-Instruct", 32768)],
    "qwen2.5-72b": ["Qwen/Qwen2.5-72B", ("Qwen/Qwen2.5-72B-Instruct", 32768)],
    "qwen3-0.6b": ["Qwen/Qwen3-0.6B"],
    "qwen3-1.7b": ["Qwen/Qwen3-1.7B"],
    "qwen3-4b": [
        "Qwen/Qwen3-4B",
        ("Qwen/Qwen3-4B-Instruct-2507", 262144),
        ("Qwen/Qwen3-4B-Thinking-2507", 262144),
    ],
    "qwen3-8b": ["Qwen/Qwen3-8B"],
    "qwen3-14b": ["Qwen/Qwen3-14B"],
    "qwen3-32b": ["Qwen/Qwen3-32B"],
    "gemma-2-2b": ["google/gemma-2-2b", "google/gemma-2-2b-it"],
    "gemma-2-9b": ["google/gemma-2-9b", "google/gemma-2-9b-it"],
    "gemma-2-27b": ["google/gemma-2-27b", "google/gemma-2-27b-it"],
    "gemma-3-1b": ["google/gemma-3-1b-pt", "google/gemma-3-1b-it"],
    "smollm2-135m": ["HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M-Instruct"],
    "smollm2-360m": ["HuggingFaceTB/SmolLM2-360M", "HuggingFaceTB/SmolLM2-360M-Instruct"],
    "smollm2-1.7b": ["HuggingFaceTB/SmolLM2-1.7B", "HuggingFaceTB/SmolLM2-1.7B-Instruct"],
    "tinyllama-1.1b": [
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "TinyLlama/TinyLlama_v1.1",
        "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
    ],
}
MIRROR_ORGS = ["unsloth", "NousResearch"]  # re-upload official repos under the same name
PREQUANTIZED_SUFFIXES = ["-unsloth-bnb-4bit", "-bnb-4bit"]  # bitsandbytes 4-bit re-uploads

HF_IDS_HEADER = """\
# Hugging Face model ids → catalog architecture (conf/model/<name>.yaml), for configs that name a model by
# its Hub id (`tunewise advise from=axolotl.yaml`). Generated by scripts/make_catalogs.py; edit it there.
# advisor.config.hfids reads this file when the id is not in the local Hugging Face cache.
# `max_position_embeddings`: the same architecture trained for another context length.
"""


def make_hf_ids() -> None:
    lines = [HF_IDS_HEADER]
    lines.append("mirrors:  # re-uploads of an official repo under its own name, by these organisations\n")
    lines.append(f"  orgs: [{', '.join(MIRROR_ORGS)}]\n")
    lines.append("  prequantized_suffixes: [" + ", ".join(PREQUANTIZED_SUFFIXES) + "]  # 4-bit weights\n")
    lines.append("models:\n")
    for name, ids in HF_IDS.items():
        lines.append(f"  {name}:\n")
        for entry in ids:
            if isinstance(entry, tuple):
                lines.append(f"    - {{id: {entry[0]}, max_position_embeddings: {entry[1]}}}\n")
            else:
                lines.append(f"    - {entry}\n")
    (ROOT / "conf" / "hf_ids.yaml").write_text("".join(lines))


if __name__ == "__main__":
    make_models()
    make_gpus()
    make_hf_ids()
    print(f"wrote conf/model/*.yaml, conf/gpu/*.yaml and conf/hf_ids.yaml from {REF}")

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


if __name__ == "__main__":
    make_models()
    make_gpus()
    print(f"wrote conf/model/*.yaml and conf/gpu/*.yaml from {REF}")

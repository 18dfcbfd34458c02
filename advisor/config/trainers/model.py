"""The base model a trainer config names → model keys (advisor.config.hfids), shared by the readers;
and the id an export writes for a config's model."""

from __future__ import annotations

import json
from pathlib import Path

from advisor.config import catalog, hfids
from advisor.config.sections import ModelConfig
from advisor.config.trainers.source import Reader
from advisor.errors import ConfigError

MODEL_KEYS = ["model", "model.config_path"]  # command-line keys that say which architecture it is
# pre-quantized weights other than bitsandbytes 4-bit, by the marks their uploads carry in the name
OTHER_QUANT = ("gptq", "awq", "aqlm", "exl2", "gguf", "hqq", "eetq", "fp8", "int4", "int8", "mxfp4", "nvfp4")


def base_model(r: Reader, key: str) -> str | None:
    """Read the file's base model at `key`; returns the HF model_type (for PEFT's default targets)."""
    mid = r.get(key)
    if mid is None:
        r.refuse(key, "the file names no base model", MODEL_KEYS, missing=True)
        return None
    marks = [q for q in OTHER_QUANT if q in str(mid).lower().replace("_", "-").split("/")[-1].split("-")]
    if marks:
        r.refuse(
            key,
            f"pre-quantized {marks[0].upper()} weights are not modelled (16-bit and bitsandbytes 4-bit are)",
            ["method"],
        )
    try:
        res = hfids.resolve(str(mid), key, r.path.parent)
    except ConfigError as e:
        r.refuse(key, "; ".join(e.problems).split(": ", 1)[-1], MODEL_KEYS, missing=True)
        return None
    for k, v in res.values().items():
        r.put(k, v, key if k == "model.path" else None)
    r.src.model = res.how
    if res.prequantized:
        r.src.values["model.prequantized"] = True  # read by the reader: the weights load in 4-bit
    if res.catalog_name is not None:
        return str(catalog.models()[res.catalog_name].get("architecture"))
    try:
        cfg = json.loads(Path(str(res.config_path)).read_text())
    except (OSError, ValueError):
        return None
    return str(cfg.get("model_type")) if cfg.get("model_type") else None


def prequantized(r: Reader, method: str | None, key: str) -> str | None:
    """A `-bnb-4bit` re-upload holds 4-bit weights: whatever the file's adapter says, the base loads in
    4-bit, so LoRA on it is QLoRA (said in the notes); full fine-tuning of it is refused."""
    if not r.src.values.pop("model.prequantized", False):
        return method
    if method == "full":
        r.refuse(
            key,
            "the base model's weights are 4-bit (a bnb-4bit upload): it cannot be fully fine-tuned",
            ["method"],
        )
        return method
    if method == "lora":
        r.src.not_modelled.append(
            {
                "key": key,
                "value": r.doc.get(key),
                "why": "pre-quantized 4-bit weights: LoRA on them is QLoRA (method=qlora)",
            }
        )
        return "qlora"
    return method


def model_id(m: ModelConfig) -> str:
    """What an export names as the base model: the weights the run used (model.path), else the
    catalog entry's first Hub id."""
    if m.path:
        p = Path(m.path)
        return str(p.resolve()) if p.exists() else m.path
    mid = hfids.hub_id(m.name)
    if mid is None:
        raise ConfigError(f"model={m.name!r}: no weights (model.path) and no Hub id to name in the export")
    return mid

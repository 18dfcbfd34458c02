"""Record the trainer defaults and field names tunewise's importers rely on, read from the real packages.

Run with axolotl, llamafactory and trl importable (they need not be installed with their
dependencies: `pip install --no-deps --target DIR axolotl==0.19.0 llamafactory==0.9.5 trl==1.16.0`):

    PYTHONPATH=DIR DISABLE_VERSION_CHECK=1 HF_HUB_OFFLINE=1 python scripts/trainer_schemas.py

It writes tests/fixtures/trainers/schemas.json: per tool, its version, every config field name and the
defaults of the fields tunewise maps. tests/advisor/test_from_schemas.py holds the importers'
defaults and the exports' keys to it (and to the packages themselves where they import).
"""

from __future__ import annotations

import dataclasses
import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "trainers" / "schemas.json"


def _plain(v: Any) -> Any:
    v = getattr(v, "value", v)  # enums
    return v if isinstance(v, (str, int, float, bool, type(None), list)) else str(v)


def _dataclass_fields(*classes: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = _plain(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = _plain(f.default_factory())
            else:
                out[f.name] = None
    return out


def axolotl() -> dict[str, Any]:
    from axolotl.utils.schemas.config import AxolotlInputConfig

    fields = {
        k: _plain(f.default) if not f.is_required() else None
        for k, f in AxolotlInputConfig.model_fields.items()
    }
    return {"version": version("axolotl"), "fields": fields}


def llamafactory() -> dict[str, Any]:
    from llamafactory.hparams import (
        DataArguments,
        FinetuningArguments,
        GeneratingArguments,
        ModelArguments,
        TrainingArguments,
    )

    classes = (ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments, TrainingArguments)
    return {"version": version("llamafactory"), "fields": _dataclass_fields(*classes)}


def trl() -> dict[str, Any]:
    from transformers import TrainingArguments
    from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, SFTConfig

    return {
        "version": version("trl"),
        "transformers": version("transformers"),
        "fields": _dataclass_fields(ScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig),
        "training_arguments": _dataclass_fields(TrainingArguments),
    }


if __name__ == "__main__":
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    doc = {"axolotl": axolotl(), "llamafactory": llamafactory(), "trl": trl()}
    OUT.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")

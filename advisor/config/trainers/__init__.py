"""Trainer configs in and out: axolotl, LLaMA-Factory and TRL (`tunewise advise from=PATH`,
`tunewise export SWEEP_DIR to=TOOL`). Pure (PyYAML, json): no torch, no Hydra.

`read(path)` detects the tool and maps every field tunewise models onto its config keys, with a
`Source` saying what was read, defaulted (to the tool's own default), not modelled or refused.
`TOOLS` is the registry: each module has `NAME`, `score(doc)`, `read(doc, path)` and
`export(cfg, name, folder)`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import yaml

from advisor.config.trainers import axolotl, llamafactory, trl
from advisor.config.trainers.common import load_doc
from advisor.config.trainers.source import Source
from advisor.errors import ConfigError

TOOLS: dict[str, ModuleType] = {"axolotl": axolotl, "llamafactory": llamafactory, "trl": trl}


def detect(doc: dict, path: Path) -> ModuleType:
    """The tool whose keys the file uses most (axolotl's `base_model`, LLaMA-Factory's
    finetuning_type/stage/cutoff_len/…, TRL's SFTConfig/ModelConfig/TrainingArguments keys)."""
    scores = {name: mod.score(doc) for name, mod in TOOLS.items()}
    best = max(scores.values())
    if best < 3:
        raise ConfigError(
            f"from={path}: not an axolotl, LLaMA-Factory or TRL training config (none of base_model; "
            "model_name_or_path with finetuning_type/stage/cutoff_len; model_name_or_path or "
            "per_device_train_batch_size/max_length/use_peft)"
        )
    return TOOLS[max(scores, key=lambda k: scores[k])]


def read(path: str | Path) -> Source:
    """Read a trainer config file (YAML or JSON) into a Source."""
    p = Path(path)
    try:
        doc = load_doc(p)
    except FileNotFoundError:
        raise ConfigError(f"from={path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"from={path}: cannot read it ({e.__class__.__name__}: {e})") from None
    except (ValueError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise ConfigError(f"from={path}: not valid YAML or JSON ({first})") from None
    if not isinstance(doc, dict):
        raise ConfigError(
            f"from={path}: a training config is a mapping of keys to values (got {type(doc).__name__})"
        )
    return detect(doc, p).read(doc, p)


__all__ = ["TOOLS", "Source", "detect", "read"]

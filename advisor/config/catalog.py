"""Catalogs of models, GPUs and prices, read from the plain-YAML option files in conf/.

The same files are Hydra config-group options (`model=llama-3.1-8b`, `gpu=a100-80gb`); the advisor
reads them directly with PyYAML so that it never needs Hydra.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml

from advisor.errors import ConfigError


def conf_dir() -> Path:
    """The repository's conf/ folder (TUNEWISE_CONF overrides it)."""
    env = os.environ.get("TUNEWISE_CONF")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "conf"


def repo_root() -> Path:
    return conf_dir().parent


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster to parse


@functools.cache
def _options(group: str) -> dict[str, dict[str, Any]]:
    folder = conf_dir() / group
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(folder.glob("*.yaml")):
        with open(f) as fh:
            out[f.stem] = yaml.load(fh, Loader=_LOADER) or {}
    return out


def option_names(group: str) -> list[str]:
    return list(_options(group))


def load_option(group: str, name: str) -> dict[str, Any]:
    """A copy of one option's YAML as a dict; ConfigError naming the allowed options if unknown."""
    opts = _options(group)
    if name not in opts:
        raise ConfigError(f"{group}={name!r}: unknown {group} (allowed: {', '.join(opts)})")
    return dict(opts[name])


def models() -> dict[str, dict[str, Any]]:
    return {k: dict(v) for k, v in _options("model").items()}


def gpus() -> dict[str, dict[str, Any]]:
    return {k: dict(v) for k, v in _options("gpu").items()}

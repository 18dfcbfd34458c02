"""conf/ read without Hydra: the catalogs (models, GPUs with prices, methods) and the defaults.

The option files are Hydra config-group options (`model=llama-3.1-8b`, `gpu=a100-80gb`); the advisor
reads them directly with PyYAML so that it never needs Hydra. `defaults(key)` is conf/config.yaml's
own value of a top-level key (`train`, `data`, `sweep`, `seed`, …): the one place a default is written.
"""

from __future__ import annotations

import copy
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


def _options(group: str) -> dict[str, dict[str, Any]]:
    return _options_in(conf_dir() / group)  # per folder: TUNEWISE_CONF may change within a process


@functools.cache
def _options_in(folder: Path) -> dict[str, dict[str, Any]]:
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
    return copy.deepcopy(opts[name])


def option_view(group: str, name: str) -> dict[str, Any] | None:
    """The cached option itself (None if unknown): for merging without a copy — never mutate it."""
    return _options(group).get(name)


def models() -> dict[str, dict[str, Any]]:
    return {k: dict(v) for k, v in _options("model").items()}


def gpus() -> dict[str, dict[str, Any]]:
    return {k: dict(v) for k, v in _options("gpu").items()}


@functools.cache
def _primary(config_name: str) -> dict[str, Any]:
    with open(conf_dir() / f"{config_name}.yaml") as fh:
        return yaml.load(fh, Loader=_LOADER) or {}


def defaults(key: str) -> Any:
    """A copy of conf/config.yaml's value of the top-level `key` (e.g. `train` → the train section)."""
    d = _primary("config")
    if key not in d or key == "defaults":
        raise ConfigError(f"{key}: no default in {conf_dir() / 'config.yaml'} (keys there: {', '.join(d)})")
    return copy.deepcopy(d[key])


def defaults_view(key: str) -> Any:
    """`defaults(key)` without the copy: for merging without a copy — never mutate it."""
    d = _primary("config")
    if key not in d or key == "defaults":
        return defaults(key)  # raises the ConfigError
    return d[key]


def choices(config_name: str = "config") -> dict[str, str]:
    """The group options conf/<config_name>.yaml's defaults list picks, includes and overrides
    followed as Hydra does: choices("advise")["model"] == "llama-3.1-8b"."""
    out: dict[str, str] = {}
    for entry in _primary(config_name).get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_":  # another primary config, e.g. `- config`
            out.update(choices(entry))
        elif isinstance(entry, dict):
            for k, v in entry.items():
                out[k.removeprefix("override").strip()] = str(v)
    return out

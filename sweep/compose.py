"""The one boundary where Hydra/OmegaConf meet the rest: compose conf/ with overrides, convert once.

Core code takes `advisor.config.schema.RunConfig` (or plain dicts); nothing below this module sees a
DictConfig. Hydra's own errors (unknown group option, unknown key) are turned into ConfigError
messages that name the key, the value and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from advisor.config import catalog
from advisor.errors import ConfigError

GROUPS = ("model", "method", "gpu", "data", "matrix")


def _bad_group_options(overrides: list[str]) -> dict[str, str]:
    """{override: problem} for every `group=option` naming an option that does not exist."""
    bad = {}
    for o in overrides:
        key, sep, value = o.lstrip("+~").partition("=")
        if sep and key in GROUPS and value not in catalog.option_names(key):
            bad[o] = f"{key}={value!r}: unknown {key} (allowed: {', '.join(catalog.option_names(key))})"
    return bad


def compose(config_name: str, overrides: list[str]) -> dict[str, Any]:
    """Compose `conf/<config_name>.yaml` with Hydra overrides; return a plain, resolved dict."""
    bad = _bad_group_options(overrides)
    if bad:
        # Report every problem at once: compose without the bad group options and validate the rest.
        problems = list(bad.values())
        try:
            from advisor.config.schema import build

            build(_compose(config_name, [o for o in overrides if o not in bad]))
        except ConfigError as e:
            problems += e.problems
        raise ConfigError(problems)
    return _compose(config_name, overrides)


def _compose(config_name: str, overrides: list[str]) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(catalog.conf_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except (HydraException, OmegaConfBaseException) as e:
        msg = str(e).splitlines()[0]
        if "Could not override" in str(e) or "Key '" in msg:
            msg += (
                " — check the key's spelling against `tunewise <command> --help` (new keys need a leading +)"
            )
        raise ConfigError(f"overrides {' '.join(overrides)!r}: {msg}") from None
    finally:
        GlobalHydra.instance().clear()


def given_keys(overrides: list[str]) -> set[str]:
    """Keys the user set on the command line (e.g. {'method', 'train.seq_len'})."""
    return {o.lstrip("+~").partition("=")[0] for o in overrides if "=" in o}


# ----------------------------------------------------------------------------------------------
# Defaults as `--help` shows them: every key of a composed config with its value and its comment.

_KEY_LINE = re.compile(r'^(?P<indent> *)(?P<key>"[^"]+"|[\w.\-]+):(?P<rest>.*)$')
OPAQUE = ("gpu.prices", "matrix.axes", "matrix.exclude")  # shown whole, not key by key


def override_value(v: Any) -> str:
    """A value as an override's right-hand side (`null`, `true`, `[a,b]`, `{k: v}`)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ",".join(override_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {override_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a composed config (mappings in OPAQUE kept whole)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key not in OPAQUE:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _comments(path: Path, prefix: str = "") -> dict[str, str]:
    """{dotted key: its trailing comment} of one YAML file (a light reading of block mappings)."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in path.read_text().splitlines():
        m = _KEY_LINE.match(line)
        if not m:
            continue
        indent, key = len(m["indent"]), m["key"].strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        rest = m["rest"]
        if rest.lstrip().startswith("#") or " #" in rest:
            out[prefix + ".".join(k for _, k in stack)] = rest.split("#", 1)[1].strip()
    return out


def documented_defaults(config_name: str) -> list[tuple[str, Any, str]]:
    """(key, default, comment) for every key `conf/<config_name>.yaml` composes to: the comments of
    conf/config.yaml, of the chosen model/method/gpu option for their keys and of the chosen matrix
    (which may set training defaults too); a key without a comment of its own shows its parent's."""
    d = compose(config_name, [])
    conf = catalog.conf_dir()
    docs = _comments(conf / "config.yaml")
    for group in ("model", "method", "gpu"):
        name = str((d.get(group) or {}).get("name"))
        if name in catalog.option_names(group):
            docs.update(_comments(conf / group / f"{name}.yaml", f"{group}."))
    matrix = conf / "matrix" / f"{(d.get('matrix') or {}).get('name')}.yaml"
    if matrix.is_file():
        docs.update(_comments(matrix, "" if "@package _global_" in matrix.read_text() else "matrix."))

    def doc(key: str) -> str:
        while key not in docs and "." in key:
            key = key.rsplit(".", 1)[0]
        return docs.get(key, "")

    return [(k, v, doc(k)) for k, v in flatten(d).items()]

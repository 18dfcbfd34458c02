"""`from=PATH`: a trainer config (axolotl, LLaMA-Factory, TRL) as the base of `advise` and `sweep`.

The file's settings become overrides placed before the command line's, so the command line wins; a
key the command line gives drops the file's value (and a command-line `model=`/`model.config_path=`
drops every model key of the file). A setting the file makes that tunewise cannot model is refused
(exit 2, naming the key that lets the estimate go on without it); given that key, it becomes a note.
For `sweep`, the keys the matrix varies are the matrix's: the file is the base the axes vary.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from advisor.config import catalog
from advisor.config.trainers import Source, read
from advisor.config.trainers.source import shown
from advisor.errors import ConfigError
from sweep.compose import given_keys

KEY = "from"
_PLAIN = re.compile(r"^[\w./@:+\-]+$")


def hydra_value(v: Any) -> str:
    """A Python value as a Hydra override's right-hand side (strings quoted when they need it)."""
    if isinstance(v, str):
        if _PLAIN.match(v) and v.lower() not in ("null", "true", "false"):
            return v
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    return shown(v)


def matrix_axes(args: list[str]) -> set[str]:
    """The keys the sweep's matrix varies (the `matrix=` given, else conf/config.yaml's)."""
    name = next((a.split("=", 1)[1] for a in args if a.startswith("matrix=")), None)
    name = name or catalog.choices("config").get("matrix")
    if not name or name not in catalog.option_names("matrix"):
        return set()
    doc = catalog.load_option("matrix", name)
    inner = doc.get("matrix")
    matrix: dict[str, Any] = inner if isinstance(inner, dict) else doc  # `@package _global_` or not
    return set(matrix.get("axes") or {})


def expand(args: list[str], varied: set[str] | None = None) -> tuple[list[str], Source | None]:
    """(the file's overrides + args, the Source) when args hold `from=PATH`; (args, None) otherwise.
    `varied` = keys the sweep's matrix varies (left to the matrix)."""
    froms = [a for a in args if a.split("=", 1)[0] == KEY]
    if not froms:
        return args, None
    if len(froms) > 1:
        raise ConfigError(f"from: given {len(froms)} times ({', '.join(froms)}); give one trainer config")
    path = froms[0].split("=", 1)[1]
    if not path:
        raise ConfigError("from='': give the path of an axolotl, LLaMA-Factory or TRL config (from=PATH)")
    src = read(path)
    given = given_keys([a for a in args if a not in froms])
    _refusals(src, path, given)
    model_given = bool(given & {"model", "model.config_path"})
    out: list[str] = []
    for k, v in src.values.items():
        if k in given or (model_given and (k == "model" or k.startswith("model."))):
            src.overridden.append(k)
            continue
        if varied and k in varied:
            src.overridden.append(f"{k} (the matrix varies it)")
            continue
        out.append(f"{k}={hydra_value(v)}")
    rest = [f"{KEY}={hydra_value(path)}" if a in froms else a for a in args]  # a path Hydra can parse
    return out + rest, src


def _refusals(src: Source, path: str, given: set[str]) -> None:
    problems = []
    for ref in src.refused:
        hit = [k for k in ref["resolve"] if k in given]
        if hit:
            why = f"{ref['why']}; estimated without it ({', '.join(hit)} given on the command line)"
            src.not_modelled.append({"key": ref["key"], "value": ref["value"], "why": why})
            continue
        keys = " or ".join(f"{k}=…" for k in ref["resolve"])
        if ref.get("missing"):
            problems.append(
                f"from={path}: {ref['key']}={shown(ref['value'])}: {ref['why']}; give {keys} on the command line"
            )
        else:
            problems.append(
                f"from={path}: {ref['key']}={shown(ref['value'])}: {ref['why']} — refused, as the estimate "
                f"would be for another run; give {keys} on the command line to estimate without it"
            )
    if problems:
        raise ConfigError(problems)


def print_notes(src: Source) -> None:
    for line in src.notes():
        print(f"note: {line}", file=sys.stderr)

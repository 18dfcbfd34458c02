"""What reading a trainer config found: the tunewise settings, and for each where it came from.

`Source` is `advise format=json`'s `query.source` and the notes `advise` prints: what was read (their
key → our key=value), what was defaulted and to what (the tool's own default where ours differs),
what the file sets that tunewise does not model, what it sets that changes nothing we estimate, and
the settings that change memory or time in a way tunewise cannot model (`refused`: each names the
command-line key that, when given, lets the estimate go on without that setting).
`Reader` is the small helper the per-tool readers share.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import Problems


def shown(v: Any) -> str:
    """A value as an override's right-hand side (the form `key=value` takes on the command line)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(shown(x) for x in v) + "]"
    return str(v)


@dataclass
class Source:
    """The reading of one trainer config file."""

    tool: str  # axolotl | llamafactory | trl
    path: str
    values: dict[str, Any] = field(default_factory=dict)  # tunewise dotted key → value
    read: list[dict[str, Any]] = field(default_factory=list)  # {key, value, as}
    defaulted: list[dict[str, Any]] = field(default_factory=list)  # {as, why}
    not_modelled: list[dict[str, Any]] = field(default_factory=list)  # {key, value, why}
    no_effect: list[str] = field(default_factory=list)  # keys with no effect on memory, time or cost
    refused: list[dict[str, Any]] = field(default_factory=list)  # {key, value, why, resolve: [keys]}
    overridden: list[str] = field(default_factory=list)  # our keys the command line set instead
    model: str | None = None  # how the base model's architecture was found

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "path": self.path,
            "model": self.model,
            "read": self.read,
            "defaulted": self.defaulted,
            "not_modelled": self.not_modelled,
            "no_effect": self.no_effect,
            "overridden": self.overridden,
            "values": {k: shown(v) for k, v in self.values.items()},
        }

    def notes(self) -> list[str]:
        """Lines for the notes `advise` prints."""
        article = "an" if self.tool[0] in "aeiou" else "a"
        out = [f"from={self.path}: read as {article} {self.tool} config."]
        if self.model:
            out.append(f"from: model {self.model}.")
        if self.read:
            out.append("from: read " + "; ".join(f"{r['key']} → {r['as']}" for r in self.read) + ".")
        if self.defaulted:
            out.append(
                "from: not in the file, so "
                + "; ".join(f"{d['as']} ({d['why']})" for d in self.defaulted)
                + "."
            )
        for n in self.not_modelled:
            out.append(f"from: NOT MODELLED {n['key']}={shown(n['value'])}: {n['why']}.")
        if self.overridden:
            out.append("from: the command line set " + ", ".join(self.overridden) + " instead of the file.")
        if self.no_effect:
            out.append(f"from: no effect on memory, time or cost: {', '.join(self.no_effect)}.")
        return out


class Reader:
    """Reads one tool's keys into a Source, remembering which keys it used."""

    def __init__(self, tool: str, path: Path, doc: dict[str, Any]):
        self.doc = doc
        self.path = path
        self.used: set[str] = set()
        self.src = Source(tool, str(path))
        self.problems = Problems()

    def has(self, key: str) -> bool:
        return self.doc.get(key) is not None

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        v = self.doc.get(key)
        return default if v is None else v

    def put(self, our: str, value: Any, their: str | None = None) -> None:
        """`our` key = value, read from the file's `their` key."""
        self.src.values[our] = value
        if their is not None:
            self.used.add(their)
            self.src.read.append({"key": their, "value": self.doc.get(their), "as": f"{our}={shown(value)}"})

    def default(self, our: str, value: Any, why: str) -> None:
        self.src.values[our] = value
        self.src.defaulted.append({"as": f"{our}={shown(value)}", "why": why})

    def unmodelled(self, their: str, why: str, value: Any = None) -> None:
        self.used.add(their)
        self.src.not_modelled.append({"key": their, "value": self.doc.get(their, value), "why": why})

    def unmodelled_if_on(self, their: str, why: str) -> None:
        """Not modelled when the file turns it on; switched off (false, auto, empty) it changes nothing."""
        v = self.get(their)
        if v not in (None, False, "auto", [], {}):
            self.unmodelled(their, why)
        elif v is not None:
            self.src.no_effect.append(their)

    def refuse(
        self, their: str, why: str, resolve: Iterable[str], value: Any = None, missing: bool = False
    ) -> None:
        """A setting that changes memory or time in a way tunewise does not model (or, `missing`, one the
        estimate needs and the file does not say): refused unless the command line gives one of
        `resolve` (then estimated without it, and said so)."""
        self.used.add(their)
        self.src.refused.append(
            {
                "key": their,
                "value": self.doc.get(their, value),
                "why": why,
                "resolve": list(resolve),
                "missing": missing,
            }
        )

    def number(self, key: str, integer: bool = False) -> float | int | None:
        """The file's number at `key` (YAML reads `2e-5` as text), or None; a problem when not a number."""
        v = self.get(key)
        if v is None:
            return None
        try:
            x = float(v) if not isinstance(v, bool) else math.nan
        except (TypeError, ValueError):
            x = math.nan
        if not math.isfinite(x) or (integer and x != int(x)):
            self._bad(key, v, "must be a whole number" if integer else "must be a number")
            return None
        return int(x) if integer else x

    def flag(self, key: str) -> bool | None:
        v = self.get(key)
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return v.lower() == "true"
        self._bad(key, v, "must be true or false")
        return None

    def _bad(self, key: str, v: Any, what: str) -> None:
        self.problems.add(f"from={self.path}: {key}", v, what)

    def finish(self, no_effect: Collection[str], no_effect_prefixes: tuple[str, ...] = ()) -> Source:
        """Every key not read: no effect (known), else not modelled (its effect unknown to tunewise)."""
        for k in sorted(set(self.doc) - self.used):
            if self.doc[k] is None or k in no_effect or k.startswith(no_effect_prefixes):
                self.src.no_effect.append(k)
            else:
                self.src.not_modelled.append(
                    {"key": k, "value": self.doc[k], "why": "not modelled: tunewise does not know its effect"}
                )
        self.problems.raise_if_any()
        return self.src

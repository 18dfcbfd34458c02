"""Values checked against the dataclass annotations: the schema's type check.

`build` runs it over every section before the value checks (positive, allowed names), and the
conf/ ↔ schema test runs it over every YAML default, so a YAML value and its field cannot disagree
on type. Plain YAML shapes are accepted where the dataclass holds a tuple: a list for `tuple[X, ...]`,
a mapping for `tuple[tuple[K, V], ...]`, a mapping for a nested dataclass.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advisor.errors import Problems


def _args(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint)


def _is_union(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union


def _is_pairs(hint: Any) -> bool:
    """tuple[tuple[K, V], ...]: a mapping written as pairs (data.fields)."""
    args = _args(hint)
    return (
        typing.get_origin(hint) is tuple
        and len(args) == 2
        and args[1] is Ellipsis
        and typing.get_origin(args[0]) is tuple
        and len(_args(args[0])) == 2
    )


def matches(value: Any, hint: Any) -> bool:
    """Whether a plain (YAML/JSON) value fits the annotation `hint`."""
    return _checker(hint)(value)


@functools.cache
def _checker(hint: Any) -> Callable[[Any], bool]:
    """A predicate for one annotation, built once (build checks every field of every config)."""
    if hint is Any:
        return lambda _: True
    if hint is type(None) or hint is None:
        return lambda v: v is None
    if _is_union(hint):
        parts = tuple(_checker(h) for h in _args(hint))
        return lambda v: any(c(v) for c in parts)
    if hint is bool:
        return lambda v: isinstance(v, bool)
    if hint is int:
        return lambda v: isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if hint is str:
        return lambda v: isinstance(v, str)
    if hint is Path:
        return lambda v: isinstance(v, (str, Path))
    if dataclasses.is_dataclass(hint):
        return lambda v: isinstance(v, dict) or type(v) is hint
    if typing.get_origin(hint) is tuple:
        args = _args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _checker(args[0])
            pair = _checker(args[0]) if _is_pairs(hint) else None

            def sequence(v: Any) -> bool:
                if pair is not None and isinstance(v, dict):  # a mapping written as pairs
                    return all(pair((a, b)) for a, b in v.items())
                return isinstance(v, (list, tuple)) and all(item(x) for x in v)

            return sequence
        fixed = tuple(_checker(h) for h in args)
        return lambda v: (
            isinstance(v, (list, tuple))
            and len(v) == len(fixed)
            and all(c(x) for c, x in zip(fixed, v, strict=True))
        )
    raise TypeError(f"no type check for annotation {hint!r}")


def describe(hint: Any) -> str:
    """The annotation in words, for messages: `int | None` → 'an integer or null'."""
    if hint is type(None) or hint is None:
        return "null"
    if _is_union(hint):
        return " or ".join(describe(h) for h in _args(hint))
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}
    if hint in words:
        return words[hint]
    if dataclasses.is_dataclass(hint) or _is_pairs(hint):
        return "a mapping"
    if typing.get_origin(hint) is tuple:
        return f"a list of {describe(_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s"
    return str(hint)


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """{field name: resolved annotation} of a dataclass."""
    return typing.get_type_hints(cls)


def check(cls: type, d: dict[str, Any], prefix: str, p: Problems) -> set[str]:
    """Add a problem for every key of `d` whose value does not fit its field; return those keys."""
    bad = set()
    for name, hint in hints(cls).items():
        if name in d and not matches(d[name], hint):
            p.add(f"{prefix}{name}", d[name], f"must be {describe(hint)}")
            bad.add(name)
    return bad

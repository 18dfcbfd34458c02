"""The matrix: axes over config keys expanded into cells, with collapsing, exclusions and seeds.

A matrix file (conf/matrix/*.yaml) holds `axes` — a list of values per config key (`method`,
`method.r`, `data.rows`, `gpu`, `train.lr`, …) — and `exclude`, a list of partial assignments to
drop. A method that ignores a key (`advisor.config.methods.Method.ignores`) collapses its axis: full
fine-tuning has no rank, so `method.r` (and the other LoRA keys) do not multiply full's cells; LoRA
ignores the quantization keys. An exclusion matches a point before collapsing.

Before expanding, the sweep rewrites two kinds of axes so nothing the user typed is dropped silently
(`pin_axes`, `cap_rows`; each returns the lines the plan prints): a command-line override of a key
the matrix varies replaces that axis with the one value typed, and `data.rows` values above the
training rows the data has become one cell with all of them.

A cell's id is a short stable hash of its coordinates (sorted `key=value` strings, with the seed
included when `sweep.seeds` > 1), so the same matrix always gives the same ids and a rerun finds the
records it wrote before. A report groups the cells that differ only in `REPEAT_KEYS` (seeds, and
learning rates when the matrix tries several) into one configuration (`config_key`).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from typing import Any

from advisor.config.methods import METHODS
from advisor.errors import ConfigError, Problems

REPEAT_KEYS = ("seed", "train.lr")  # repeats of one configuration: a report groups them
MAIN_KEYS = ("method", "method.r", "data.rows")  # what a cell's label names; other coordinates are "extra"
_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?")


def format_value(v: Any) -> str:
    """A value as Hydra override syntax (lists as [a,b], None as null)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    return str(v)


def _split_list(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        cur += ch
    return [*parts, cur] if parts or cur.strip() else []


def parse_value(text: str) -> Any:
    """The inverse of `format_value` (Hydra's reading of a simple override value): null, true/false,
    integers, floats, [lists], quoted or plain strings."""
    s = text.strip()
    if s == "null":
        return None
    if s in ("true", "false"):
        return s == "true"
    if _INT.fullmatch(s):
        return int(s)
    if _FLOAT.fullmatch(s):
        return float(s)
    if s.startswith("[") and s.endswith("]"):
        return [parse_value(p) for p in _split_list(s[1:-1])]
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def override_key(override: str) -> str:
    """`method.r` of `method.r=16`, `+method.r=16` or `~method.r`."""
    return override.lstrip("+~").partition("=")[0]


def cell_id(assignment: tuple[tuple[str, Any], ...]) -> str:
    """10 hex characters of sha256 over the sorted `key=value` overrides."""
    text = "\n".join(sorted(f"{k}={format_value(v)}" for k, v in assignment))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def config_key(coords: dict[str, Any]) -> str:
    """The configuration a cell repeats: its coordinates without seed and learning rate, as text."""
    return " ".join(sorted(f"{k}={format_value(v)}" for k, v in coords.items() if k not in REPEAT_KEYS))


def extra_label(coords: dict[str, Any]) -> str:
    """Coordinates other than method, rank, rows, seed and learning rate (`gpu=a10 method.dropout=0.1`)."""
    skip = set(MAIN_KEYS) | set(REPEAT_KEYS)
    return " ".join(sorted(f"{k}={format_value(v)}" for k, v in coords.items() if k not in skip))


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: the overrides (key → value) applied on top of the base config."""

    cell_id: str
    assignment: tuple[tuple[str, Any], ...]  # (key, value) in axis order, collapsed axes left out

    @property
    def overrides(self) -> list[str]:
        """Hydra override strings for this cell (`method=lora`, `method.r=16`, …)."""
        return [f"{k}={format_value(v)}" for k, v in self.assignment]

    @property
    def coords(self) -> dict[str, Any]:
        return dict(self.assignment)

    @property
    def seed(self) -> int | None:
        return self.coords.get("seed")

    def label(self) -> str:
        return " ".join(self.overrides) or "(base config)"


def _matches(assignment: dict[str, Any], partial: dict[str, Any]) -> bool:
    return all(k in assignment and format_value(assignment[k]) == format_value(v) for k, v in partial.items())


def validate_matrix(matrix: dict[str, Any]) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    """The axes and exclusions of a composed `matrix` section; ConfigError listing every problem."""
    p = Problems()
    axes = matrix.get("axes") or {}
    exclude = matrix.get("exclude") or []
    if not isinstance(axes, dict):
        p.add("matrix.axes", axes, "must be a mapping of config key to a list of values")
        axes = {}
    for k, vals in axes.items():
        if not isinstance(vals, list) or not vals:
            p.add(f"matrix.axes.{k}", vals, "must be a non-empty list of values")
        elif len({format_value(v) for v in vals}) != len(vals):
            p.add(f"matrix.axes.{k}", vals, "has duplicate values")
    if "seed" in axes:
        p.add("matrix.axes.seed", axes["seed"], "seeds come from sweep.seeds=K (seeds seed … seed+K-1)")
    if not isinstance(exclude, list) or not all(isinstance(e, dict) and e for e in exclude):
        p.add(
            "matrix.exclude",
            exclude,
            "must be a list of partial assignments, e.g. [{method: full, data.rows: 150}]",
        )
        exclude = []
    for e in exclude:
        for k in e:
            if k not in axes:
                p.add(f"matrix.exclude.{k}", e[k], "names no axis of this matrix", list(axes))
    p.raise_if_any()
    return {k: list(v) for k, v in axes.items()}, list(exclude)


def expand(matrix: dict[str, Any], base_method: str, seeds: int = 1, base_seed: int = 0) -> list[Cell]:
    """Every cell of the matrix in a stable order, collapsed per method, exclusions dropped."""
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ConfigError(f"sweep.seeds={seeds!r}: must be a positive integer")
    axes, exclude = validate_matrix(matrix)
    keys = list(axes)
    seen: set[str] = set()
    cells: list[Cell] = []
    for values in itertools.product(*(axes[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        method = point.get("method", base_method)
        if method not in METHODS:
            raise ConfigError(
                f"matrix.axes.method={method!r}: unknown method (allowed: {', '.join(METHODS)})"
            )
        if any(_matches(point, e) for e in exclude):
            continue
        kept = tuple((k, v) for k, v in point.items() if k not in METHODS[method].ignores)
        for s in range(seeds):
            assignment = kept + ((("seed", base_seed + s),) if seeds > 1 else ())
            cid = cell_id(assignment)
            if cid not in seen:
                seen.add(cid)
                cells.append(Cell(cid, assignment))
    return cells


def pin_axes(axes: dict[str, list[Any]], overrides: list[str]) -> tuple[dict[str, list[Any]], list[str]]:
    """An override of a key the matrix varies replaces that axis with the value typed (a Hydra user's
    expectation: `matrix=method_rank_size method.r=32` sweeps rank 32 only). Returns the new axes and
    one plan line per replaced axis; deleting an axis key (`~method.r`) is refused."""
    out = {k: list(v) for k, v in axes.items()}
    notes: list[str] = []
    for o in overrides:
        key = override_key(o)
        if key not in out:
            continue
        if o.startswith("~"):
            raise ConfigError(
                f"{o}: deletes {key}, which matrix.axes varies ({format_value(out[key])}); "
                f"override it with one value ({key}=VALUE) or choose another matrix"
            )
        text = o.partition("=")[2]
        value = parse_value(text)
        notes.append(
            f"{key}={text} replaces the matrix's {key} axis {format_value(axes[key])}: "
            f"every cell has {key}={format_value(value)}"
        )
        out[key] = [value]
    return out, notes


def cap_rows(
    axes: dict[str, list[Any]], train_rows: int, source: str
) -> tuple[dict[str, list[Any]], list[str]]:
    """`data.rows` values above the `train_rows` the data has train on the same rows: they become one
    cell with `data.rows=train_rows`. Returns the new axes and the plan line saying so."""
    vals = axes.get("data.rows")
    if not vals:
        return axes, []
    over = [v for v in vals if isinstance(v, int) and not isinstance(v, bool) and v > train_rows]
    if not over:
        return axes, []
    kept: list[Any] = []
    for v in vals:
        w = train_rows if v in over else v
        if w not in kept:
            kept.append(w)
    what = "exceeds" if len(over) == 1 else "exceed"
    listed = ", ".join(str(v) for v in over)
    cell = "one cell" if len(over) > 1 or train_rows in vals else "the cell"
    note = (
        f"data.rows {listed} {what} the {train_rows} training rows of {source}: {cell} with all "
        f"{train_rows} rows (data.rows={train_rows})"
    )
    return {**axes, "data.rows": kept}, [note]

"""The matrix: axes over config keys expanded into cells, with collapsing, exclusions and seeds.

A matrix file (conf/matrix/*.yaml) holds `axes` — a list of values per config key (`method`,
`method.r`, `data.rows`, `gpu`, `train.lr`, …) — and `exclude`, a list of partial assignments to
drop. A method that ignores an axis collapses it: full fine-tuning has no rank, so `method.r` (and the
other LoRA keys) do not multiply full's cells; LoRA ignores the quantization keys.

A cell's id is a short stable hash of its resolved overrides (sorted `key=value` strings, with the
seed included when `sweep.seeds` > 1), so the same matrix always gives the same ids and a rerun finds
the records it wrote before.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

from advisor.errors import ConfigError, Problems

# Keys each method ignores: an axis over them collapses for that method.
LORA_KEYS = ("method.r", "method.alpha", "method.dropout", "method.target_modules")
QUANT_KEYS = ("method.quant_type", "method.double_quant")
IGNORED = {"full": LORA_KEYS + QUANT_KEYS, "lora": QUANT_KEYS, "qlora": ()}


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


def format_value(v: Any) -> str:
    """A value as Hydra override syntax (lists as [a,b], None as null)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    return str(v)


def cell_id(assignment: tuple[tuple[str, Any], ...]) -> str:
    """10 hex characters of sha256 over the sorted `key=value` overrides."""
    text = "\n".join(sorted(f"{k}={format_value(v)}" for k, v in assignment))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


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
        full = dict(zip(keys, values, strict=True))
        method = full.get("method", base_method)
        if method not in IGNORED:
            raise ConfigError(
                f"matrix.axes.method={method!r}: unknown method (allowed: {', '.join(IGNORED)})"
            )
        kept = tuple((k, v) for k, v in full.items() if k not in IGNORED[method])
        if any(_matches(full, e) for e in exclude):
            continue
        for s in range(seeds):
            assignment = kept + ((("seed", base_seed + s),) if seeds > 1 else ())
            cid = cell_id(assignment)
            if cid not in seen:
                seen.add(cid)
                cells.append(Cell(cid, assignment))
    return cells

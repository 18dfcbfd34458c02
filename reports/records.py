"""Reading a sweep directory: sweep.json, trials/<cell_id>.json and trials/baseline.json.

Only what design.md promises is read, and every optional key may be missing (a sweep still running
has `running` records with partial `measured`). Records that share a cell's coordinates and differ
only in `seed` (and `train.lr`, when the sweep tunes it) are grouped into one `Cell`.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STATUSES = ("complete", "pruned", "infeasible", "over_budget", "failed", "oom", "running")
FINISHED = frozenset(STATUSES) - {"running"}
NOT_STARTED = ("pending",)  # a record the sweep wrote before starting the cell
SEED_KEYS = ("seed", "_seed")
LR_KEYS = ("train.lr", "lr", "_lr")
METHOD_NAMES = {"full": "Full", "lora": "LoRA", "qlora": "QLoRA"}


def dig(d: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def parse_overrides(o: Any) -> dict[str, Any]:
    """Overrides as a dict, from a dict or from Hydra strings ['method=lora', 'method.r=16']."""
    if isinstance(o, dict):
        return dict(o)
    out: dict[str, Any] = {}
    for s in o or []:
        if isinstance(s, str) and "=" in s:
            k, v = s.split("=", 1)
            try:
                out[k.lstrip("+~")] = yaml.safe_load(v)
            except yaml.YAMLError:
                out[k.lstrip("+~")] = v
    return out


def num(x: Any) -> float | None:
    """A finite float, or None (missing keys, nulls, NaN, strings)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


@dataclass
class Trial:
    """One record file (one seed / one learning rate of one cell)."""

    cell_id: str
    overrides: dict[str, Any]
    config: dict[str, Any]
    status: str
    reason: str
    estimate: dict[str, Any]
    measured: dict[str, Any]
    attempts: list[dict[str, Any]]
    provenance: dict[str, Any]

    @classmethod
    def from_json(cls, d: dict[str, Any], fallback_id: str) -> Trial:
        status = d.get("status")
        reason = str(d.get("reason") or "")
        if status not in STATUSES + NOT_STARTED:
            status, reason = (
                "failed",
                f"unknown status {status!r} in the record" + (f"; {reason}" if reason else ""),
            )
        overrides = parse_overrides(d.get("overrides"))
        for k in ("seed", "lr"):  # top-level copies the sweep writes beside the overrides
            if d.get(k) is not None and not any(o in overrides for o in (k, f"train.{k}")):
                overrides.setdefault(f"_{k}", d[k])
        return cls(
            cell_id=str(d.get("cell_id") or fallback_id),
            overrides=overrides,
            config=dict(d.get("config") or {}),
            status=status,
            reason=reason,
            estimate=dict(d.get("estimate") or {}),
            measured=dict(d.get("measured") or {}),
            attempts=list(d.get("attempts") or []),
            provenance=dict(d.get("provenance") or {}),
        )

    def _pick(self, override_keys: tuple[str, ...], config_path: tuple[str, ...]) -> Any:
        for k in override_keys:
            if k in self.overrides:
                return self.overrides[k]
        return dig(self.config, *config_path)

    @property
    def method(self) -> str:
        return str(self._pick(("method",), ("method", "name")) or "?")

    @property
    def r(self) -> int | None:
        return None if self.method == "full" else self._pick(("method.r",), ("method", "r"))

    @property
    def rows(self) -> int | None:
        return self._pick(("data.rows",), ("data", "rows"))

    @property
    def seed(self) -> Any:
        return self._pick(SEED_KEYS, ("seed",))

    @property
    def lr(self) -> float | None:
        return num(self._pick(LR_KEYS, ("train", "lr")))

    @property
    def coords(self) -> tuple[tuple[str, str], ...]:
        """The cell's coordinates: its overrides without seed and learning rate."""
        skip = set(SEED_KEYS) | set(LR_KEYS)
        return tuple(sorted((k, json.dumps(v)) for k, v in self.overrides.items() if k not in skip))

    @property
    def eval_loss(self) -> float | None:
        return num(self.measured.get("eval_loss"))

    @property
    def last_eval(self) -> tuple[float, float] | None:
        """(fraction of training, eval loss) of the last eval in the curve."""
        curve = [
            c for c in self.measured.get("eval_curve") or [] if isinstance(c, (list, tuple)) and len(c) >= 3
        ]
        if not curve:
            return None
        _, frac, loss = curve[-1][:3]
        return (num(frac) or 0.0, num(loss)) if num(loss) is not None else None

    @property
    def wall_s(self) -> float | None:
        w = self.measured.get("wall_s")
        if isinstance(w, dict):
            parts = [num(v) for v in w.values()]
            parts = [p for p in parts if p is not None]
            return sum(parts) if parts else None
        return num(w)


@dataclass
class Cell:
    """One point of the matrix: every record with the same coordinates (seeds, learning rates)."""

    coords: tuple[tuple[str, str], ...]
    trials: list[Trial] = field(default_factory=list)

    @property
    def first(self) -> Trial:
        return self.trials[0]

    @property
    def method(self) -> str:
        return self.first.method

    @property
    def r(self) -> int | None:
        return self.first.r

    @property
    def rows(self) -> int | None:
        return self.first.rows

    @property
    def status(self) -> str:
        statuses = [t.status for t in self.trials]
        for s in ("running", "pending", "complete"):
            if s in statuses:
                return s
        return statuses[0]

    @property
    def finished(self) -> bool:
        return all(t.status in FINISHED for t in self.trials)

    @property
    def status_label(self) -> str:
        """'complete', or 'complete 2/3' style when seeds ended differently."""
        statuses = [t.status for t in self.trials]
        if len(set(statuses)) == 1:
            return statuses[0]
        return ", ".join(f"{s} {statuses.count(s)}/{len(statuses)}" for s in dict.fromkeys(statuses))

    @property
    def chosen(self) -> list[Trial]:
        """Complete trials at the best learning rate (all seeds of it): what the cell's quality is."""
        done = [t for t in self.trials if t.status == "complete" and t.eval_loss is not None]
        by_lr: dict[float | None, list[Trial]] = {}
        for t in done:
            by_lr.setdefault(t.lr, []).append(t)
        if not by_lr:
            return []
        return min(by_lr.values(), key=lambda ts: sum(t.eval_loss or 0.0 for t in ts) / len(ts))

    @property
    def lr_tuned(self) -> bool:
        return len({t.lr for t in self.trials if t.status == "complete"}) > 1

    def mean(self, get: Any) -> float | None:
        """Mean of `get(trial)` over the chosen trials (None when no trial has it)."""
        vals = [v for v in (num(get(t)) for t in self.chosen) if v is not None]
        return sum(vals) / len(vals) if vals else None

    @property
    def extra(self) -> list[tuple[str, Any]]:
        """Coordinates other than method, rank and rows (extra matrix axes), for labels."""
        main = {"method", "method.r", "data.rows"}
        return [(k, json.loads(v)) for k, v in self.coords if k not in main]


@dataclass
class Sweep:
    dir: Path
    meta: dict[str, Any]
    cells: list[Cell]
    baseline: dict[str, Any] | None
    planned: int  # cells the matrix declares (at least the ones with records)

    @property
    def trials(self) -> list[Trial]:
        return [t for c in self.cells for t in c.trials]

    @property
    def running(self) -> bool:
        return any(not c.finished for c in self.cells) or self.planned > len(self.cells)

    @property
    def finished_cells(self) -> int:
        return sum(c.finished for c in self.cells)

    @property
    def settings(self) -> dict[str, Any]:
        """sweep.* settings as sweep.json records them (seeds, lr_trials, dir, …), when it does."""
        return dict(self.meta.get("settings") or {})

    @property
    def baseline_loss(self) -> float | None:
        return num(dig(self.baseline, "measured", "eval_loss")) if self.baseline else None

    @property
    def baseline_metric(self) -> float | None:
        return num(dig(self.baseline, "measured", "metric")) if self.baseline else None

    @property
    def config(self) -> dict[str, Any]:
        base = self.meta.get("config") or self.meta.get("base_config")  # sweep.json names it either way
        if isinstance(base, dict) and base:
            return dict(base)
        return self.cells[0].first.config if self.cells else {}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a half-written file from an older writer, or unreadable: skip it
    return d if isinstance(d, dict) else None


def planned_cells(matrix: dict[str, Any]) -> set[tuple[tuple[str, str], ...]]:
    """Expand a matrix {axes, exclude} the way the sweep does: rank collapses for full."""
    axes = matrix.get("axes") or {}
    if not isinstance(axes, dict) or not axes:
        return set()
    keys = list(axes)
    values = [v if isinstance(v, list) else [v] for v in axes.values()]
    out = set()
    for combo in itertools.product(*values):
        point = {k: v for k, v in zip(keys, combo, strict=True) if k not in SEED_KEYS + LR_KEYS}
        if point.get("method") == "full":  # full ignores every LoRA/quantization key
            point = {k: v for k, v in point.items() if not k.startswith("method.")}
        elif point.get("method") == "lora":
            point = {k: v for k, v in point.items() if k not in ("method.quant_type", "method.double_quant")}
        if any(all(point.get(k) == v for k, v in ex.items()) for ex in matrix.get("exclude") or []):
            continue
        out.add(tuple(sorted((k, json.dumps(v)) for k, v in point.items())))
    return out


def load(sweep_dir: Path) -> Sweep:
    sweep_dir = Path(sweep_dir)
    meta = _read_json(sweep_dir / "sweep.json") or {}
    baseline = None
    cells: dict[tuple, Cell] = {}
    for f in sorted((sweep_dir / "trials").glob("*.json")):
        d = _read_json(f)
        if d is None:
            continue
        if f.stem == "baseline":
            baseline = d
            continue
        t = Trial.from_json(d, f.stem)
        cells.setdefault(t.coords, Cell(t.coords)).trials.append(t)
    for c in cells.values():
        c.trials.sort(key=lambda t: (str(t.seed), t.lr or 0.0))
    order = {"full": 0, "lora": 1, "qlora": 2}
    ordered = sorted(
        cells.values(), key=lambda c: (order.get(c.method, 9), c.r or 0, c.rows or 0, str(c.extra))
    )
    plan = planned_cells(meta.get("matrix") or {})
    planned = len(plan | set(cells))
    return Sweep(sweep_dir, meta, ordered, baseline, planned)

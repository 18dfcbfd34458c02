"""A sweep's results as a pandas DataFrame: one tidy row per attempt, the record's fields flattened.

`results(sweep_dir)` (exported as `reports.results`) reads trials/*.json (advisor.trials; the baseline
left out) and returns one row per attempt — a cell that never started has one row with the attempt
columns missing. Columns, all with nullable dtypes (`string`, `Int64`, `Float64`, `boolean`,
timestamps in UTC):

- the cell: `cell_id`, `overrides` (its coordinates in override syntax), `configuration` (the same
  without seed and learning rate: the cells a report groups), `method`, `r` (missing for full
  fine-tuning), `rows`, `seed`, `lr` (the chosen attempt's learning rate), `extra` (coordinates other
  than method, rank, rows, seed and learning rate);
- the record: `status`, `reason`, `attempts` (how many), `lr_trials`, `spent.*`;
- the attempt: `attempt` (1, 2, …), `attempt.trial_number`, `attempt.started`, `attempt.ended`,
  `attempt.status`, `attempt.reason`, `attempt.lr`, `attempt.eval_loss`, `attempt.usd`,
  `attempt.wall_s`, `attempt.cpu_s`, `attempt.evals` (evals reported), …;
- `estimate.*` (the advise row: `estimate.memory.device_gib`, `estimate.cost.usd`, …), `measured.*`
  (`measured.eval_loss`, `measured.wall_s.train`, `measured.static_bytes.weights`, …, plus
  `measured.evals` and `measured.last_eval.fraction` / `.loss` from the eval curve), `config.*` (the
  resolved config) and `provenance.*`: every scalar, nested keys joined with dots; lists of numbers
  or strings as override text (`[q_proj,v_proj]`), lists of mappings left out.

results.csv is this frame written out (`frame.to_csv(index=False)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from advisor.trials.matrix import format_value
from advisor.trials.record import Attempt, TrialRecord
from advisor.trials.store import read_records

# Columns every frame has (an empty sweep included), with their dtypes; flattened keys beyond these
# are added as they appear, typed by their values.
SCHEMA: dict[str, str] = {
    "cell_id": "string",
    "overrides": "string",
    "configuration": "string",
    "method": "string",
    "r": "Int64",
    "rows": "Int64",
    "seed": "Int64",
    "lr": "Float64",
    "extra": "string",
    "status": "string",
    "reason": "string",
    "attempts": "Int64",
    "lr_trials": "Int64",
    "attempt": "Int64",
    "attempt.trial_number": "Int64",
    "attempt.started": "datetime",
    "attempt.ended": "datetime",
    "attempt.status": "string",
    "attempt.reason": "string",
    "attempt.lr": "Float64",
    "attempt.lr_index": "Int64",
    "attempt.eval_loss": "Float64",
    "attempt.usd": "Float64",
    "attempt.wall_s": "Float64",
    "attempt.cpu_s": "Float64",
    "attempt.evals": "Int64",
    "attempt.planned_steps": "Int64",
    "attempt.host": "string",
    "attempt.pid": "Int64",
    "spent.usd": "Float64",
    "spent.wall_s": "Float64",
    "spent.cpu_s": "Float64",
    **{
        f"estimate.{k}": "Float64"
        for k in (
            "memory.allocated_gib",
            "memory.reserved_gib",
            "memory.device_gib",
            "time.hours",
            "cost.usd",
            "cost.usd_per_gpu_hour",
            "total_params",
            "trainable_params",
        )
    },
    "estimate.fits": "boolean",
    **{
        f"measured.{k}": "Float64"
        for k in (
            "allocated_gib",
            "reserved_gib",
            "device_gib",
            "rss_gib",
            "tokens_per_s",
            "train_tokens",
            "padding_fraction",
            "wall_s.load",
            "wall_s.train",
            "wall_s.eval",
            "usd",
            "eval_loss",
            "metric",
            "trainable_params",
            "adapter_bytes",
            "last_eval.fraction",
            "last_eval.loss",
        )
    },
    "measured.evals": "Int64",
}


def _scalar(v: Any) -> Any:
    """A JSON value as one cell of the frame: scalars as they are, lists of scalars as override
    text, anything else (lists of mappings) left out (None)."""
    if isinstance(v, list):
        return format_value(v) if all(not isinstance(x, (dict, list)) for x in v) else None
    return v


def _flat(prefix: str, d: Any, out: dict[str, Any]) -> None:
    if not isinstance(d, dict):
        return
    for k, v in d.items():
        key = f"{prefix}.{k}"
        if isinstance(v, dict):
            _flat(key, v, out)
        elif (s := _scalar(v)) is not None:
            out[key] = s


def _curve(measured: dict[str, Any] | None) -> dict[str, Any]:
    curve = [c for c in (measured or {}).get("eval_curve") or [] if isinstance(c, list) and len(c) >= 3]
    last = curve[-1] if curve else [None, None, None]
    return {
        "measured.evals": len(curve),
        "measured.last_eval.fraction": last[1],
        "measured.last_eval.loss": last[2],
    }


def _attempt(i: int | None, a: Attempt | None) -> dict[str, Any]:
    if a is None:
        return {"attempt": None}
    row = {f"attempt.{k}": _scalar(v) for k, v in a.to_dict().items() if k != "evals"}
    return {"attempt": i, **row, "attempt.evals": len(a.evals)}


def rows_of(rec: TrialRecord) -> list[dict[str, Any]]:
    """The frame's rows of one record: one per attempt (one with no attempt columns when none)."""
    cell: dict[str, Any] = {
        "cell_id": rec.cell_id,
        "overrides": " ".join(rec.overrides),
        "configuration": rec.group_key,
        "method": rec.method,
        "r": rec.r,
        "rows": rec.rows,
        "seed": rec.seed,
        "lr": rec.learning_rate,
        "extra": rec.extra,
        "status": rec.status,
        "reason": rec.reason,
        "attempts": len(rec.attempts),
        "lr_trials": rec.lr_trials,
    }
    _flat("spent", rec.spent, cell)
    _flat("estimate", rec.estimate, cell)
    _flat("measured", rec.measured, cell)
    cell.update(_curve(rec.measured))
    _flat("config", rec.config, cell)
    _flat("provenance", rec.provenance, cell)
    attempts: list[tuple[int | None, Attempt | None]] = list(enumerate(rec.attempts, 1)) or [(None, None)]
    return [{**cell, **_attempt(i, a)} for i, a in attempts]


def _infer(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "boolean"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "Int64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "Float64"  # an all-missing column too: estimates and measurements are numbers
    return "string"


def _column(values: list[Any], dtype: str) -> Any:
    if dtype == "datetime":  # UTC timestamps
        return pd.to_datetime(pd.Series(values, dtype="object"), utc=True, errors="coerce")
    if dtype == "string":
        values = [None if v is None else str(v) for v in values]
    elif dtype in ("Int64", "Float64", "boolean"):
        values = [None if v is None or isinstance(v, str) else v for v in values]
    return pd.array(values, dtype=dtype)


def frame(records: list[TrialRecord]) -> pd.DataFrame:
    """The results frame of these records (see the module docstring)."""
    rows = [row for rec in records for row in rows_of(rec)]
    cols = list(SCHEMA)
    for row in rows:
        cols.extend(k for k in row if k not in SCHEMA and k not in cols)
    data = {}
    for c in cols:
        values = [row.get(c) for row in rows]
        data[c] = _column(values, SCHEMA.get(c) or _infer(values))
    return pd.DataFrame(data, columns=cols)


def results(sweep_dir: str | Path) -> pd.DataFrame:
    """One tidy row per attempt of every cell in SWEEP_DIR/trials (unreadable record files skipped)."""
    records, _ = read_records(Path(sweep_dir))
    return frame(records)

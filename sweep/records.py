"""Trial records (one JSON per cell, design.md's shape), results.csv and sweep.json — written atomically.

Every write goes to a temporary file in the same folder and is moved over the old one with
`os.replace`, so a crash or a `kill -9` leaves either the previous or the new file, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from advisor.config.schema import RunConfig

MEASURED_KEYS = (
    "allocated_gib",
    "reserved_gib",
    "device_gib",
    "rss_gib",
    "tokens_per_s",
    "train_tokens",
    "padding_fraction",
    "usd",
    "eval_loss",
    "metric",
    "trainable_params",
    "adapter_bytes",
    "steps",
    "planned_steps",
)


def now_iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, doc: Any) -> None:
    write_atomic(path, json.dumps(doc, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def record_path(sweep_dir: Path, cell_id: str) -> Path:
    return sweep_dir / "trials" / f"{cell_id}.json"


def new_record(
    cell_id: str, overrides: list[str], cfg: RunConfig | None, estimate: dict | None, lr_trials: int = 1
) -> dict[str, Any]:
    return {
        "cell_id": cell_id,
        "overrides": overrides,
        "config": cfg.to_dict() if cfg is not None else None,
        "status": "pending",
        "reason": None,
        "seed": cfg.seed if cfg is not None else None,
        "lr": cfg.lr if cfg is not None else None,
        "lr_trials": lr_trials,
        "estimate": estimate,
        "measured": None,
        "attempts": [],
        "heartbeat": None,
        "provenance": None,
    }


def load_record(sweep_dir: Path, cell_id: str) -> dict[str, Any] | None:
    return read_json(record_path(sweep_dir, cell_id))


def save_record(sweep_dir: Path, rec: dict[str, Any]) -> None:
    write_json(record_path(sweep_dir, rec["cell_id"]), rec)


def all_records(sweep_dir: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted((sweep_dir / "trials").glob("*.json")):
        if p.stem != "baseline":
            rec = read_json(p)
            if rec is not None:
                out.append(rec)
    return out


_PASSWORD = re.compile(r"(://[^:/@]+:)[^@]*@")


def redact_url(url: str) -> str:
    """A storage URL without its password (postgresql://user:***@host/db)."""
    return _PASSWORD.sub(r"\1***@", url)


def results_row(rec: dict[str, Any]) -> dict[str, Any]:
    """One results.csv row: coordinates, status, every estimated and measured column."""
    row: dict[str, Any] = {
        "cell_id": rec["cell_id"],
        "overrides": " ".join(rec.get("overrides") or []),
        "status": rec.get("status"),
        "reason": rec.get("reason"),
        "seed": rec.get("seed"),
        "lr": rec.get("lr"),
        "attempts": len(rec.get("attempts") or []),
    }
    est = rec.get("estimate") or {}
    flat: dict[str, Any] = {}
    for key in (
        "method",
        "r",
        "gpu",
        "gpu_count",
        "total_params",
        "trainable_params",
        "fits",
        "within_budget",
    ):
        if key in est:
            flat[f"est.{key}"] = est[key]
    for section in ("memory", "time", "cost"):
        for k, v in (est.get(section) or {}).items():
            if not isinstance(v, (dict, list)):
                flat[f"est.{section}.{k}"] = v
    meas = rec.get("measured") or {}
    for k in MEASURED_KEYS:
        flat[f"measured.{k}"] = meas.get(k)
    for k, v in (meas.get("wall_s") or {}).items():
        flat[f"measured.wall_s.{k}"] = v
    curve = meas.get("eval_curve") or []
    flat["measured.evals"] = len(curve)
    row.update(flat)
    return row


def write_results_csv(sweep_dir: Path) -> Path:
    rows = [results_row(r) for r in all_records(sweep_dir)]
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols or ["cell_id"], extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    path = sweep_dir / "results.csv"
    write_atomic(path, buf.getvalue())
    return path

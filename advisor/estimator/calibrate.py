"""Calibration from measurements: fit per-GPU, per-method factors from finished trial records and
apply them to advise rows. Pure (no torch); reads design.md trial records.

Factors, each a geometric mean over records (with count and geometric spread):
    time_efficiency   measured tokens/s ÷ estimated tokens/s (the train phase's throughput)
    step_ratio        measured seconds per optimizer step (wall_s.train ÷ steps) ÷ estimated step_s:
                      the train part's factor when records have it (same tokens on both sides)
    <part>_ratio      measured wall_s.<part> ÷ estimated, for load, eval, start, metric, checkpoint,
                      save (load_ratio and eval_ratio as before)
    dynamic_ratio     (measured allocated − estimated static) ÷ estimated dynamic, where static =
                      weights + torch-visible optimizer state and dynamic = allocated − static
                      (activations, logits, gradients, temporaries: the part modelled per token)
    device_offset_gib measured device (nvidia-smi; RSS on CPU) − calibrated allocated, minus the
                      estimate's own device − allocated (arithmetic mean: an additive overhead)
A row is calibrated by the factors of its (gpu, method); when that method has no records, by the
pooled factors of its GPU; never across GPUs. `apply` names what it changed in row["calibrated"].

Records are advisor.trials' typed records (any version), read from a sweep folder, a JSON file or a
JSONL file; a record's GPU and method are its cell's (`TrialRecord.value`), or its estimate row's for
a hand-written record without a config.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import ConfigError
from advisor.trials.record import RecordError, TrialRecord
from advisor.trials.store import BASELINE, read_folder

USABLE_STATUSES = ("complete", "pruned")  # finished trials whose measurements cover whole steps
ANY_METHOD = "*"


@dataclass(frozen=True)
class Factor:
    """One fitted factor: value, how many records it rests on, and their spread."""

    value: float
    count: int
    spread: float  # geometric std (×/÷) for ratios; std for offsets
    kind: str = "ratio"  # ratio | offset

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": round(self.value, 6),
            "count": self.count,
            "spread": round(self.spread, 6),
            "kind": self.kind,
        }


def _ratio(values: list[float | None]) -> Factor | None:
    vs = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not vs:
        return None
    logs = [math.log(v) for v in vs]
    mu = sum(logs) / len(logs)
    sd = math.sqrt(sum((x - mu) ** 2 for x in logs) / len(logs))
    return Factor(math.exp(mu), len(vs), math.exp(sd))


def _offset(values: list[float | None]) -> Factor | None:
    vs = [v for v in values if v is not None and math.isfinite(v)]
    if not vs:
        return None
    mu = sum(vs) / len(vs)
    return Factor(mu, len(vs), math.sqrt(sum((x - mu) ** 2 for x in vs) / len(vs)), "offset")


def _get(d: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _static_gib(est: dict[str, Any]) -> float:
    m = est["memory"]
    return m["weights_gib"] + m["optimizer_gib"] - (est.get("paged_gib") or 0.0)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _div(a: Any, b: Any) -> float | None:
    a, b = _num(a), _num(b)
    return a / b if a is not None and b else None


WALL_PARTS = ("load", "eval", "start", "metric", "checkpoint", "save")  # besides train (step_ratio)


def _step_s(est: dict[str, Any]) -> float | None:
    """The estimate's seconds per optimizer step (older rows: train seconds ÷ steps)."""
    step = _num(_get(est, "time", "step_s"))
    if step:
        return step
    return _div(_get(est, "time", "wall_s", "train"), _get(est, "time", "steps"))


def _fit_group(records: list[TrialRecord]) -> dict[str, Factor]:
    tps: list[float | None] = []
    steps: list[float | None] = []
    parts: dict[str, list[float | None]] = {k: [] for k in WALL_PARTS}
    dyn: list[float | None] = []
    dev: list[float | None] = []
    for r in records:
        est, meas = r.estimate or {}, r.measured or {}
        tps.append(_div(meas.get("tokens_per_s"), _get(est, "time", "tokens_per_s")))
        steps.append(_div(_div(_get(meas, "wall_s", "train"), meas.get("steps")), _step_s(est)))
        for k in WALL_PARTS:
            parts[k].append(_div(_get(meas, "wall_s", k), _get(est, "time", "wall_s", k)))
        alloc, e_alloc = _num(meas.get("allocated_gib")), _num(_get(est, "memory", "allocated_gib"))
        if alloc is None or e_alloc is None:
            continue
        static = _static_gib(est)
        ratio = _div(alloc - static, e_alloc - static) if e_alloc - static > 0 else None
        dyn.append(ratio)
        device = _num(meas.get("device_gib")) or _num(meas.get("rss_gib"))
        e_over = _num(_get(est, "memory", "device_gib"))
        if device is not None and e_over is not None:
            dev.append(device - alloc - (e_over - e_alloc))
    fitted = {
        "time_efficiency": _ratio(tps),
        "step_ratio": _ratio(steps),
        **{f"{k}_ratio": _ratio(v) for k, v in parts.items()},
        "dynamic_ratio": _ratio(dyn),
        "device_offset_gib": _offset(dev),
    }
    return {k: v for k, v in fitted.items() if v is not None}


def _usable(r: TrialRecord) -> bool:
    return (
        r.status in USABLE_STATUSES
        and r.estimate is not None
        and r.measured is not None
        and isinstance(r.estimate.get("memory"), dict)
    )


def _key(r: TrialRecord) -> tuple[str, str]:
    est = r.estimate or {}
    return str(r.value("gpu") or est.get("gpu")), str(r.method or est.get("method"))


@dataclass
class Calibration:
    """Fitted factors per (gpu, method); (gpu, "*") pools every method of that GPU."""

    factors: dict[tuple[str, str], dict[str, Factor]] = field(default_factory=dict)
    source: str = ""
    records: int = 0

    def for_row(self, gpu: str, method: str) -> dict[str, Factor]:
        return self.factors.get((gpu, method)) or self.factors.get((gpu, ANY_METHOD)) or {}

    def apply(self, row: dict[str, Any], cfg: Any = None) -> dict[str, Any]:
        """A calibrated copy of an advise row; row["calibrated"] lists the numbers changed."""
        f = self.for_row(str(row.get("gpu")), str(row.get("method")))
        if not f:
            return row
        out = copy.deepcopy(row)
        changed: list[str] = list(out.get("calibrated") or [])
        t, m = out.get("time") or {}, out.get("memory") or {}
        if ("time_efficiency" in f or "step_ratio" in f) and t.get("tokens_per_s"):
            # seconds per step measured ÷ estimated where records have it; else the tokens/s ratio
            eff = 1 / f["step_ratio"].value if "step_ratio" in f else f["time_efficiency"].value
            wall = dict(t.get("wall_s") or {})
            if "train" in wall:
                wall["train"] = wall["train"] / eff
            if t.get("step_s"):
                t["step_s"] = round(t["step_s"] / eff, 6)
            for k in WALL_PARTS:
                if k in wall and f"{k}_ratio" in f:
                    wall[k] = wall[k] * f[f"{k}_ratio"].value
            old_h = t.get("hours") or 0.0
            t["tokens_per_s"] = round(t["tokens_per_s"] * eff, 1)
            t["wall_s"] = {k: round(v, 1) for k, v in wall.items()}
            t["hours"] = round(sum(wall.values()) / 3600, 4) if wall else round(old_h / eff, 4)
            changed += ["time.tokens_per_s", "time.hours"]
            cost = out.get("cost")
            if isinstance(cost, dict) and old_h:
                cost["usd"] = round(cost["usd"] * t["hours"] / old_h, 2)
                changed.append("cost.usd")
        if "dynamic_ratio" in f and m.get("allocated_gib") is not None:
            static = _static_gib(out)
            alloc = static + (m["allocated_gib"] - static) * f["dynamic_ratio"].value
            over_res = m["reserved_gib"] - m["allocated_gib"]
            over_dev = m["device_gib"] - m["allocated_gib"]
            dev_off = f["device_offset_gib"].value if "device_offset_gib" in f else 0.0
            m["allocated_gib"] = round(alloc, 3)
            m["reserved_gib"] = round(alloc + over_res, 3)
            m["device_gib"] = round(alloc + over_dev + dev_off, 3)
            m["overhead_gib"] = round(m["device_gib"] - m["allocated_gib"], 3)
            changed += ["memory.allocated_gib", "memory.reserved_gib", "memory.device_gib"]
            if cfg is not None:
                out["fits"] = m["device_gib"] <= cfg.gpu.usable_gib
                changed.append("fits")
        if cfg is not None and out.get("within_budget") is not None:
            usd, hours = _get(out, "cost", "usd"), t.get("hours")
            out["within_budget"] = (cfg.budget_usd is None or usd <= cfg.budget_usd) and (
                cfg.budget_hours is None or hours <= cfg.budget_hours
            )
        out["calibrated"] = sorted(set(changed))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "records": self.records,
            "factors": [
                {"gpu": g, "method": m, **{k: v.to_dict() for k, v in fs.items()}}
                for (g, m), fs in sorted(self.factors.items())
            ],
        }


def fit(records: list[TrialRecord], source: str = "") -> Calibration:
    """Fit per-(gpu, method) factors (and per-gpu pooled ones) from trial records."""
    usable = [r for r in records if _usable(r)]
    groups: dict[tuple[str, str], list[TrialRecord]] = {}
    for r in usable:
        gpu, method = _key(r)
        groups.setdefault((gpu, method), []).append(r)
        groups.setdefault((gpu, ANY_METHOD), []).append(r)
    factors = {k: fs for k, rs in groups.items() if (fs := _fit_group(rs))}
    return Calibration(factors, source, len(usable))


def _typed(docs: list[Any], path: str | Path) -> list[TrialRecord]:
    out = []
    for i, d in enumerate(docs):
        if isinstance(d, dict) and d.get("cell_id") == BASELINE:
            continue  # the untrained base: no estimate to calibrate
        try:
            out.append(TrialRecord.from_dict(d, f"record {i + 1}"))
        except RecordError as e:
            raise ConfigError([f"advisor.calibration={str(path)!r}: {p}" for p in e.problems]) from None
    return out


def read_records(path: str | Path) -> list[TrialRecord]:
    """Trial records from a sweep dir (trials/*.json), a folder of record JSON files, a JSON file
    (one record or a list) or a JSONL file (one record per line)."""
    p = Path(path).expanduser()
    if p.is_dir():
        records, problems = read_folder(p / "trials" if (p / "trials").is_dir() else p)
        if problems:
            raise ConfigError([f"advisor.calibration={str(path)!r}: {x}" for x in problems])
        return records
    if not p.is_file():
        raise ConfigError(f"advisor.calibration={str(path)!r}: no such sweep folder or records file")
    try:
        text = p.read_text()  # not UTF-8: a ValueError too
        if p.suffix == ".jsonl":
            return _typed([json.loads(line) for line in text.splitlines() if line.strip()], path)
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ConfigError(
            f"advisor.calibration={str(path)!r}: not JSON/JSONL records ({str(e)[:200]})"
        ) from None
    return _typed(data if isinstance(data, list) else [data], path)


def load(path: str | Path) -> Calibration:
    """The calibration fitted on the records at `path` (what `advisor.calibration=PATH` names)."""
    records = read_records(path)
    cal = fit(records, str(path))
    if not cal.factors:
        raise ConfigError(
            f"advisor.calibration={str(path)!r}: {len(records)} records, none usable "
            f"(needs status in {list(USABLE_STATUSES)} with both `estimate` and `measured`)"
        )
    return cal


load_calibration = load  # the name sweep/plan.py imports


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int) -> Calibration:  # noqa: ARG001 (mtime_ns: part of the cache key)
    return load(path)


def as_calibration(c: Calibration | str | Path) -> Calibration:
    """A Calibration, or the one fitted on the records at a path (cached while the path is unchanged)."""
    if isinstance(c, Calibration):
        return c
    p = Path(c).expanduser()
    target = p / "trials" if (p / "trials").is_dir() else p
    try:
        mtime = max([target.stat().st_mtime_ns] + [f.stat().st_mtime_ns for f in target.glob("*.json")])
    except OSError:
        mtime = 0
    return _load_cached(str(c), mtime)

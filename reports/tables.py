"""The report's tables, built from the results frame (reports.frame) with pandas group-bys.

- `record_table`: one row per record (per seed / learning rate of a configuration) with the derived
  numbers the report shows: eval loss, peak memory, wall time, static memory.
- `cell_table`: one row per configuration (the cells that differ only in seed or learning rate):
  status, mean ± sample standard deviation of eval loss over the chosen records (complete, at the
  configuration's best learning rate: every seed of it), the means of metric, dollars, hours,
  throughput, and the largest peak.
- `trends`: smallest vs largest rows (or rank) within each series of configurations.
- `pareto`: the configurations no other is both cheaper and better than.
- `calibration_pairs` / `calibration_summary`: the advisor's estimate against the measurement per
  configuration and quantity, and the error per quantity (count, median, within 15 %, worst).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from advisor.config.methods import METHODS
from advisor.trials.record import FINISHED

OFF_BY = 0.15  # estimates off by more than this share of the measured value are called out
PEAK_KEYS_CPU = ("rss_gib", "device_gib", "reserved_gib", "allocated_gib")
PEAK_KEYS_GPU = ("device_gib", "reserved_gib", "allocated_gib", "rss_gib")
_ORDER = {m: i for i, m in enumerate(METHODS)}


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    """A column, or an all-missing Float64 one when no record has it."""
    if name in df:
        return df[name]
    return pd.Series(pd.array([None] * len(df), dtype="Float64"), index=df.index)


def record_table(frame: pd.DataFrame, is_cpu: bool) -> pd.DataFrame:
    """One row per record, in report order (configurations by method, rank, rows, extra axes; within
    one, by seed and learning rate), with `loss`, `peak_gib`, `wall_s` and `static_gib` added.
    `peak_gib` is the peak that decides fitting: nvidia-smi's on a GPU, process RSS on the CPU."""
    recs = frame.drop_duplicates("cell_id").copy()
    recs["loss"] = _col(recs, "measured.eval_loss")
    keys = PEAK_KEYS_CPU if is_cpu else PEAK_KEYS_GPU
    recs["peak_gib"] = pd.concat([_col(recs, f"measured.{k}") for k in keys], axis=1).bfill(axis=1).iloc[:, 0]
    walls = [c for c in recs.columns if c.startswith("measured.wall_s.")]
    recs["wall_s"] = recs[walls].sum(axis=1, min_count=1) if walls else _col(recs, "measured.wall_s")
    parts = [_col(recs, f"measured.static_bytes.{k}") for k in ("weights", "gradients", "optimizer")]
    recs["static_gib"] = (parts[0] + parts[1] + parts[2]) / 2**30
    recs["_method"] = recs["method"].map(lambda m: _ORDER.get(m, 9)).astype(int)
    recs["_seed"] = recs["seed"].astype("string").fillna("None")
    recs["_lr"] = recs["lr"].fillna(-1.0)
    order = ["_method", "r", "rows", "extra", "configuration", "_seed", "_lr"]
    filled = recs.assign(r=recs["r"].fillna(0), rows=recs["rows"].fillna(0))
    return recs.loc[filled.sort_values(order, kind="stable").index].reset_index(drop=True)


def chosen_records(recs: pd.DataFrame) -> pd.DataFrame:
    """Complete records with an eval loss at their configuration's best learning rate (every seed of
    it): what a configuration's quality is."""
    done = recs[(recs["status"] == "complete") & recs["loss"].notna()]
    means = done.groupby(["configuration", "_lr"], sort=False)["loss"].mean()
    best = set(means.groupby(level=0, sort=False).idxmin())
    keep = [(c, lr) in best for c, lr in zip(done["configuration"], done["_lr"], strict=True)]
    return done[pd.Series(keep, index=done.index, dtype=bool)]


def _cell_status(s: pd.Series) -> str:
    for st in ("running", "pending", "complete"):
        if (s == st).any():
            return st
    return str(s.iloc[0])


def _status_label(s: pd.Series) -> str:
    """'complete', or 'complete 2/3, failed 1/3' when the records ended differently."""
    counts = s.value_counts(sort=False)
    if len(counts) == 1:
        return str(s.iloc[0])
    return ", ".join(f"{st} {counts[st]}/{len(s)}" for st in dict.fromkeys(s))


def _tuples(g: Any, col: str) -> pd.Series:
    """Per group, the column's values as a tuple of plain Python values."""
    return pd.Series({k: tuple(value(x) for x in s) for k, s in g[col]}, dtype=object)


FIELD_PREFIX = "measured.metric_fields."  # the task metric's per-field accuracy (runners.metric)


def field_means(table: pd.DataFrame, configuration: str) -> dict[str, float]:
    """{field: mean accuracy over the chosen records} of one configuration; {} without per-field data."""
    row = table.loc[configuration]
    return {
        k.removeprefix(FIELD_PREFIX): float(row[k])
        for k in table.columns
        if k.startswith(FIELD_PREFIX) and pd.notna(row[k])
    }


def cell_table(recs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (indexed by it, in report order); see the module docstring."""
    g = recs.groupby("configuration", sort=False)
    table = g.head(1).set_index("configuration")[["method", "r", "rows", "extra"]].copy()
    table["trials"] = g.size()
    table["status"] = g["status"].agg(_cell_status)
    table["status_label"] = g["status"].agg(_status_label)
    table["finished"] = g["status"].agg(lambda s: bool(s.isin(FINISHED).all()))
    table["reason"] = g["reason"].agg(lambda s: "; ".join(dict.fromkeys(x for x in s.dropna() if x)))
    table["peak_any_gib"] = g["peak_gib"].max()
    table["cell_ids"] = _tuples(g, "cell_id")
    complete = recs[recs["status"] == "complete"]
    tuned = complete.groupby("configuration")["_lr"].nunique() > 1
    table["lr_tuned"] = tuned.reindex(table.index, fill_value=False).astype(bool)
    c = chosen_records(recs).groupby("configuration", sort=False)
    table["n"] = c.size().reindex(table.index, fill_value=0).astype(int)
    for name, col, how in (
        ("loss", "loss", "mean"),
        ("std", "loss", "std"),
        ("metric", "measured.metric", "mean"),
        ("usd", "measured.usd", "mean"),
        ("wall_s", "wall_s", "mean"),
        ("peak_gib", "peak_gib", "max"),
        ("static_gib", "static_gib", "mean"),
        ("tokens_per_s", "measured.tokens_per_s", "mean"),
        ("adapter_bytes", "measured.adapter_bytes", "mean"),
        ("trainable_params", "measured.trainable_params", "mean"),
        ("best_lr", "lr", "first"),
    ):
        table[name] = c[col].agg(how).reindex(table.index) if col in recs else pd.NA
    for col in (k for k in recs.columns if k.startswith(FIELD_PREFIX)):  # per-field task accuracy
        table[col] = pd.to_numeric(c[col].mean(), errors="coerce").reindex(table.index)
    table["hours"] = table["wall_s"] / 3600
    table["eval_losses"] = _tuples(c, "loss").reindex(table.index)
    table["chosen_ids"] = _tuples(c, "cell_id").reindex(table.index)
    return table


def trends(cells: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Per series (method and rank, or method and rows, and extra axes), the smallest and the largest
    value of `axis` ('rows' or 'r') with their eval losses; series with one value left out."""
    d = cells[cells["loss"].notna() & cells[axis].notna()]
    if axis == "r":
        d = d[d["method"] != "full"]
    series = ["method", "rows", "extra"] if axis == "r" else ["method", "r", "extra"]
    g = d.groupby(series, sort=False, dropna=False)
    lo, hi = d.loc[g[axis].idxmin()], d.loc[g[axis].idxmax()]
    out = pd.DataFrame(
        {
            "method": lo["method"].to_numpy(),
            "r": lo["r"].to_numpy(),
            "rows": lo["rows"].to_numpy(),
            "extra": lo["extra"].to_numpy(),
            "lo": lo[axis].to_numpy(),
            "hi": hi[axis].to_numpy(),
            "lo_loss": lo["loss"].to_numpy(),
            "hi_loss": hi["loss"].to_numpy(),
            "values": g.size().to_numpy(),
        }
    )
    return out[out["values"] >= 2].reset_index(drop=True)


def pareto(cells: pd.DataFrame) -> pd.DataFrame:
    """Complete configurations no other beats on both dollars and eval loss (lower is better)."""
    d = cells[(cells["status"] == "complete") & cells["usd"].notna() & cells["loss"].notna()]
    d = d.sort_values(["usd", "loss"], kind="stable")
    best_before = d["loss"].cummin().shift(1)
    return d[best_before.isna() | (d["loss"] < best_before)]


@dataclass(frozen=True)
class Quantity:
    name: str
    predicted: str  # estimate column
    measured: str  # measured column
    unit: str  # GiB | h | $
    complete_only: bool = False  # time and cost compare only for runs that finished training


def quantities(is_cpu: bool) -> list[Quantity]:
    """What design.md says compares on this device: allocated everywhere; RSS with device on the
    CPU, reserved and device on a GPU; train time and cost for complete runs."""
    mem = "estimate.memory."
    q = [Quantity("allocated", mem + "allocated_gib", "measured.allocated_gib", "GiB")]
    if is_cpu:
        q.append(Quantity("device vs RSS", mem + "device_gib", "measured.rss_gib", "GiB"))
    else:
        q.append(Quantity("reserved", mem + "reserved_gib", "measured.reserved_gib", "GiB"))
        q.append(Quantity("device", mem + "device_gib", "measured.device_gib", "GiB"))
    # time in two parts, so the section shows which one is off: the optimizer steps, and everything
    # outside them (start, load, evals, the task metric, checkpoints, saving)
    q.append(Quantity("train time", "est_train_h", "train_h", "h", True))
    q.append(Quantity("time outside steps", "est_outside_h", "outside_h", "h", True))
    q.append(Quantity("cost", "estimate.cost.usd", "measured.usd", "$", True))
    return q


def _wall_h(df: pd.DataFrame, prefix: str, train: bool) -> pd.Series:
    """Hours of the train part (train=True), or of every other wall_s part, of `prefix`.wall_s.*."""
    cols = [c for c in df.columns if c.startswith(prefix + "wall_s.")]
    chosen = [c for c in cols if (c == prefix + "wall_s.train") == train]
    if not chosen:
        return _col(df, "__none__")
    return df[chosen].astype("Float64").sum(axis=1, min_count=1) / 3600


def calibration_pairs(recs: pd.DataFrame, is_cpu: bool) -> pd.DataFrame:
    """Per configuration and quantity: predicted (the first measured record's estimate), measured
    (the mean over its chosen records, or its first pruned record's peaks so far), the error
    (predicted − measured) / measured, and how many records the measurement is a mean of."""
    chosen = chosen_records(recs)
    pruned = recs[recs["status"] == "pruned"].groupby("configuration", sort=False).head(1)
    used = pd.concat([chosen, pruned[~pruned["configuration"].isin(chosen["configuration"])]])
    est_cols = [c for c in recs.columns if c.startswith("estimate.")]
    used = used.assign(
        train_h=_col(used, "measured.wall_s.train").where(lambda s: s > 0) / 3600,
        est_train_h=_wall_h(used, "estimate.time.", True),
        outside_h=_wall_h(used, "measured.", False),
        est_outside_h=_wall_h(used, "estimate.time.", False),
        _has_est=used[est_cols].notna().any(axis=1) if est_cols else False,
    )
    order = {c: i for i, c in enumerate(dict.fromkeys(recs["configuration"]))}
    used = used.assign(_cell=used["configuration"].map(order)).sort_values("_cell", kind="stable")
    g = used.groupby("configuration", sort=False)
    first = g.head(1).set_index("configuration")
    first = first[first["_has_est"]]
    parts = []
    for i, q in enumerate(quantities(is_cpu)):
        rows = first if not q.complete_only else first[first["status"] == "complete"]
        part = pd.DataFrame(
            {
                "method": rows["method"],
                "r": rows["r"],
                "rows": rows["rows"],
                "extra": rows["extra"],
                "records": g.size().reindex(rows.index),
                "quantity": q.name,
                "unit": q.unit,
                "predicted": _col(rows, q.predicted).astype("Float64"),
                "measured": g[q.measured].mean().reindex(rows.index).astype("Float64")
                if q.measured in used
                else pd.NA,
                "_cell": rows["_cell"],
                "_q": i,
            },
            index=rows.index,
        )
        parts.append(part)
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts).sort_values(["_cell", "_q"], kind="stable")
    out = out[(out["predicted"] > 0).fillna(False) & (out["measured"] > 0).fillna(False)]
    out = out.assign(error=(out["predicted"] - out["measured"]) / out["measured"])
    return out.drop(columns=["_cell", "_q"]).reset_index()


def calibration_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per quantity: how many configurations, the median error, how many within OFF_BY, the worst."""
    g = pairs.groupby("quantity", sort=False)["error"]
    return pd.DataFrame(
        {
            "cells": g.size(),
            "median": g.median(),
            "within": g.agg(lambda e: int((e.abs() <= OFF_BY).sum())),
            "worst": g.agg(lambda e: e.loc[e.abs().idxmax()]),
        }
    ).reset_index()


def value(x: Any) -> Any:
    """A frame cell as plain Python: None for missing, int/float/str/bool for numpy scalars."""
    if isinstance(x, (tuple, list)):
        return x
    if x is None or x is pd.NA or (not isinstance(x, str) and pd.isna(x)):
        return None
    return x.item() if hasattr(x, "item") else x

"""A sweep folder's results stay true through reruns: one config per folder, claims that follow the
records, failures retried when they may succeed now.

Before anything runs, `tunewise sweep` compares the plan with what the folder holds:
- `changes`: every cell with a result (complete, pruned, oom) whose recorded config differs from the
  config the plan would run it with now, and the baseline when the keys it depends on differ. Keys
  that only inform the advisor's estimate (advisor.*, the card's catalog numbers, budget.*, notes) are
  not compared; what they change in what runs (the fitted micro-batch) shows in train.*. A rerun with
  changes is refused (exit 2) naming the keys, unless `sweep.rerun=changed`: then the affected cells'
  records and folders move to sweep.dir/replaced/<time>/ and the cells run again.
- `sync`: the claims table follows the records — a cell whose record holds a finished status is not
  run again even when study.db is new (a corrupt one moved aside, another sweep.storage); a record
  that can be neither read nor rebuilt is set aside and its cell measured again.
- `reopen`: a settled cell that may run now is pending again — over budget or infeasible cells the
  plan now runs, cells whose config did not build and now does, failures that sweep.retry retries,
  a cell without a result whose config changed, and skipped cells now skipped for another cause (the same cause with new numbers updates the reason in place).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.config.methods import METHODS
from advisor.errors import ConfigError
from advisor.trials.record import TrialRecord
from advisor.trials.store import (
    BASELINE,
    read_baseline,
    read_records,
    record_path,
    repair_record,
    save_record,
    set_aside,
    write_json,
)
from sweep.claims import Claims, Row, is_dead
from sweep.plan import Plan
from sweep.retry import RESULTS, retry_reason

log = logging.getLogger("tunewise.sweep")

# keys that do not change what a cell runs (estimate-only, labels, the sweep's own budget)
IGNORED = (
    "notes",
    "resolved",
    "budget.",
    "advisor.",
    "data.out_dir",
    "data.avg_tokens",
    "model.config_path",
    "gpu.display_name",
    "gpu.memory_gb",
    "gpu.usable_mib",
    "gpu.bandwidth_gbs",
    "gpu.bf16_dense_tflops",
    "gpu.fp32_tflops",
    "gpu.tdp_w",
    "gpu.bf16_supported",
    "gpu.bnb_supported",
    "gpu.prices",
    "gpu.usd_per_hour",  # shows in price.usd_per_gpu_hour
    "price.provider",
    "price.tier",
    "price.as_of",
    "price.source",
)
# what the untrained base's eval loss and metric depend on
BASELINE_KEYS = (
    "model.",
    "data.path",
    "data.val_path",
    "data.val_fraction",
    "data.val_rows_max",
    "data.format",
    "data.fields.",
    "seed",
    "train.seq_len",
    "train.metric",
    "train.metric_rows",
    "train.max_new_tokens",
    "train.precision",
    "train.attention",
)


def flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a config dict (lists kept whole)."""
    if not isinstance(d, dict):
        return {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat(v, key + "."))
        else:
            out[key] = v
    return out


def _compared(key: str) -> bool:
    return not any(key == p or (p.endswith(".") and key.startswith(p)) for p in IGNORED)


def _for_baseline(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in BASELINE_KEYS)


def _unused(config: dict[str, Any]) -> tuple[str, ...]:
    """Keys the config's method does not read (rank for full fine-tuning, the other method's rate)."""
    name = flat(config).get("method.name")
    if name not in METHODS:
        return ()
    return (*METHODS[name].ignores, "train.lr_adapter" if name == "full" else "train.lr_full")


def differences(old: Any, new: Any, baseline: bool = False) -> dict[str, tuple[Any, Any]]:
    """{key: (old value, new value)} of the keys that change what runs."""
    a, b = flat(old), flat(new)
    unused = set(_unused(old)) & set(_unused(new)) if not baseline else set()
    keep = _for_baseline if baseline else _compared
    return {
        k: (a.get(k), b.get(k))
        for k in sorted(set(a) | set(b))
        if keep(k) and k not in unused and a.get(k) != b.get(k)
    }


@dataclass
class Changes:
    """Cells (and the baseline) with a result measured under another config than the plan's."""

    cells: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    baseline: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.cells or self.baseline)

    @property
    def ids(self) -> list[str]:
        return [*self.cells, *([BASELINE] if self.baseline else [])]

    def keys(self) -> dict[str, tuple[Any, Any]]:
        out: dict[str, tuple[Any, Any]] = {}
        for diff in [*self.cells.values(), self.baseline]:
            for k, v in diff.items():
                out.setdefault(k, v)
        return out


def changes(plan: Plan, records: dict[str, TrialRecord], baseline: TrialRecord | None) -> Changes:
    ch = Changes()
    for pc in plan.cells:
        rec = records.get(pc.cell_id)
        if rec is None or pc.cfg is None or rec.status not in RESULTS or rec.config is None:
            continue
        diff = differences(rec.config, pc.cfg.to_dict())
        if rec.lr_trials != pc.lr_trials:
            diff["sweep.lr_trials"] = (rec.lr_trials, pc.lr_trials)
        if diff:
            ch.cells[pc.cell_id] = diff
    if baseline is not None and baseline.status in RESULTS and baseline.config is not None:
        ch.baseline = differences(baseline.config, plan.base_cfg.to_dict(), baseline=True)
    return ch


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "…"


def refusal(plan: Plan, ch: Changes) -> ConfigError:
    keys = ch.keys()
    shown = [f"{k}={_show(old)} (now {_show(new)})" for k, (old, new) in list(keys.items())[:12]]
    more = f" and {len(keys) - 12} more" if len(keys) > 12 else ""
    what = f"{len(ch.cells)} finished cell(s)" + (" and the baseline" if ch.baseline else "")
    d = plan.dir
    return ConfigError(
        f"sweep.dir={str(d)!r}: {what} in this folder were measured with another config — "
        + "; ".join(shown)
        + f"{more}. Their results would be reported under the new config, so this rerun is refused. Either\n"
        f"      measure the new config in a new folder: sweep.dir={d}-2 (any folder not used yet), or\n"
        f"      re-run the affected cells here: sweep.rerun=changed (their records and cell folders move "
        f"to {d / 'replaced'}/<time>/)"
    )


def restore_missing(plan: Plan) -> list[str]:
    """Records deleted by hand, rebuilt from their cell's folder when it holds a result (before the
    plan.json of this run replaces the one that describes them); the cell ids rebuilt."""
    out = []
    for cid in [*(pc.cell_id for pc in plan.cells), BASELINE]:
        folder = plan.dir / "cells" / cid
        if record_path(plan.dir, cid).exists() or not folder.is_dir():
            continue
        if repair_record(plan.dir, cid, "the file was missing") is not None:
            log.warning("trials/%s.json was missing: rebuilt from %s", cid, folder)
            out.append(cid)
    return out


def check(plan: Plan) -> Changes:
    """The changes this rerun would make to measured cells; ConfigError unless sweep.rerun=changed."""
    restore_missing(plan)
    records, _ = read_records(plan.dir)
    ch = changes(plan, {r.cell_id: r for r in records}, read_baseline(plan.dir))
    if ch and plan.settings.rerun != "changed":
        raise refusal(plan, ch)
    return ch


def _reset(claims: Claims, row: Row) -> bool:
    return claims.cas(
        row,
        status="pending",
        host=None,
        pid=None,
        heartbeat=None,
        attempts=0,
        deaths=0,
        trial_number=None,
        usd=None,
        wall_s=None,
    )


def replace(plan: Plan, claims: Claims, ch: Changes) -> Path | None:
    """sweep.rerun=changed: move the affected cells' records and folders to replaced/<time>/ and make
    them pending. A cell a live worker is running is refused, not moved."""
    if not ch:
        return None
    rows = claims.rows()
    busy = [
        cid
        for cid in ch.ids
        if (r := rows.get(cid)) is not None
        and r.status == "running"
        and not is_dead(r, plan.settings.heartbeat_timeout_s)
    ]
    if busy:
        raise ConfigError(
            f"sweep.rerun=changed: cell(s) {', '.join(busy)} are running under the old config in another "
            "process; let it finish (or stop it), then rerun"
        )
    dest = plan.dir / "replaced" / time.strftime("%Y%m%dT%H%M%S")
    for cid in ch.ids:
        for src, to in (
            (record_path(plan.dir, cid), dest / "trials" / f"{cid}.json"),
            (plan.dir / "cells" / cid, dest / "cells" / cid),
        ):
            if src.exists():
                to.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, to)
        row = claims.get(cid)
        if row is not None:
            _reset(claims, row)
    write_json(
        dest / "why.json",
        {
            "cells": {cid: {k: list(v) for k, v in d.items()} for cid, d in ch.cells.items()},
            "baseline": {k: list(v) for k, v in ch.baseline.items()},
        },
    )
    log.warning("sweep.rerun=changed: %d cell(s) measured with another config moved to %s", len(ch.ids), dest)
    return dest


def sync(plan: Plan, claims: Claims) -> None:
    """Claims follow the records: finished records settle pending rows (a new study.db, another
    storage); records that can be neither read nor rebuilt are set aside and their cells run again, as
    does a finished cell whose record is gone (`check` rebuilt what its folder could rebuild)."""
    records, unreadable = read_records(plan.dir)
    by_id = {r.cell_id: r for r in records}
    base = read_baseline(plan.dir)
    if base is not None:
        by_id[BASELINE] = base
    rows = claims.rows()
    for problem in unreadable:
        cid = Path(problem.split(":", 1)[0]).stem
        moved = set_aside(record_path(plan.dir, cid))
        log.warning("%s — set aside as %s; the cell runs again", problem, moved)
        row = rows.get(cid)
        if row is not None and row.terminal:
            _reset(claims, row)
    rows = claims.rows()
    for cid, row in rows.items():  # finished, but its record is gone and was not rebuilt (check)
        if row.status not in RESULTS or cid in by_id or record_path(plan.dir, cid).exists():
            continue
        if _reset(claims, row):
            log.warning(
                "cell %s was %s but its record is gone, nor in cells/: it runs again", cid, row.status
            )
    rows = claims.rows()
    for cid, rec in by_id.items():
        row = rows.get(cid)
        if (
            row is not None
            and row.status == "pending"
            and rec.status in (*RESULTS, "infeasible", "over_budget", "failed")
        ):
            spent = rec.spent or {}
            claims.cas(row, status=rec.status, usd=spent.get("usd") or 0.0, wall_s=spent.get("wall_s") or 0.0)


def reopen(plan: Plan, claims: Claims) -> int:
    """Settled cells (and the baseline) that may run now back to pending; how many."""
    records = {r.cell_id: r for r in read_records(plan.dir)[0]}
    rows = claims.rows()
    force = plan.settings.rerun == "failed"
    n = 0
    for pc in plan.cells:
        row, rec = rows.get(pc.cell_id), records.get(pc.cell_id)
        if row is None or row.status not in ("failed", "infeasible", "over_budget"):
            continue
        if rec is not None and pc.status == rec.status == row.status and rec.reason != pc.reason:
            rec.reason = pc.reason  # skipped alike, with today's numbers (a re-estimated price): no new trial
            save_record(plan.dir, rec)
        why = _why_reopen(pc.status, pc.reason, pc.cfg.to_dict() if pc.cfg else None, row, rec, force)
        if why and _reset_keeping(claims, row, rec, plan, why):
            log.info("cell %s (%s) runs again: %s", pc.cell_id, row.status, why)
            n += 1
    row, base = rows.get(BASELINE), read_baseline(plan.dir)
    if row is not None and row.status == "failed" and base is not None:
        why = retry_reason(base, force)
        if why and _reset_keeping(claims, row, base, plan, why):
            log.info("baseline (failed) measured again: %s", why)
            n += 1
    return n


def _why_reopen(
    planned: str,
    reason: str | None,
    cfg: dict[str, Any] | None,
    row: Row,
    rec: TrialRecord | None,
    force: bool,
) -> str | None:
    ran = rec is not None and any(a.started is not None for a in rec.attempts)
    if planned != "run":  # the plan skips it: re-record when it is skipped for another cause
        changed = rec is None or rec.status != planned
        return f"now {planned}: {reason}" if changed else None
    if row.status in ("infeasible", "over_budget"):
        return "the plan runs it now"
    if not ran:
        return "its config builds now"
    assert rec is not None
    diff = differences(rec.config, cfg) if rec.config is not None and cfg is not None else {}
    if diff:
        return "its config changed (" + ", ".join(list(diff)[:4]) + ")"
    return retry_reason(rec, force)


def _reset_keeping(claims: Claims, row: Row, rec: TrialRecord | None, plan: Plan, why: str) -> bool:
    """Row to pending (its attempts count kept); the record says pending, and why, until it runs."""
    if not claims.cas(
        row, status="pending", host=None, pid=None, heartbeat=None, deaths=0, usd=None, wall_s=None
    ):
        return False
    if rec is not None:
        last = f"; last: {row.status}" + (f" ({rec.reason})" if rec.reason else "")
        rec.status, rec.reason = "pending", f"runs again: {why}{last}"[:2000]
        save_record(plan.dir, rec)
    return True

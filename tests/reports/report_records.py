"""Small hand-written sweeps for report tests (records in design.md's shape, typed in here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from advisor.config.schema import from_names

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def copy_fixture(name: str, dest: Path) -> Path:
    out = dest / name
    shutil.copytree(FIXTURES / name, out)
    return out


def cpu_record(
    method: str,
    r: int | None,
    rows: int,
    status: str = "complete",
    loss: float | None = None,
    seed: int | None = None,
    lr: float | None = None,
    overrides_as_list: bool = False,
    **measured: Any,
) -> dict[str, Any]:
    """A record of the CPU demo (gpu=cpu): measured allocated/RSS, per-core price."""
    lora = {"r": r} if r else {}
    train = {"seq_len": 256, **({"lr": lr} if lr else {})}
    cfg = from_names(
        "llama-3.2-1b",
        method,
        "cpu",
        train=train,
        data={"rows": rows},
        lora=lora,
        arch={"num_hidden_layers": 2},
        seed=seed or 0,
    )
    ov: dict[str, Any] = {"method": method, **({"method.r": r} if r else {}), "data.rows": rows}
    if seed is not None:
        ov["seed"] = seed
    if lr is not None:
        ov["train.lr"] = lr
    est = {
        "method": method,
        "r": r,
        "gpu": "cpu",
        "gpu_count": 1,
        "total_params": 900_000_000,
        "trainable_params": 5_000_000 if r else 900_000_000,
        "memory": {"allocated_gib": 2.0, "reserved_gib": 2.0, "device_gib": 3.0},
        "time": {"tokens": rows * 200, "flops": 1e15, "hours": 0.05},
        "cost": {"usd": 0.004, "usd_per_gpu_hour": 0.085},
        "fits": True,
        "within_budget": None,
        "calibrated": [],
    }
    m: dict[str, Any] = {}
    if loss is not None:
        m = {
            "allocated_gib": 2.1,
            "rss_gib": 4.2,
            "eval_loss": loss,
            "metric": 0.2,
            "usd": 0.005,
            "wall_s": {"load": 5.0, "train": 180.0, "eval": 15.0},
            "tokens_per_s": 900.0,
            "adapter_bytes": 20_000_000,
            "eval_curve": [[10, 0.5, loss + 0.1], [20, 1.0, loss]],
        }
    m.update(measured)
    return {
        "cell_id": f"{method}{r or ''}-{rows}-{seed}-{lr}",
        "status": status,
        "reason": "" if status == "complete" else f"{status} here",
        "overrides": [f"{k}={v}" for k, v in ov.items()] if overrides_as_list else ov,
        "config": cfg.to_dict(),
        "estimate": est,
        "measured": m,
        "attempts": [{"trial_number": 0, "status": status}],
        "provenance": {
            "versions": {"torch": "2.13.0"},
            "device": "cpu (2 cores)",
            "seed": seed or 0,
            "git_revision": "abc1234",
        },
    }


def write_sweep(
    root: Path,
    records: list[dict[str, Any]],
    baseline: float | None = 2.0,
    meta: dict[str, Any] | None = None,
) -> Path:
    (root / "trials").mkdir(parents=True, exist_ok=True)
    for rec in records:
        (root / "trials" / f"{rec['cell_id']}.json").write_text(json.dumps(rec))
    if baseline is not None:
        (root / "trials" / "baseline.json").write_text(
            json.dumps(
                {
                    "cell_id": "baseline",
                    "status": "complete",
                    "measured": {"eval_loss": baseline, "metric": 0.0},
                }
            )
        )
    if meta is not None:
        (root / "sweep.json").write_text(json.dumps(meta))
    return root

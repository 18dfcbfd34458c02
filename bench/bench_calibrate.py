"""Does calibration earn its keep? Fit advisor.estimator.calibrate on half of a set of real CPU runs and compare
the estimate's errors on the other half before and after calibration.

    .venv/bin/python bench/bench_calibrate.py                       # run the cells here (~5 min), then compare
    .venv/bin/python bench/bench_calibrate.py --records SWEEP_DIR   # use a finished sweep's trials/*.json

Without --records, each cell is a real run of runners.cell.run_cell on the demo base (outputs/demo/base,
built on first use) with the demo data; its record (estimate row + measured) is appended to
outputs/bench/calibrate-records.jsonl as soon as it finishes (rerunning skips finished cells).
Within each method the cells alternate between the fit half and the held-out half.
Error = estimate ÷ measured − 1, summarised as the mean of |error| over the held-out half.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from advisor.config.schema import from_names  # noqa: E402
from advisor.estimator.calibrate import fit, read_records  # noqa: E402
from advisor.estimator.estimate import estimate  # noqa: E402
from advisor.trials.record import TrialRecord  # noqa: E402

DEMO_MODEL = ROOT / "outputs" / "demo" / "base"
DEMO_DATA = ROOT / "outputs" / "demo" / "data" / "train.jsonl"
RECORDS = ROOT / "outputs" / "bench" / "calibrate-records.jsonl"
MAX_STEPS = 12  # optimizer steps per cell
SHAPES = ((128, 2), (256, 4), (192, 2), (256, 2))  # (seq_len, micro_batch_size)
METRICS = {  # name: (estimate path, measured key)
    "tokens_per_s": (("time", "tokens_per_s"), "tokens_per_s"),
    "allocated_gib": (("memory", "allocated_gib"), "allocated_gib"),
    "device_gib": (("memory", "device_gib"), "device_gib"),  # CPU: process RSS
    "hours": (("time", "hours"), "hours"),  # whole run: load + train + eval (measured: sum of wall_s)
}


def cells() -> list[dict]:
    out = []
    for method, ranks in (("full", [None]), ("lora", [4, 16]), ("qlora", [4, 16])):
        for r in ranks:
            for seq, mb in SHAPES[: 4 // len(ranks)]:
                out.append({"method": method, "r": r, "seq_len": seq, "micro_batch_size": mb})
    return out


def cell_cfg(c: dict):
    lora = {"r": c["r"]} if c["r"] else {}
    return from_names(
        "demo-base",
        c["method"],
        "cpu",
        lora=lora,
        arch={"path": str(DEMO_MODEL)},
        train={
            "seq_len": c["seq_len"],
            "micro_batch_size": c["micro_batch_size"],
            "grad_accum": 1,
            "max_steps": MAX_STEPS,
            "eval_points": 1,
            "metric": "none",
        },
        data={"path": str(DEMO_DATA), "rows": 200},
    )


def _estimate(cfg):
    from advisor.data.stats import dataset_stats

    return estimate(cfg, stats=dataset_stats(cfg))


def run_cells() -> list[TrialRecord]:
    from runners.cell import run_cell
    from runners.demo.assets import ensure_assets

    ensure_assets(str(DEMO_MODEL), str(DEMO_DATA))
    RECORDS.parent.mkdir(parents=True, exist_ok=True)
    done = {r.cell_id: r for r in read_records(RECORDS)} if RECORDS.is_file() else {}
    for c in cells():
        cid = "{method}-r{r}-s{seq_len}-b{micro_batch_size}".format(**c)
        if cid in done:
            continue
        cfg = cell_cfg(c)
        print(f"running {cid}", file=sys.stderr, flush=True)
        result = run_cell(cfg, Path(tempfile.mkdtemp(prefix="tw-cal-")), resume=False).to_dict()
        rec = {
            "cell_id": cid,
            "status": result["status"],
            "reason": result["reason"],
            "config": cfg.to_dict(),
            "estimate": _estimate(cfg),
            "measured": result["measured"],
        }
        with open(RECORDS, "a") as f:  # one line per finished cell: a crash loses only the running one
            f.write(json.dumps(rec) + "\n")
        done[cid] = TrialRecord.from_dict(rec, cid)
    return list(done.values())


def split(records: list[TrialRecord]) -> tuple[list[TrialRecord], list[TrialRecord]]:
    fit_half: list[TrialRecord] = []
    held: list[TrialRecord] = []
    by_method: dict[str, list[TrialRecord]] = {}
    for r in sorted(records, key=lambda r: r.cell_id):
        by_method.setdefault(str(r.method), []).append(r)
    for rs in by_method.values():
        fit_half += rs[0::2]
        held += rs[1::2]
    return fit_half, held


def _get(d: dict, path: tuple[str, ...]):
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def errors(rows: list[tuple[dict, dict]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in METRICS}
    for est, meas in rows:
        for name, (path, key) in METRICS.items():
            e, m = _get(est, path), meas.get(key) or (meas.get("rss_gib") if key == "device_gib" else None)
            if key == "hours":
                m = sum((meas.get("wall_s") or {}).values()) / 3600
            if isinstance(e, (int, float)) and isinstance(m, (int, float)) and m > 0:
                out[name].append(e / m - 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", help="sweep dir or records file (default: run the demo cells here)")
    args = ap.parse_args()
    records = read_records(args.records) if args.records else run_cells()
    records = [r for r in records if r.status in ("complete", "pruned") and r.estimate and r.measured]
    fit_half, held = split(records)
    cal = fit(fit_half, source="fit half")
    before = errors([(r.estimate or {}, r.measured or {}) for r in held])
    after = errors([(cal.apply(r.estimate or {}), r.measured or {}) for r in held])
    print(f"{len(records)} finished cells: fit on {len(fit_half)}, held out {len(held)}")
    print("| held-out metric | n | mean abs error before | after | per-cell before → after |")
    print("|---|---|---|---|---|")
    for k in METRICS:
        b, a = before[k], after[k]
        if not b:
            continue
        mb = sum(map(abs, b)) / len(b)
        ma = sum(map(abs, a)) / len(a)
        cells_s = ", ".join(f"{x:+.0%}→{y:+.0%}" for x, y in zip(b, a, strict=True))
        print(f"| {k} | {len(b)} | {mb:.1%} | {ma:.1%} | {cells_s} |")
    print("\nfactors:", json.dumps(cal.to_dict()["factors"], indent=1))
    assert all(math.isfinite(x) for v in after.values() for x in v)


if __name__ == "__main__":
    main()

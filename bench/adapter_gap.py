"""What closes the adapters' gap to full fine-tuning on the demo? Real runner cells, one change each.

Takes the demo sweep's LoRA cell (outputs/sweeps/demo-demo-base-cpu: LoRA r=16 on 400 rows, the
demo's settings) and runs it again through `runners.cell.run_cell`, in this process at one thread,
for each seed:
- `as-is`: the cell as the demo ran it (the reference for the others);
- `embeddings`: the same, with the token embeddings trainable beside the adapter (the demo base ties
  them to the output layer, so the output layer trains too) — what full fine-tuning changes and LoRA
  on `all-linear` cannot; done by unfreezing the embedding after PEFT wraps the model;
- `epochs×3`: the same, with three times the epochs (more steps at the same rate and schedule).
and prints eval loss per variant and seed, with the demo sweep's full fine-tuning cell beside it.

    .venv/bin/python bench/adapter_gap.py [--sweep outputs/sweeps/demo-demo-base-cpu] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from advisor.config.schema import RunConfig
from advisor.trials.record import TrialRecord
from advisor.trials.store import read_records

VARIANTS = ("as-is", "embeddings", "epochs×3")


def _cells(sweep: Path, method: str, r: int | None, rows: int) -> list[TrialRecord]:
    """The sweep's records of one configuration (every seed)."""
    records, _ = read_records(sweep)
    found = [
        rec
        for rec in records
        if (rec.coords.get("method"), rec.coords.get("method.r"), rec.coords.get("data.rows"))
        == (method, r, rows)
    ]
    if not found:
        raise SystemExit(f"{sweep}: no {method} r={r} {rows}-row cell (run `bash scripts/main.sh` first)")
    return found


@contextlib.contextmanager
def _trainable_embeddings() -> Iterator[None]:
    from runners import model as model_mod

    original = model_mod.load_model

    def load(cfg: RunConfig, sharded: bool = False):
        m = original(cfg, sharded)
        m.get_input_embeddings().weight.requires_grad_(True)
        return m

    model_mod.load_model = load
    try:
        yield
    finally:
        model_mod.load_model = original


def run(config: dict[str, Any], variant: str, seed: int) -> dict[str, Any]:
    from runners.cell import run_cell

    d = json.loads(json.dumps(config))
    d["seed"] = seed
    if variant == "epochs×3":
        d["train"]["epochs"] = d["train"]["epochs"] * 3
    cfg = RunConfig.from_dict(d)
    embeddings = _trainable_embeddings() if variant == "embeddings" else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as out, embeddings:
        res = run_cell(cfg, Path(out), resume=False).to_dict()
    m = res["measured"] or {}
    return {
        "variant": variant,
        "seed": seed,
        "status": res["status"],
        "eval_loss": m.get("eval_loss"),
        "trainable_params": m.get("trainable_params"),
        "steps": m.get("steps"),
        "metric_fields": m.get("metric_fields"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", type=Path, default=Path("outputs/sweeps/demo-demo-base-cpu"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    lora = _cells(args.sweep, "lora", 16, 400)[0]
    full = _cells(args.sweep, "full", None, 400)
    rows = []
    for variant in args.variants:
        for seed in args.seeds:
            row = run(lora.config or {}, variant, seed)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(
        f"\nLoRA r=16 · 400 rows, eval loss by variant (seeds {args.seeds}); full fine-tuning in the sweep:"
    )
    full_losses = [rec.measured["eval_loss"] for rec in full if rec.measured]
    print(f"  full fine-tuning: {statistics.mean(full_losses):.3f} (n={len(full_losses)})")
    for variant in args.variants:
        losses = [r["eval_loss"] for r in rows if r["variant"] == variant and r["eval_loss"] is not None]
        params = next((r["trainable_params"] for r in rows if r["variant"] == variant), None)
        if losses:
            print(f"  {variant:>10}: {statistics.mean(losses):.3f} (n={len(losses)}; {params:,} trainable)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

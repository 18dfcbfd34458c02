"""bench/bench_runner_vs_trainer.py end to end on a few steps: Trainer and the runner train on identical
micro-batches (the bench asserts it step by step, lock-step pairs included), every comparison is
reported."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_compares_on_identical_batches(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_rvt", ROOT / "bench" / "bench_runner_vs_trainer.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.ROWS = 120
    out = tmp_path / "bench.json"
    assert bench.main(["--steps", "6", "--rounds", "1", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["trainer_optim"] == "adamw_torch_fused"  # Trainer's default with torch >= 2.8
    assert doc["padding_fraction_trainer"] == doc["padding_fraction_runner"] > 0
    assert doc["padding_fraction_packed"] < doc["padding_fraction_runner"]
    r = doc["per_round"][0]
    assert r["timed_steps"]["runner_padded"] and min(r["timed_steps"]["runner_padded"]) >= bench.WARMUP_STEPS
    for key in ("ratio_padded", "ratio_padded_end_to_end", "ratio_no_tracking", "ratio_packed"):
        assert doc["median"][key] > 0
    for key in ("ratio_padded", "ratio_no_tracking", "ratio_packed"):
        assert doc["best_of_rounds"][key] > 0
    assert (
        doc["paired_step_ratio"]["runner_padded"] > 0 and doc["paired_step_ratio"]["runner_padded_pairs"] > 0
    )

"""bench/bench_runner_vs_trainer.py end to end on a few steps: Trainer and the runner train on identical
micro-batches (the bench asserts it step by step, lock-step pairs included) and end with the same model:
the same eval loss after the last step, for every variant that trains on padded batches, and the same
count of trained tokens. Timing ratios are reported, not asserted (two shared cores)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Same batches, init, optimizer (fused AdamW), schedule and clipping: the eval losses agree to float
# rounding (bit for bit on one machine). A different update moves the 6-step loss far more: a cosine
# decaying 10 % faster gives 4.9790 against 4.9458 (670x the tolerance). Not seen here: a constant
# scale of the loss (AdamW is all but blind to it) and clipping (the gradient norm stays below 0.5).
LOSS_TOLERANCE = 1e-5


@pytest.mark.slow
def test_runner_and_trainer_train_the_same_model(tmp_path):
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

    tokens = doc["train_tokens"]
    assert tokens["runner_padded"] == tokens["runner_padded_no_tracking"] == tokens["trainer"] > 0
    loss = doc["eval_loss"]
    for variant in ("runner_padded", "runner_padded_no_tracking", "lockstep_trainer", "lockstep_runner"):
        assert loss[variant] == pytest.approx(loss["trainer"], rel=LOSS_TOLERANCE), (variant, loss)
    # the six steps moved the loss far beyond the tolerance: agreeing is not agreeing on "no change"
    assert loss["untrained"] - loss["trainer"] > 1000 * LOSS_TOLERANCE * loss["trainer"]
    # every comparison is reported
    for key in (
        "ratio_padded",
        "ratio_padded_end_to_end",
        "ratio_no_tracking",
        "ratio_packed",
        "ratio_lockstep",
    ):
        assert key in doc["median"]
    assert doc["paired_step_ratio"]["runner_padded_pairs"] == len(r["timed_steps"]["runner_padded"])

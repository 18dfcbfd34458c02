"""The memory model against the published measurements P1–P7 (shared/reference/ground-truth.md).

The same model for every row (bench/ground_truth.py holds the configurations and the stack facts of
each source); rows whose source ran our stack (transformers + PEFT) are traced. Target from issue 2:
median error ≤ 10 % and none worse than 20 %.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from statistics import median

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ground_truth", ROOT / "bench" / "ground_truth.py")
gt = importlib.util.module_from_spec(_spec)
sys.modules["ground_truth"] = gt  # dataclasses look their module up while the file executes
_spec.loader.exec_module(gt)

ROWS = {r["id"]: r for r in gt.rows()}
ERRORS = {k: abs(r["error_pct"]) for k, r in ROWS.items()}
SUMMARY = ", ".join(f"{k} {r['error_pct']:+.1f} %" for k, r in ROWS.items())


def test_the_analytic_mode_alone_is_within_30_percent_everywhere():
    """P1–P3 are traced; the analytic model (the default mode) is held to every row too."""
    analytic = {k: abs(r["analytic_error_pct"]) for k, r in ROWS.items()}
    assert max(analytic.values()) <= 30, analytic


def test_median_error_at_most_10_percent():
    assert median(ERRORS.values()) <= 10, SUMMARY


def test_no_error_worse_than_20_percent():
    assert max(ERRORS.values()) <= 20, SUMMARY


def test_rows_whose_source_runs_our_stack_are_traced():
    """transformers + PEFT (P1–P3) is the runner's own stack: advisor.mode=trace predicts it exactly
    (allocations replayed through the caching-allocator model); torchtune and lit-gpt ran their own
    model code, which only the analytic model with their stack facts describes."""
    assert {k for k, r in ROWS.items() if r["mode"] == "trace"} == {"P1", "P2", "P3"}


def test_double_quant_saving_matches_litgpt():
    """lit-gpt measured 0.30 GB (7B) and 0.59 GB (13B) saved by double quantization."""
    gb = 2**30 / 1e9
    saving_7b = (ROWS["P6-nf4"]["predicted_gib"] - ROWS["P6-nf4-dq"]["predicted_gib"]) * gb
    saving_13b = (ROWS["P7-nf4"]["predicted_gib"] - ROWS["P7-nf4-dq"]["predicted_gib"]) * gb
    assert saving_7b == pytest.approx(0.30, abs=0.02)
    assert saving_13b == pytest.approx(0.59, abs=0.02)


def test_orderings_the_measurements_show():
    p = {k: r["predicted_gib"] for k, r in ROWS.items()}
    assert p["P1"] > p["P3"] > p["P2"]  # full > LoRA on MLP > LoRA on q,v at the same trainable count
    assert p["P4"] > p["P5"]  # QLoRA below LoRA
    assert p["P6"] > p["P6-nf4"] > p["P6-nf4-dq"] and p["P7"] > p["P7-nf4"] > p["P7-nf4-dq"]


def test_docs_table_is_current():
    doc = (ROOT / "docs" / "ground-truth.md").read_text()
    assert gt.table() in doc, "run: .venv/bin/python bench/ground_truth.py --write"

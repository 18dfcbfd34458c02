"""`tunewise advise` through the real CLI: one JSON document on stdout, the table, and speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ("model=llama-3.1-70b", "data.rows=20000", "budget.usd=100")


def advise(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-m", "sweep.cli", "advise", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )


def test_json_is_exactly_one_document():
    out = advise(*EXAMPLE, "format=json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)  # the whole of stdout, nothing before or after
    assert doc["query"]["model"]["name"] == "llama-3.1-70b"
    assert doc["query"]["budget"]["usd"] == 100
    assert {r["method"] for r in doc["estimates"]} == {"full", "lora", "qlora"}
    assert "Traceback" not in out.stderr


def test_method_and_rank_given_on_the_command_line():
    out = advise(
        "model=qwen2.5-7b", "gpu=rtx-4090", "method=qlora", "method.r=32", "train.seq_len=4096", "format=json"
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [(r["method"], r["r"], r["gpu"]) for r in doc["estimates"]] == [("qlora", 32, "rtx-4090")]
    assert list(doc["min_gpus"]) == ["qlora"]


def test_table_reads_right():
    out = advise(*EXAMPLE, "breakdown=true")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for needle in (
        "(GiB)",
        "(USD)",
        "fits",
        "activations",
        "Minimum GPUs",
        "Cheapest catalog GPU",
        "What fits",
        "Verdict:",
        "prior (literature), not a measurement",
        "Prices:",
    ):
        assert needle in text, needle
    assert max(len(line) for line in text.splitlines()) <= 100


def test_answers_in_seconds():
    t0 = time.perf_counter()
    out = advise(*EXAMPLE)
    wall_s = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    assert wall_s < 5.0, f"advise took {wall_s:.2f} s (target < 2 s)"


@pytest.mark.slow
def test_trace_mode_rows_come_from_the_tracer(tmp_path):
    env = {**os.environ, "TUNEWISE_TRACE_CACHE": str(tmp_path)}
    args = ["model=smollm2-135m", "method=lora", "method.r=8", "format=json"]
    cmd = [sys.executable, "-m", "sweep.cli", "advise", *args]
    traced = subprocess.run([*cmd, "advisor.mode=trace"], capture_output=True, text=True, cwd=ROOT, env=env)
    analytic = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert traced.returncode == 0 and analytic.returncode == 0, traced.stderr
    (t_row,) = json.loads(traced.stdout)["estimates"]
    (a_row,) = json.loads(analytic.stdout)["estimates"]
    assert t_row.get("traced") is True and "traced" not in a_row
    assert list(tmp_path.glob("*.json")), "the tracer wrote no cache entry: it did not run"
    mem = t_row["memory"]
    # reserved: the trace's allocations replayed through the caching-allocator model; memory outside
    # torch (device − reserved) stays the analytic model's
    assert mem["reserved_gib"] >= mem["allocated_gib"]
    assert mem["device_gib"] - mem["reserved_gib"] == pytest.approx(
        a_row["memory"]["device_gib"] - a_row["memory"]["reserved_gib"], abs=1e-5
    )

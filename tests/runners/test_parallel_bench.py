"""bench/gpu_bench.py's N-process mode, run as a user runs it (`--tiny --procs 2`): 2 real processes under
torch.distributed.run on CPU (gloo), each rank measured, the advisor's per-GPU prediction beside them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["fsdp", "ddp"])
def test_gpu_bench_runs_each_method_on_2_processes(tmp_path, parallel):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "bench/gpu_bench.py", "--tiny", "--procs", "2", "--parallel", parallel]
    run = subprocess.run(
        [*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["world_size"] == 2 and doc["parallel"] == parallel and doc["device"].startswith("cpu")
    assert [r["method"] for r in doc["configs"]] == ["full", "lora", "qlora"]
    for row in doc["configs"]:
        assert row["status"] == "ok" and [r["rank"] for r in row["ranks"]] == [0, 1]
        for r in row["ranks"]:
            assert r["tokens_per_s"] > 0 and r["allocated_gib"] > 0
            # each rank holds what the advisor says one GPU of this group holds, byte for byte
            assert r["static_bytes"] == {k: row["advisor_static"][k] for k in r["static_bytes"]}, (row, r)
        print(parallel, row["method"], row["ranks"][0]["static_bytes"], "advisor", row["advisor_static"])

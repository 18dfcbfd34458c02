"""bench/gpu_bench.py --tiny: the GPU benchmark's code path (real peft LoRA, real bitsandbytes 4-bit
layers, measured memory and speed, the advisor's prediction beside it) runs on CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from advisor.estimator.params import trainable_params, trainable_tensors
from advisor.estimator.static import step_counter_bytes

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "bench" / "gpu_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_bench_measures_every_config(tmp_path):
    bench = _bench()
    bench.TINY_PLAN = [("llama-3.2-1b", ("full", "lora", "qlora"))]
    bench.TINY_SEQ_LENS = (32,)
    bench.WARMUP_STEPS, bench.TIMED_STEPS = 1, 1
    out = tmp_path / "bench.json"
    assert bench.main(["--tiny", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["device"].startswith("cpu") and doc["provenance"]["versions"]["torch"]
    replica = [r for r in doc["configs"] if "replica_of" in r]
    rows = [r for r in doc["configs"] if "replica_of" not in r]
    # P1–P3 of the published runs at their batch shape (tiny architecture on CPU): 4 sequences a step
    assert [r["replica_of"] for r in replica] == ["P1", "P2", "P3"]
    assert all(r["status"] == "ok" and r["micro_batch_size"] == 4 and r["tokens_per_s"] > 0 for r in replica)
    for r in replica[1:]:  # the source's LoRA targets and ranks took effect (fp32 adapter gradients)
        cfg = bench._cfg(r["model"], r["method"], r["seq_len"], False, True, mb=4, lora=r["lora"])
        assert r["static_bytes"]["gradients"] == 4 * trainable_params(cfg.model, cfg.method)
    assert [(r["method"], r["gradient_checkpointing"]) for r in rows] == [
        (m, g) for m in ("full", "lora", "qlora") for g in (False, True)
    ]
    for r in rows:
        assert r["status"] == "ok" and r["tokens_per_s"] > 0 and r["rss_gib"] > 0
        static, adv = r["static_bytes"], r["advisor"]["bytes"]
        assert r["allocated_gib"] * 2**30 > sum(static.values())
        # the bench builds each method faithfully: static bytes equal the advisor's, AdamW's CPU-side
        # `step` counters (4 bytes per trainable tensor, counted on a CPU run) included
        assert static["weights"] == adv["weights"]
        cfg = bench._cfg(r["model"], r["method"], r["seq_len"], r["gradient_checkpointing"], True)
        grad_bytes = 2 if r["method"] == "full" else 4  # bf16 weights; peft keeps adapters in fp32
        assert static["gradients"] == trainable_params(cfg.model, cfg.method) * grad_bytes
        assert static["optimizer"] == adv["optimizer"]
        assert step_counter_bytes(cfg) == 4 * trainable_tensors(cfg.model, cfg.method) > 0
    by = {(r["method"], r["gradient_checkpointing"]): r for r in rows}
    assert by[("qlora", False)]["static_bytes"]["weights"] < by[("lora", False)]["static_bytes"]["weights"]

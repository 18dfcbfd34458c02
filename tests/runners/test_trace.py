"""runners.trace.tracer: exact byte counts on fake tensors, bitsandbytes storage sizes, depth extrapolation,
the cache, and the analytic estimator held to the trace (fast subset here; the full grid is slow)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from advisor.config.schema import from_names  # noqa: E402
from advisor.errors import ConfigError  # noqa: E402
from runners.trace import tracer as trace_mod  # noqa: E402
from runners.trace.tracer import trace  # noqa: E402

GIB = 2**30
SMALL = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 512,
    "vocab_size": 8000,
}


def cfg_for(method="lora", model="llama-3.2-1b", arch=None, lora=None, **train):
    t = {"seq_len": 128, "micro_batch_size": 2, "grad_accum": 1, "gradient_checkpointing": True, **train}
    return from_names(model, method, "a100-80gb", arch={**SMALL, **(arch or {})}, lora=lora or {}, train=t)


def test_static_sizes_are_exact(tmp_path):
    """bf16 full fine-tune with AdamW: weights 2 B, grads 2 B, states 4 B per parameter."""
    from transformers import AutoModelForCausalLM

    from runners.trace.model import hf_config

    cfg = cfg_for("full")
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(hf_config(cfg, 4))
    n, tensors = meta.num_parameters(), len(list(meta.parameters()))
    row = trace(cfg, cache_dir=tmp_path)
    m = row["memory_bytes"]
    assert 0 <= m["weights"] - 2 * n <= 4 * 256  # + RoPE inv_freq buffers
    assert row["trainable_params"] == n
    acc = trace(cfg.replace(train={"grad_accum": 2}), cache_dir=tmp_path)
    assert acc["memory_bytes"]["gradients"] == 2 * n
    assert m["optimizer"] == 4 * n  # exp_avg, exp_avg_sq (bf16); the `step` counters live on the host
    cpu = trace(
        from_names("llama-3.2-1b", "full", "cpu", arch=SMALL, train=cfg.train.__dict__), cache_dir=tmp_path
    )
    assert cpu["memory_bytes"]["optimizer"] == 4 * n + 4 * tensors  # fused on the CPU: an fp32 `step` each
    assert m["allocated"] > m["weights"] + m["optimizer"]


def test_lora_trainable_params_and_fp32_adapters(tmp_path):
    cfg = cfg_for("lora", lora={"r": 8, "target_modules": ["q_proj", "v_proj"]})
    row = trace(cfg, cache_dir=tmp_path)
    h, kv = 256, 2 * 32
    expected = 4 * 8 * ((h + h) + (h + kv))  # 4 layers × r·(in+out) for q and v
    assert row["trainable_params"] == expected
    assert row["memory_bytes"]["optimizer"] == expected * 8  # fp32 states (`step` counters on the host)


@pytest.mark.parametrize("double_quant", [False, True])
def test_4bit_stand_in_has_bitsandbytes_real_storage(double_quant):
    """The stand-in's packed weight + quant state equal bitsandbytes' own quantize_4bit on real data."""
    import bitsandbytes.functional as bnbf
    from torch._subclasses.fake_tensor import FakeTensorMode

    from runners.trace.model import Linear4bitStandIn, bnb_constants

    w = torch.randn(384, 640, dtype=torch.bfloat16)
    packed, qs = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=double_quant, quant_type="nf4")
    real = [packed, qs.absmax, qs.code] + (
        [qs.offset, qs.state2.absmax, qs.state2.code] if double_quant else []
    )
    real_bytes = sum(t.untyped_storage().nbytes() for t in real)
    with torch.device("meta"):
        lin = torch.nn.Linear(640, 384, bias=False)
    stand_in = Linear4bitStandIn(lin, torch.bfloat16, "nf4", double_quant)
    mode = FakeTensorMode()
    with bnb_constants(mode), mode:
        stand_in.quantize()
        fake = [stand_in.weight, *stand_in.quant_tensors()]
        fake_bytes = sum(t.untyped_storage().nbytes() for t in fake)
        assert [tuple(t.shape) for t in fake] == [tuple(t.shape) for t in real]
        assert [t.dtype for t in fake] == [t.dtype for t in real]
    assert fake_bytes == real_bytes


@pytest.mark.parametrize(
    "model,arch",
    [("llama-3.2-1b", {"num_hidden_layers": 6}), ("gemma-2-2b", {"num_hidden_layers": 6, "head_dim": 32})],
)
def test_depth_extrapolation_matches_a_full_trace(tmp_path, model, arch):
    cfg = cfg_for("qlora" if model.startswith("llama") else "lora", model=model, arch=arch)
    auto = trace(cfg, cache_dir=tmp_path)
    full = trace(cfg, layers=6, cache_dir=tmp_path)
    assert auto["trace_layers"] == [2, 4] and full["trace_layers"] == [6]
    for k, v in full["memory_bytes"].items():
        if k != "reserved":  # the allocator's slack is not affine in depth (see the next test)
            assert auto["memory_bytes"][k] == pytest.approx(v, rel=1e-6, abs=8), k
    assert auto["time"]["flops_per_token"] == pytest.approx(full["time"]["flops_per_token"], rel=1e-9)


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_reserved_replays_the_traced_allocations(tmp_path, method):
    """reserved = the traced allocations replayed through the caching-allocator model: never below the
    allocated peak, and the depth-extrapolated row within 3 % of a full-depth replay."""
    cfg = cfg_for(method, arch={"num_hidden_layers": 8}, seq_len=256, gradient_checkpointing=False)
    auto = trace(cfg, cache_dir=tmp_path)
    full = trace(cfg, layers=8, cache_dir=tmp_path)
    for row in (auto, full):
        m = row["memory_bytes"]
        assert m["allocated"] <= m["reserved"] <= 1.5 * m["allocated"]
    assert auto["memory_bytes"]["reserved"] == pytest.approx(full["memory_bytes"]["reserved"], rel=0.03)


def test_paged_optimizer_state_is_outside_the_allocated_peak(tmp_path):
    plain = trace(cfg_for("lora", optimizer="adamw_8bit"), cache_dir=tmp_path)
    paged = trace(cfg_for("lora", optimizer="paged_adamw_8bit"), cache_dir=tmp_path)
    assert plain["memory"]["optimizer_gib"] == paged["memory"]["optimizer_gib"] > 0
    assert paged["optimizer_paged"] and not plain["optimizer_paged"]
    gap = plain["memory_bytes"]["allocated"] - paged["memory_bytes"]["allocated"]
    assert (
        0.95 * plain["memory_bytes"]["optimizer"] < gap < plain["memory_bytes"]["optimizer"]
    )  # state1/2 paged


def test_cache_hit_and_key(tmp_path, monkeypatch):
    cfg = cfg_for("lora")
    first = trace(cfg, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1
    monkeypatch.setattr(trace_mod, "_trace_depth", lambda *a: (_ for _ in ()).throw(AssertionError("traced")))
    assert trace(cfg, cache_dir=tmp_path) == first  # from the cache
    assert trace_mod.cache_key(cfg, (2, 4)) != trace_mod.cache_key(
        cfg.replace(train={"seq_len": 256}), (2, 4)
    )
    assert trace_mod.cache_key(cfg, (2, 4)) == trace_mod.cache_key(cfg.replace(train={"lr": 1e-3}), (2, 4))


def test_unsupported_configs_are_named():
    with pytest.raises(ConfigError) as e:
        trace(from_names("mixtral-8x7b", "lora", "a100-80gb"))
    assert "mixture-of-experts" in str(e.value) and "advisor.mode=analytic" in str(e.value)
    with pytest.raises(ConfigError, match="train.chunked_loss"):
        trace(cfg_for("lora", chunked_loss=True))
    sharded = from_names("llama-3.1-8b", "full", "a100-80gb", card={"count": 2}, parallel="fsdp")
    with pytest.raises(ConfigError, match="parallel='fsdp' with gpu.count=2"):
        trace(sharded)


def test_trace_row_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_TRACE_CACHE", str(tmp_path))
    row = trace_mod.trace_row(cfg_for("qlora"))
    assert row["traced"] is True
    assert set(row["memory"]) == {
        "weights_gib",
        "gradients_gib",
        "optimizer_gib",
        "activations_gib",
        "logits_gib",
        "temporaries_gib",
        "allocated_gib",
        "reserved_gib",
    }
    assert math.isclose(row["time"]["flops_per_step"], row["time"]["flops_per_micro_batch"])


# ---- the analytic estimator held to the trace ---------------------------------------------------------
# The grid of bench/bench_trace.py (docs/trace-vs-analytic.md): every component within 5 %.


def _grid_case(tmp_path, family, method, seq, ckpt, component):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from bench_trace import TOLERANCE, small_cfg

    from runners.trace.compare import compare

    cache = tmp_path.parent / "trace-grid-cache"  # shared by the cases of one session
    c = compare(small_cfg(family, method, seq, ckpt), cache)[component]
    assert c["error"] is None or abs(c["error"]) <= TOLERANCE, (
        f"{family}/{method}/seq {seq}/ckpt {ckpt} {component}: trace {c['trace']:.6g}, "
        f"analytic {c['analytic']:.6g} ({c['error']:+.1%})"
    )


COMPONENTS = ("weights", "gradients", "optimizer", "activations", "logits", "allocated", "flops")


@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_analytic_within_5_percent_of_trace_fast(tmp_path, method, component):
    _grid_case(tmp_path, "llama", method, 256, False, component)


@pytest.mark.parametrize(
    "family,method,seq,component",
    [
        # enable_input_require_grads: GPT-2's embedding output, a leaf beside layer 0's input
        ("gpt2", "lora", 256, "activations"),
        ("gpt2", "qlora", 256, "activations"),
        # eager attention's backward at its softmax: O(s²) fp32 gradients set the peak
        ("gemma2", "lora", 1024, "allocated"),
    ],
)
def test_analytic_within_5_percent_of_trace_checkpointed(tmp_path, family, method, seq, component):
    _grid_case(tmp_path, family, method, seq, True, component)


@pytest.mark.slow
@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("ckpt", [True, False])
@pytest.mark.parametrize("seq", [256, 1024])
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2", "phi3", "gpt2"])
def test_analytic_within_5_percent_of_trace_grid(tmp_path, family, method, seq, ckpt, component):
    _grid_case(tmp_path, family, method, seq, ckpt, component)

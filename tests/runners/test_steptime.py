"""The step-time model (advisor/estimator/steptime): the analytic op list held to the trace's, op
costs on a device, and what the model says about the runs it prices.

The trace (runners/trace) runs the real transformers + PEFT + bitsandbytes step on fake tensors and
records every op it dispatches (runners.trace.optime); the analytic model builds the same list in
closed form. Like memory (test_trace.py), the analytic time must stay within 5 % of the traced one.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from advisor.config.schema import from_names  # noqa: E402
from advisor.estimator.estimate import estimate  # noqa: E402
from advisor.estimator.steptime import analytic  # noqa: E402
from advisor.estimator.steptime.ceilings import device  # noqa: E402
from advisor.estimator.steptime.cost import op_device_s, time_ops  # noqa: E402
from advisor.estimator.steptime.ops import Op, ops_from_json  # noqa: E402
from runners.trace.tracer import trace  # noqa: E402

SMALL = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 512,
    "vocab_size": 8000,
}


def cfg_for(method, gpu="a100-80gb", model="llama-3.2-1b", arch=None, **train):
    t = {"seq_len": 128, "micro_batch_size": 2, "grad_accum": 1, "gradient_checkpointing": False, **train}
    lora = {"r": 8} if method != "full" else {}
    return from_names(model, method, gpu, arch=SMALL if arch is None else arch, lora=lora, train=t)


def traced_vs_analytic(cfg, tmp_path) -> tuple[float, float, float, float]:
    """(trace micro-batch s, analytic micro-batch s, trace optimizer s, analytic optimizer s)."""
    ops = ops_from_json(trace(cfg, cache_dir=tmp_path)["time"]["ops"])
    dev = device(cfg)
    micro = {o: n for o, n in ops.items() if o.phase != "opt"}
    step = {o: n for o, n in ops.items() if o.phase == "opt"}
    b, s = cfg.train.micro_batch_size, cfg.train.seq_len
    return (
        time_ops(micro, dev).seconds,
        time_ops(analytic.micro_batch_ops(cfg, b, s), dev).seconds,
        time_ops(step, dev).seconds,
        time_ops(analytic.optimizer_ops(cfg), dev).seconds,
    )


@pytest.mark.parametrize("gpu", ["a100-80gb", "cpu"])
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
@pytest.mark.parametrize("gc", [False, True])
def test_analytic_time_within_5_percent_of_the_trace(tmp_path, gpu, method, gc):
    t_micro, a_micro, t_opt, a_opt = traced_vs_analytic(
        cfg_for(method, gpu, gradient_checkpointing=gc), tmp_path
    )
    assert a_micro == pytest.approx(t_micro, rel=0.05)
    assert a_opt == pytest.approx(t_opt, rel=0.05, abs=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["llama-3.2-1b", "qwen2.5-1.5b", "qwen3-0.6b", "gemma-2-2b", "phi-3-mini"])
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
@pytest.mark.parametrize("gc", [False, True])
def test_real_sizes_within_5_percent_of_the_trace(tmp_path, model, method, gc):
    """The catalog's real architectures (depth extrapolated from 2- and 4-layer traces), 2 × 512."""
    cfg = cfg_for(method, model=model, arch={}, seq_len=512, gradient_checkpointing=gc)
    t_micro, a_micro, t_opt, a_opt = traced_vs_analytic(cfg, tmp_path)
    assert a_micro == pytest.approx(t_micro, rel=0.05)
    assert a_opt == pytest.approx(t_opt, rel=0.05, abs=2e-4)


def test_trace_records_what_each_method_runs(tmp_path):
    """QLoRA dequantizes every 4-bit weight forward and backward; LoRA runs its adapters' GEMMs in
    fp32; full fine-tuning computes weight gradients (twice the forward's GEMMs in the backward)."""
    terms = {}
    for method in ("full", "lora", "qlora"):
        ops = ops_from_json(trace(cfg_for(method), cache_dir=tmp_path)["time"]["ops"])
        by: dict[tuple[str, str, str], float] = {}
        for o, n in ops.items():
            by[(o.term, o.kind, o.phase)] = by.get((o.term, o.kind, o.phase), 0) + n
        terms[method] = by
    full, lora, qlora = terms["full"], terms["lora"], terms["qlora"]
    assert full[("compute", "gemm", "bwd")] == 2 * full[("compute", "gemm", "fwd")]
    assert ("adapters", "gemm", "fwd") not in full and ("dequant", "mem", "fwd") not in lora
    assert lora[("adapters", "gemm", "fwd")] == 2 * 7 * 4  # A and B of 7 Linears × 4 layers
    # per 4-bit Linear: forward = bitsandbytes' gemm_4bit, counted as its 3 dequant kernels (nested
    # absmax, offset, NF4) + a GEMM; backward = dequantize_blockwise + dequantize_4bit as dispatched
    # (the offset add among the elementwise ops) — skipping the first layer's q/k/v, whose input needs
    # no gradient
    assert qlora[("dequant", "mem", "fwd")] == 3 * 7 * 4
    assert qlora[("dequant", "mem", "bwd")] == 2 * (7 * 4 - 3)
    assert all(o.phase == "opt" for o, _ in _items(tmp_path, "full") if o.term == "optimizer")


def _items(tmp_path, method):
    return ops_from_json(trace(cfg_for(method), cache_dir=tmp_path)["time"]["ops"]).items()


def test_op_costs_follow_the_device():
    """A large 16-bit GEMM runs at the card's achievable rate, a streaming op at its bandwidth; fp32
    GEMMs are slower than bf16 ones; a view costs host time only."""
    cfg = from_names("llama-3.1-8b", "lora", "a100-80gb")
    dev = device(cfg)
    big = Op("compute", "gemm", "fwd", 2.0 * 8192**3, 3.0 * 8192**2 * 2, False, (8192, 8192, 8192, 1))
    assert op_device_s(big, dev) == pytest.approx(big.flops / (312e12 * 0.87), rel=0.01)
    stream = Op("elementwise", "mem", "fwd", 0.0, 1e9)
    assert op_device_s(stream, dev) == pytest.approx(1e9 / (2039e9 * 0.8), rel=0.01)
    wide = big._replace(wide=True)
    assert op_device_s(wide, dev) > 10 * op_device_s(big, dev)
    assert op_device_s(Op("elementwise", "view", "fwd"), dev) == 0


def test_host_bound_small_steps_and_gpu_bound_large_ones():
    """A tiny model's step is set by the host issuing ops (the `overhead` term); a large one's by
    its GEMMs, where host work hides behind the device."""
    tiny = estimate(cfg_for("lora", seq_len=64, micro_batch_size=1))
    big = estimate(from_names("llama-3.1-8b", "full", "h100-sxm", train={"seq_len": 2048}))
    assert tiny["time"]["dominant"][0] == "overhead"
    assert big["time"]["dominant"][0] == "compute"
    assert "overhead" not in big["time"]["step_terms_s"]


def test_terms_respond_to_what_the_config_changes():
    def terms(method, **train):
        return estimate(from_names("llama-3.1-8b", method, "a100-80gb", train=train))["time"]

    lora, qlora, full = terms("lora"), terms("qlora"), terms("full")
    assert "dequant" in qlora["step_terms_s"] and "dequant" not in lora["step_terms_s"]
    assert full["step_terms_s"]["optimizer"] > 50 * lora["step_terms_s"]["optimizer"]
    gc = terms("lora", gradient_checkpointing=True)
    no_gc = terms("lora", gradient_checkpointing=False)
    assert 1.15 < gc["step_s"] / no_gc["step_s"] < 1.6  # recompute: +1 forward
    ddp = estimate(from_names("llama-3.1-8b", "lora", "a100-80gb", card={"count": 4}))["time"]
    assert ddp["steps"] == pytest.approx(lora["steps"] / 4, rel=0.01)


def test_fixed_length_examples():
    """data.length_sigma=0: every example exactly avg_tokens long — no padding, seq tokens counted."""
    cfg = from_names("llama-3.1-8b", "lora", "a100-80gb", data={"avg_tokens": 1024, "length_sigma": 0})
    row = estimate(cfg.replace(train={"seq_len": 1024}))
    assert row["time"]["padding_fraction"] == 0
    assert row["time"]["tokens"] == row["time"]["train_tokens"]
    spread = estimate(from_names("llama-3.1-8b", "lora", "a100-80gb", data={"avg_tokens": 1024}))
    assert spread["time"]["padding_fraction"] > 0.1
    assert not any("log-normal" in n for n in row["notes"])


def test_wall_time_parts_are_modelled():
    row = estimate(from_names("llama-3.1-8b", "qlora", "a100-80gb"))
    w = row["time"]["wall_s"]
    assert set(w) == {"start", "load", "train", "eval", "metric", "checkpoint", "save"}
    assert all(v >= 0 for v in w.values()) and w["train"] > w["eval"] > 0
    assert row["time"]["hours"] == pytest.approx(sum(w.values()) / 3600, abs=1e-4)

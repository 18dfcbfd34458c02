"""advisor.estimator.estimate: the row's shape and the arithmetic of time, cost, budget and fit_batch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from advisor.config.schema import from_names
from advisor.estimator import timing
from advisor.estimator.estimate import estimate, fit_batch
from advisor.estimator.memory import CPU_PROCESS_GIB, GIB, memory
from advisor.estimator.params import total_params
from tests.advisor.rowshape import MEMORY_KEYS, ROW_KEYS


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_row_has_the_design_shape(method):
    row = estimate(from_names("llama-3.1-8b", method, "a100-80gb"))
    assert set(row) >= ROW_KEYS
    assert set(row["memory"]) == MEMORY_KEYS | {"temporaries_gib"}
    assert {"tokens", "flops", "hours"} <= set(row["time"])
    assert {"usd", "usd_per_gpu_hour", "price_source", "price_as_of"} <= set(row["cost"])
    assert row["r"] is (None if method == "full" else 16)
    assert row["calibrated"] == []
    m = row["memory"]
    assert m["allocated_gib"] <= m["reserved_gib"] <= m["device_gib"]


def test_cost_is_hours_times_price_times_count():
    cfg = from_names("llama-3.1-8b", "lora", "h100-sxm", card={"count": 2}, parallel="ddp")
    row = estimate(cfg)
    assert row["cost"]["usd"] == pytest.approx(
        row["time"]["hours"] * cfg.price.usd_per_gpu_hour * 2, abs=0.01
    )
    assert row["cost"]["price_as_of"] == cfg.price.as_of and row["cost"]["price_source"]


def test_within_budget_is_none_true_or_false():
    cfg = from_names("llama-3.1-8b", "lora", "a100-80gb")
    assert estimate(cfg)["within_budget"] is None
    usd = estimate(cfg)["cost"]["usd"]
    assert estimate(cfg.replace(budget_usd=usd * 2))["within_budget"] is True
    assert estimate(cfg.replace(budget_usd=usd / 2))["within_budget"] is False
    assert estimate(cfg.replace(budget_hours=1e-6))["within_budget"] is False


def test_flops_per_token_regimes():
    """6N full, 4N + 6·trainable LoRA; recompute re-runs the decoder layers (not lm_head); attention
    14·L·q·s with SDPA (its backward recomputes the scores), 12 eager, + 4 with recompute."""
    cfg = from_names("llama-3.1-8b", "full", "a100-80gb", train={"gradient_checkpointing": False})
    n = timing.matmul_params(cfg.model)
    head = cfg.model.vocab_size * cfg.model.hidden_size
    attn = cfg.model.num_hidden_layers * cfg.model.hidden_size * 1000
    assert timing.flops_per_token(cfg, 1000) == pytest.approx(6 * n + 14 * attn)
    eager = cfg.replace(train={"attention": "eager"})
    assert timing.flops_per_token(eager, 1000) == pytest.approx(6 * n + 12 * attn)
    gc = cfg.replace(train={"gradient_checkpointing": True})
    assert timing.flops_per_token(gc, 1000) == pytest.approx(6 * n + 2 * (n - head) + 18 * attn)
    lora = from_names("llama-3.1-8b", "lora", "a100-80gb", train={"gradient_checkpointing": False})
    extra = 6 * estimate(lora)["trainable_params"]
    assert timing.flops_per_token(lora, 1000) == pytest.approx(4 * n + 14 * attn + extra)
    # N excludes the embedding lookup and counts lm_head: 8B has 8.03e9 params, ~7.50e9 in matmuls
    assert n == total_params(cfg.model) - head - 65 * 4096


def test_max_steps_overrides_epochs_and_packing_removes_padding():
    cfg = from_names("llama-3.1-8b", "lora", "a100-80gb", train={"max_steps": 100})
    row = estimate(cfg)
    assert row["time"]["steps"] == 100
    assert row["time"]["padding_fraction"] > 0.1  # padded micro-batches of log-normal lengths
    packed = estimate(cfg.replace(train={"packing": True}))
    assert packed["time"]["padding_fraction"] == pytest.approx(0, abs=1e-9)


def test_measured_lengths_set_the_peak_sequence():
    stats = SimpleNamespace(
        rows=5000,
        tokens_mean=300.0,
        tokens_p50=250.0,
        tokens_p95=700.0,
        tokens_max=900,
        total_tokens=1_500_000,
    )
    cfg = from_names("llama-3.1-8b", "lora", "a100-80gb", train={"seq_len": 2048})
    assert estimate(cfg, stats=stats)["peak_seq_len"] == 900
    assert estimate(cfg.replace(train={"seq_len": 512}), stats=stats)["peak_seq_len"] == 512
    assert not any("assumed" in n for n in estimate(cfg, stats=stats)["notes"])


def test_memory_grows_with_tokens_and_orders_methods():
    def dev(method, **train):
        return memory(from_names("llama-3.1-8b", method, "a100-80gb", train=train), 1024).device

    assert dev("lora", micro_batch_size=1) < dev("lora", micro_batch_size=4)
    assert dev("qlora") < dev("lora") < dev("full")
    assert (
        memory(from_names("llama-3.1-8b", "lora", "a100-80gb"), 512).device
        < memory(from_names("llama-3.1-8b", "lora", "a100-80gb"), 2048).device
    )


def test_fit_batch_keeps_the_global_batch():
    cfg = from_names(
        "llama-3.1-8b", "lora", "rtx-4090", train={"micro_batch_size": 16, "grad_accum": 2, "seq_len": 2048}
    )
    fitted = fit_batch(cfg)
    assert fitted is not None
    t = fitted.train
    assert t.micro_batch_size * t.grad_accum == 32 and 32 % t.micro_batch_size == 0
    assert estimate(fitted)["fits"]
    bigger = [m for m in range(t.micro_batch_size + 1, 33) if 32 % m == 0]
    for m in bigger:
        assert not estimate(cfg.replace(train={"micro_batch_size": m, "grad_accum": 32 // m}))["fits"]
    assert fit_batch(from_names("llama-3.1-70b", "full", "a100-80gb")) is None


def test_sharding_lowers_per_gpu_memory():
    def row(par, n):
        return estimate(from_names("llama-3.1-70b", "full", "h100-sxm", card={"count": n}, parallel=par))

    # 1/8 of the weights + what FSDP holds whole: the root (embeddings, lm_head: 3.9 GiB) and two layers
    assert row("zero3", 8)["memory"]["weights_gib"] < row("ddp", 8)["memory"]["weights_gib"] / 5
    assert row("zero2", 8)["memory"]["optimizer_gib"] < row("ddp", 8)["memory"]["optimizer_gib"] / 7
    assert row("zero3", 16)["fits"] and not row("ddp", 16)["fits"]


def test_cpu_rows_use_the_probe_and_rss(monkeypatch):
    from advisor.estimator.steptime import cpu as steptime_cpu

    cfg = from_names("demo-base", "lora", "cpu")
    old = {"bf16_tflops": 0.5, "fp32_tflops": 1.0, "measured": "today"}  # a probe from before version 2
    monkeypatch.setattr(steptime_cpu, "probe", lambda: old)
    row = estimate(cfg)
    assert "measured matmul" in row["time"]["throughput_source"]
    m = row["memory"]
    assert m["reserved_gib"] == m["allocated_gib"]
    assert m["device_gib"] == pytest.approx(m["allocated_gib"] + CPU_PROCESS_GIB, abs=2e-3)
    monkeypatch.setattr(steptime_cpu, "probe", lambda: None)
    assert "prior" in estimate(from_names("demo-base", "lora", "cpu"))["time"]["throughput_source"]


def test_bf16_falls_back_to_fp16_without_bf16():
    row = estimate(from_names("llama-3.2-1b", "lora", "t4"))
    assert row["precision"] == "fp16"
    assert any("fp16" in n for n in row["notes"])


def test_gib_is_bytes_over_2_to_30():
    mem = memory(from_names("llama-3.1-8b", "full", "a100-80gb"), 1024)
    assert mem.gib()["weights_gib"] == pytest.approx(
        total_params(from_names("llama-3.1-8b").model) * 2 / GIB, abs=1e-3
    )


@pytest.mark.parametrize(
    "method,train", [("full", {}), ("lora", {"grad_accum": 1}), ("qlora", {"optimizer": "paged_adamw_8bit"})]
)
def test_components_add_up(method, train):
    m = estimate(from_names("llama-3.1-8b", method, "a100-80gb", train=train))["memory"]
    paged = estimate(from_names("llama-3.1-8b", method, "a100-80gb", train=train))["paged_gib"]
    parts = (
        "weights_gib",
        "gradients_gib",
        "optimizer_gib",
        "activations_gib",
        "logits_gib",
        "temporaries_gib",
    )
    assert sum(m[k] for k in parts) - paged == pytest.approx(m["allocated_gib"], abs=0.01)
    assert m["allocated_gib"] + m["overhead_gib"] + paged == pytest.approx(m["device_gib"], abs=0.01)

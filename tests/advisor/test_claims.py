"""Public claims the estimator must reproduce (issue 2)."""

from __future__ import annotations

import os
import tempfile

import pytest

from advisor.config.schema import from_names
from advisor.estimator.estimate import estimate
from advisor.estimator.memory import Stack, static_bytes
from advisor.estimator.params import trainable_params

GB = 1e9


def test_70b_weights_16bit_and_4bit():
    """~140 GB of 16-bit weights for a 70B model, ~35–40 GB in 4-bit (as loaded: 4-bit Linears,
    16-bit embeddings and lm_head, before prepare_model_for_kbit_training's fp32 upcast)."""
    full = static_bytes(from_names("llama-3.1-70b", "full", "h100-sxm"))
    assert 135 * GB <= full["weights"] <= 145 * GB
    q = from_names("llama-3.1-70b", "qlora", "h100-sxm")
    base_4bit = static_bytes(q, Stack(kbit_upcast=False))["weights"] - trainable_params(q.model, q.method) * 4
    assert 35 * GB <= base_4bit <= 40 * GB


def test_full_finetune_70b_does_not_fit_one_80gb_card():
    for gpu in ("h100-sxm", "a100-80gb"):
        row = estimate(from_names("llama-3.1-70b", "full", gpu, train={"micro_batch_size": 1}))
        assert row["fits"] is False
        assert row["memory"]["weights_gib"] > 120  # the weights alone exceed the card


def test_qlora_70b_fits_one_48gb_card():
    """QLoRA paper setting: batch 1, gradient checkpointing, paged AdamW, LoRA r=64 on every Linear,
    512-token sequences; our runner's stack (fp32 adapters, kbit upcast). Llama-2-70B fits a 48 GB
    RTX A6000 (the 128K-vocabulary Llama-3.1-70B is tighter: its fp32 embeddings and logits add ~5 GiB)."""
    cfg = from_names(
        "llama-2-70b",
        "qlora",
        "rtx-a6000",
        train={
            "micro_batch_size": 1,
            "grad_accum": 16,
            "seq_len": 512,
            "gradient_checkpointing": True,
            "optimizer": "paged_adamw_32bit",
        },
        lora={"r": 64, "alpha": 16, "dropout": 0.05},
        data={"avg_tokens": 1024},
    )
    row = estimate(cfg)
    assert row["peak_seq_len"] == 512
    assert row["fits"] is True
    assert row["memory"]["weights_gib"] < 40
    # while full fine-tuning and 16-bit LoRA of the same model do not
    assert estimate(cfg.replace(method={"name": "lora"}))["fits"] is False


def test_7b_lora_adapter_is_tens_of_mb():
    """PEFT keeps the adapters fp32 (autocast_adapter_dtype) and saves them in that dtype:
    adapter file = trainable params × 4 bytes (checked on a real save below)."""
    cfg = from_names(
        "llama-2-7b", "lora", "a100-80gb", lora={"r": 16, "target_modules": ["q_proj", "v_proj"]}
    )
    row = estimate(cfg)
    assert row["trainable_params"] == 8_388_608
    assert 10e6 <= row["adapter_bytes"] <= 100e6
    assert row["adapter_bytes"] == row["trainable_params"] * 4


def test_peft_saves_fp32_adapters_of_a_bf16_model():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from safetensors import safe_open

    c = transformers.AutoConfig.for_model(
        "llama",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = peft.get_peft_model(
        transformers.AutoModelForCausalLM.from_config(c).to(torch.bfloat16),
        peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"]),
    )
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        with safe_open(os.path.join(d, "adapter_model.safetensors"), "pt") as f:
            tensors = [f.get_tensor(k) for k in f.keys()]  # noqa: SIM118 (safe_open is not a dict)
    assert {t.dtype for t in tensors} == {torch.float32}
    assert sum(t.nbytes for t in tensors) == model.get_nb_trainable_parameters()[0] * 4


def test_qlora_paper_4bit_7b_base():
    """The QLoRA paper reports 5,048 MB for the 4-bit LLaMA-7B base. We count 3,866 MB for NF4 + double
    quant with 16-bit embeddings/lm_head (as loaded) and 4,391 MB after prepare_model_for_kbit_training
    upcasts them to fp32 (what our runner keeps). The paper's figure is larger by ~15 % even against the
    upcast count; we do not know what else it includes (CUDA context ≈ 0.5 GB would close most of it)."""
    cfg = from_names("llama-2-7b", "qlora", "a100-80gb")
    adapters = trainable_params(cfg.model, cfg.method) * 4
    as_loaded = static_bytes(cfg, Stack(kbit_upcast=False))["weights"] - adapters
    upcast = static_bytes(cfg)["weights"] - adapters
    assert as_loaded == pytest.approx(3_865.8e6, rel=1e-3)
    assert upcast == pytest.approx(5_048e6, rel=0.15)
    # double quantization saves Σ linear params × 0.373 bits (lit-gpt: 0.30 GB for Llama-2-7B)
    no_dq = (
        static_bytes(cfg.replace(method={"double_quant": False}), Stack(kbit_upcast=False))["weights"]
        - adapters
    )
    assert (no_dq - as_loaded) / GB == pytest.approx(0.30, abs=0.01)

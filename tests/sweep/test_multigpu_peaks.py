"""The advisor's per-GPU memory against what each of 2 real ranks held (full / LoRA / QLoRA × DDP / FSDP2,
through `tunewise sweep` on CPU, a 2-layer Llama of hidden size 256 so that activations and weights,
not fixed costs, make the peak; packed 64-token sequences, so the peak length is known).

Static bytes (weights, gradients, optimizer state) are exact on every rank. The peak is over-predicted:
measured here (2026-12-05) +12 % (full, DDP) to +37 % (QLoRA, FSDP2). The same model in 1 process (the
twins at the same global batch) is over-predicted by as much, +22 % (full) to +36 % (QLoRA): the
activations and temporaries on this CPU at this size, not the per-rank phases, make the difference.
The issue's target, the peak within 5 %, is the strict xfail below: it fails loudly (XPASS) once the
model meets it."""

from __future__ import annotations

import json
import shutil

import pytest

from advisor.config.schema import RunConfig
from advisor.estimator.memory import memory
from advisor.estimator.static import per_rank_static
from tests.sweep.conftest import base_overrides, load_records, tunewise

OVER_NOW = 0.45  # the largest over-prediction today (+37 %), with room for other CPUs' allocators


@pytest.fixture(scope="module")
def peaks(tiny_assets, tmp_path_factory) -> list[dict]:
    """Per rank: method, parallel, predicted and measured peak bytes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("peaks")
    model = root / "model"
    model.mkdir()
    for f in tiny_assets["model"].glob("tokenizer*"):
        shutil.copy(f, model / f.name)
    small = json.loads((tiny_assets["model"] / "config.json").read_text())
    cfg = LlamaConfig(
        vocab_size=small["vocab_size"],
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(model)
    d = root / "sweep"
    args = base_overrides(tiny_assets, d, "matrix=t_multi", "gpu.count=2", "method.dropout=0.0")
    args += [f"model.path={model}", f"model.config_path={model}", "train.packing=true", "data.rows=32"]
    args += ["train.eval_points=2"]
    out = tunewise(tiny_assets, args)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = []
    for rec in load_records(d).values():
        assert rec["status"] == "complete", rec["reason"]
        c = RunConfig.from_dict(rec["config"])
        mem = memory(c, rec["estimate"]["peak_seq_len"])
        static = per_rank_static(c)
        for r in rec["measured"]["ranks"]:
            assert r["static_bytes"] == {k: static[k] for k in r["static_bytes"]}  # exact, every rank
            measured = sum(r["live_bytes"].values())  # the categories at the peak: the peak itself
            rows.append(
                {
                    "method": c.method.name,
                    "parallel": c.parallel,
                    "rank": r["rank"],
                    "predicted": int(mem.allocated),
                    "measured": measured,
                    "error": mem.allocated / measured - 1,
                }
            )
    for row in sorted(rows, key=lambda r: (r["method"], r["parallel"], r["rank"])):
        print(json.dumps(row))
    assert len(rows) == 12
    return rows


@pytest.mark.slow
def test_per_rank_peaks_are_over_predicted_by_at_most_what_they_are_today(peaks):
    for row in peaks:
        assert 0 <= row["error"] <= OVER_NOW, row


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="per-rank peak over-predicted by 12-37 % (see the module docstring)")
def test_per_rank_peaks_within_5_percent(peaks):
    for row in peaks:
        assert abs(row["error"]) <= 0.05, row

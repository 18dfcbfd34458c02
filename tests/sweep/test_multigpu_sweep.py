"""Cells that span devices, through `tunewise sweep` on CPU: gpu.count=2 cells run as 2 real processes
(gloo) and train exactly what their 1-process twins at the same global batch train; FSDP holds half the
static bytes per rank, as the advisor predicts per GPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from advisor.config.schema import RunConfig
from advisor.estimator.static import per_rank_static
from runners.cell import run_cell
from tests.sweep.conftest import base_overrides, load_records, tunewise

# fp32 on CPU, 1 thread per process: averaging 2 ranks' gradients ((g0 + g1) / 2) and accumulating 2
# micro-batches in 1 process (g0 / 2 + g1 / 2) round alike: here the eval losses came out bit-identical
# and the logged training losses (float32) within one ulp, 4.8e-7 (14 steps, 4 evals, every method
# under FSDP2 and DDP). 1e-5 leaves room for other CPUs' kernels and
# summation orders, and catches any real difference (a rank training on other rows: ~1e-2; gradients
# summed, not averaged: ~1e-1).
LOSS_TOL = 1e-5


def _train_losses(folder: Path) -> list[tuple[int, float]]:
    """(step, loss) of every optimizer step, as the cell logged it (its TensorBoard events; float32)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = folder.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    return [(s.step, s.value) for s in acc.Scalars("train/loss")]


def _by(recs: dict[str, dict], *keys: str) -> dict[tuple, dict]:
    return {tuple(r["coords"][k] for k in keys): r for r in recs.values()}


@pytest.mark.slow
def test_two_process_cells_train_as_one_process_and_hold_half_per_rank(tiny_assets, tmp_path):
    # no LoRA dropout: each rank draws its own masks, which 1 process cannot draw alike
    multi = base_overrides(
        tiny_assets, tmp_path / "multi", "matrix=t_multi", "gpu.count=2", "method.dropout=0.0"
    )
    dry = tunewise(tiny_assets, [*multi, "sweep.dry_run=true"])
    assert dry.returncode == 0, dry.stderr[-3000:]
    cells = [line for line in dry.stdout.splitlines() if re.match(r"[0-9a-f]{10}  run ", line)]
    assert len(cells) == 6 and all((" 2 fsdp " in c) or (" 2 ddp " in c) for c in cells), dry.stdout
    out = tunewise(tiny_assets, multi)
    assert out.returncode == 0, out.stderr[-3000:]
    two = _by(load_records(tmp_path / "multi"), "method", "parallel")
    assert len(two) == 6
    one, one_steps = {}, {}  # each method's 1-process twin: the same config on 1 process, grad_accum × 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs (1 vs 2 threads alone differ by up to 2e-5 in QLoRA)
    for (method, parallel), rec in two.items():
        if parallel == "fsdp":
            cfg = RunConfig.from_dict(rec["config"])
            t = cfg.train
            twin = cfg.replace(gpu={"count": 1}, train={"grad_accum": 2 * t.grad_accum, "lr": cfg.lr})
            res = run_cell(twin, tmp_path / "one" / method, resume=False)
            assert res.status == "complete" and res.measured is not None, res.reason
            one[method] = res.measured.to_dict()
            one_steps[method] = _train_losses(tmp_path / "one" / method)
    torch.set_num_threads(threads)
    worst: dict[str, float] = {}
    for (method, parallel), rec in two.items():
        m, m1 = rec["measured"], one[method]
        assert rec["status"] == "complete", rec["reason"]
        assert m["world_size"] == 2 and [r["rank"] for r in m["ranks"]] == [0, 1]
        # the same data, the same steps, the same losses at every eval
        assert m["steps"] == m1["steps"] and m["train_tokens"] == m1["train_tokens"]
        assert [e[0] for e in m["eval_curve"]] == [e[0] for e in m1["eval_curve"]]
        diffs = [abs(a - b) for (_, _, a), (_, _, b) in zip(m["eval_curve"], m1["eval_curve"], strict=True)]
        # and the training loss at every logged step (rank 0 logs the group's mean)
        steps2, steps1 = _train_losses(tmp_path / "multi" / "cells" / rec["cell_id"]), one_steps[method]
        assert [s for s, _ in steps2] == [s for s, _ in steps1] and len(steps1) == m["steps"]
        diffs += [abs(a - b) for (_, a), (_, b) in zip(steps2, steps1, strict=True)]
        worst[f"{method}/{parallel}"] = max(diffs)
        # the cell's peak is its largest rank's; it pays for 2 devices
        assert m["allocated_gib"] == max(r["allocated_gib"] for r in m["ranks"])
        assert m["rss_gib"] == max(r["rss_gib"] for r in m["ranks"])
        cfg = RunConfig.from_dict(rec["config"])
        assert cfg.gpu.count == 2 and cfg.parallel == parallel
        hours = sum(m["wall_s"].values()) / 3600
        assert m["usd"] == pytest.approx(2 * cfg.price.usd_per_gpu_hour * hours, abs=1e-6)  # 6 decimals
        # per-rank static bytes: the advisor's per-GPU prediction, byte for byte
        predicted = per_rank_static(cfg)
        for r in m["ranks"]:
            assert r["static_bytes"] == {k: predicted[k] for k in ("weights", "gradients", "optimizer")}, (
                method,
                parallel,
                r,
                predicted,
            )
        full = m1["static_bytes"]
        if parallel == "ddp":  # every rank holds it all
            assert m["static_bytes"] == full
        else:  # FSDP: half of the 1-process bytes (QLoRA's quant_state stays whole on every rank)
            s = m["static_bytes"]
            assert s["gradients"] * 2 == full["gradients"]
            opt_steps = 4 * (len(rec["config"]) and _trainable_tensors(cfg))  # AdamW's step counters
            assert (s["optimizer"] - opt_steps) * 2 == full["optimizer"] - opt_steps
            if method != "qlora":
                assert s["weights"] * 2 == full["weights"]
            else:
                assert full["weights"] / 2 < s["weights"] < full["weights"] * 0.6
    # the LoRA adapter, gathered from the ranks and saved once, loads with PeftModel.from_pretrained and
    # gives the 1-process twin's logits
    for parallel in ("fsdp", "ddp"):
        cell = tmp_path / "multi" / "cells" / two[("lora", parallel)]["cell_id"]
        assert not list((cell / "ranks").glob("adapter*"))
        got, want = (
            _logits(tiny_assets, cell / "adapter"),
            _logits(tiny_assets, tmp_path / "one" / "lora" / "adapter"),
        )
        assert torch.allclose(got, want, atol=1e-6, rtol=0), (parallel, (got - want).abs().max())
    print("largest |2-process − 1-process| eval loss:", json.dumps(worst))
    assert max(worst.values()) <= LOSS_TOL, worst


def _logits(assets: dict[str, Path], adapter: Path) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(assets["model"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter).eval()
    ids = torch.arange(4, 36).unsqueeze(0)
    with torch.no_grad():
        return model(input_ids=ids).logits


def _trainable_tensors(cfg: RunConfig) -> int:
    from advisor.estimator.params import trainable_tensors

    return trainable_tensors(cfg.model, cfg.method)

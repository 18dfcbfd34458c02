"""The advisor's per-GPU memory against what each of 2 real ranks held (full / LoRA / QLoRA × DDP / FSDP2,
through `tunewise sweep` on CPU, a 2-layer Llama of hidden size 256 so that activations and weights,
not fixed costs, make the peak; packed sequences, predicted at each rank's own micro-batch shapes).

Static bytes (weights, gradients, optimizer state) are exact on every rank. The peak, measured here
(2026-12-05; the same bytes in every run since the fixes below: this test four times, its FSDP cells
three more; rank 0 / rank 1): DDP full −0.7 / −0.1 %, LoRA 0.0 / +1.1 %, QLoRA 0.0 / +1.5 % (peak at
the head's backward); FSDP2 full 0.0 / +0.8 %, LoRA −0.3 / +0.7 %, QLoRA −1.5 / −0.1 % (the last
layer's MLP backward, with the next layer prefetched); full FSDP at 1 row per micro-batch +0.3 / +1.3 %
(a different moment: the next layer copied out of its all-gather buffer while the last one's
reduce-scatter copy is kept); the same model in 1 process within 0.1 %.

FSDP's measured peak used to move by up to 8 % between identical runs; three causes, each removed:
Python's cyclic collector running inside some backward passes and not others (the runner now collects
between steps: runners.train.collector_between_steps); gloo's worker thread keeping a finished
all-gather's views a moment after the caller's wait, then needing the GIL to drop them, so the layer's
gathered buffer FSDP had freed lived on into the next ops; and gloo's reduce-scatter making its own copy
of the input, freed on that thread whenever it got the GIL (runners.parallel.group's gloo comms wait for
the release and reduce in place). And the model held a layer's whole gradients at its MLP backward,
where only the output projection's exist; they and their reduce-scatter copy now peak once the layer's
backward is done (advisor.estimator.memory, `backward_reduce`).

What closed the gap (it was +12 … +37 %): the packed rows are 50 tokens, not seq_len (first-fit
packing never splits an example — the estimate's `peak_seq_len` is a bound); adapters on a frozen
embedding save nothing in layer 0 before its first adapter; packed rows' position ids are (b, s), so
RoPE's cos/sin are per token; and the backward's moments as the op-by-op trace shows them — the final
norm's backward with everything saved alive, then each layer's MLP backward once the head's saved
tensors and the output projection's input are freed, with one residual gradient and (full fine-tuning)
the gradients formed so far."""

from __future__ import annotations

import json
import shutil

import pytest

from advisor.config.schema import RunConfig
from advisor.estimator.memory import memory
from advisor.estimator.static import per_rank_static
from tests.sweep.conftest import base_overrides, load_records, tunewise

WITHIN = 0.05  # the target (every rank within 1.6 % today)


def micro_batch_shapes(cfg: RunConfig) -> dict[int, set[tuple[int, int]]]:
    """Per rank, the (rows, padded length) of every micro-batch it trained on — the runner's own rows
    and stream. First-fit packing never splits an example, so packed rows end short of seq_len (50 of
    64 tokens here): the estimate's `peak_seq_len` (seq_len for packing) is a bound, not the shape."""
    from advisor.data import dataset
    from runners import data as data_mod
    from runners import model as model_mod
    from runners.train import rank_micro_batches

    t, world = cfg.train, cfg.gpu.count
    split = dataset.split(cfg.data, cfg.seed)
    tok = model_mod.load_tokenizer(cfg)
    encoded = [data_mod.encode(tok, e, t.seq_len) for e in split.train]
    rows = data_mod.build_rows(encoded, t.seq_len, t.packing, cfg.seed)
    stream = data_mod.Stream(rows, t.micro_batch_size, cfg.seed)
    steps = data_mod.planned_steps(len(rows), t.micro_batch_size, t.grad_accum * world, t.epochs, t.max_steps)
    shapes: dict[int, set[tuple[int, int]]] = {r: set() for r in range(world)}
    for step in range(steps):
        for r in range(world):
            for mb in rank_micro_batches(stream, step, r, world, t.grad_accum):
                shapes[r].add((len(mb), max(len(row.input_ids) for row in mb)))
    return shapes


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
    common = ["gpu.count=2", "method.dropout=0.0", f"model.path={model}", f"model.config_path={model}"]
    common += ["train.packing=true", "data.rows=32", "train.eval_points=2"]
    rows = []
    # the matrix at 4 rows per micro-batch (activations make the peak: the last layer's MLP backward),
    # and full FSDP at 1 (the gradients' reduce-scatter copy and the next layer's gather make it)
    for name, extra in (("sweep", []), ("mb1", ["method=full", "parallel=fsdp", "train.micro_batch_size=1"])):
        d = root / name
        args = base_overrides(tiny_assets, d, "matrix=t_multi", *extra, *common)
        out = tunewise(tiny_assets, args)
        assert out.returncode == 0, out.stderr[-3000:]
        rows += _rows(load_records(d).values())
    for row in sorted(rows, key=lambda r: (r["method"], r["parallel"], r["micro"], r["rank"])):
        print(json.dumps(row))
    assert len(rows) == 14
    return rows


def _rows(records) -> list[dict]:
    rows = []
    for rec in records:
        assert rec["status"] == "complete", rec["reason"]
        c = RunConfig.from_dict(rec["config"])
        static = per_rank_static(c)
        shapes = micro_batch_shapes(c)
        for r in rec["measured"]["ranks"]:
            assert r["static_bytes"] == {k: static[k] for k in r["static_bytes"]}  # exact, every rank
            measured = sum(r["live_bytes"].values())  # the categories at the peak: the peak itself
            predicted = max(
                (memory(c.replace(train={"micro_batch_size": n}), width) for n, width in shapes[r["rank"]]),
                key=lambda m: m.allocated,
            )
            rows.append(
                {
                    "method": c.method.name,
                    "parallel": c.parallel,
                    "micro": c.train.micro_batch_size,
                    "rank": r["rank"],
                    "shapes": sorted(shapes[r["rank"]]),
                    "phase": predicted.peak_phase,
                    "predicted": int(predicted.allocated),
                    "measured": measured,
                    "error": predicted.allocated / measured - 1,
                }
            )
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_per_rank_peaks_within_5_percent(peaks, parallel):
    rows = [r for r in peaks if r["parallel"] == parallel]
    assert len(rows) == (8 if parallel == "fsdp" else 6)
    for row in rows:
        assert abs(row["error"]) <= WITHIN, row

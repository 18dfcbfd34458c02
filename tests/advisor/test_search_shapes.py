"""The advisor answers in real node shapes (1, 2, 4, 8, then whole nodes of 8), and FSDP with
amp_bf16 holds one gathered layer in 16 bits per GPU, not an autocast copy of all the weights."""

from __future__ import annotations

from advisor.config.schema import from_names
from advisor.estimator import search
from advisor.estimator.advise import advise
from advisor.estimator.memory import memory
from advisor.estimator.static import per_rank_static, static_bytes

GIB = 2**30


def test_node_shapes_are_what_a_cluster_rents():
    assert search.node_shapes(64) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    assert search.node_shapes(16) == [1, 2, 4, 8, 16]
    assert search.node_shapes(6) == [1, 2, 4]
    # the smallest shape with a property: 10 cards are never an answer, 16 are
    assert search.smallest_shape(lambda n: n >= 10, 64) == 16
    assert search.smallest_shape(lambda n: n >= 3, 64) == 4
    assert search.smallest_shape(lambda n: n > 64, 64) is None


def test_every_count_advise_answers_is_a_node_shape():
    cfg = from_names("llama-3.1-70b", "full", "a100-80gb", data={"rows": 2000})
    doc = advise(cfg, ("full", "lora", "qlora"), given={"model", "gpu"})
    shapes = set(search.node_shapes(search.MAX_MIN_GPUS))
    counts = [doc["min_gpus"][m]["count"] for m in ("full", "lora", "qlora")]
    for m in ("full", "lora", "qlora"):
        ch = doc["cheapest"][m]
        counts += [
            c["gpu_count"]
            for c in (ch, ch.get("cheapest_single_card"), ch.get("cheapest_within_budget"))
            if c
        ]
        counts.append(doc["reverse"][m]["gpu_count"])
    counts = [n for n in counts if n is not None]
    assert counts and set(counts) <= shapes, counts
    assert doc["min_gpus"]["full"]["count"] > 1  # 70B full fine-tuning needs a node


def test_fsdp_amp_bf16_70b_lora_per_gpu_holds_a_shard_not_a_copy():
    """Published FSDP runs of 70B LoRA on 8× H100 measured 67–75 GiB per GPU; the advisor held a
    whole autocast copy of the weights on every GPU (225.8 GiB predicted for the published setup;
    184.7 GiB allocated at this default config before the per-rank model)."""
    cfg = from_names("llama-3.1-70b", "lora", "h100-sxm").replace(
        gpu={"count": 8}, parallel="fsdp", train={"precision": "amp_bf16"}
    )
    mem = memory(cfg, cfg.train.seq_len)
    whole = static_bytes(cfg.replace(gpu={"count": 1}))["weights"]  # 1 process, amp: fp32 weights
    per_rank = per_rank_static(cfg)["weights"]
    assert whole / 8 <= per_rank < whole / 8 * 1.01  # the fp32 weights, 1/8 each (padded shards)
    # at the peak: this rank's shard plus the gathered 16-bit root and a layer or two — not a 16-bit
    # copy of every weight on top (which would be whole / 2 more)
    assert per_rank < mem.weights < per_rank + 0.05 * whole
    assert 30 * GIB < mem.allocated < 80 * GIB, mem.allocated / GIB

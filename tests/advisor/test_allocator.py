"""The caching-allocator replay model (advisor/estimator/allocator.py) on hand-worked sequences, and the torchtune
0.1.1 QLoRA init replay (bench/torchtune01_init.py) ending with exactly the model's tensors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from advisor.estimator.allocator import Allocator

MiB = 2**20
ROOT = Path(__file__).resolve().parents[2]


def test_small_requests_share_a_2_mib_segment_and_round_to_512_bytes():
    a = Allocator()
    a.malloc("x", 100)
    a.malloc("y", 1000)
    assert (a.allocated, a.reserved) == (512 + 1024, 2 * MiB)


def test_mid_size_requests_get_a_20_mib_segment_then_share_it():
    a = Allocator()
    a.malloc("x", 5 * MiB)
    a.malloc("y", 5 * MiB)  # served from the 15 MiB rest of the first segment
    assert a.reserved == 20 * MiB
    a.malloc("z", 11 * MiB)  # 10 MiB left: a new segment, rounded to 2 MiB
    assert a.reserved == 20 * MiB + 12 * MiB


def test_best_fit_split_and_no_merge_across_segments():
    a = Allocator()
    a.malloc("big", 100 * MiB)
    a.malloc("mid", 60 * MiB)
    a.free("big")
    a.free("mid")
    a.malloc("x", 50 * MiB)  # smallest cached block that fits: the 60 MiB one
    assert a.reserved == 160 * MiB
    a.malloc("y", 110 * MiB)  # 100 MiB and 10 MiB free, in different segments: cannot combine
    assert a.reserved == 270 * MiB


def test_freed_neighbours_merge_back_into_one_block():
    a = Allocator()
    a.malloc("a", 50 * MiB)
    a.malloc("b", 50 * MiB)  # its own segment (the first was exactly 50 MiB)
    a.free("a")
    a.malloc("c", 20 * MiB)  # split the free 50 MiB block: 20 used, 30 free
    a.malloc("d", 20 * MiB)  # 20 of the 30
    a.free("c")
    a.free("d")  # merges with c's block and the 10 MiB rest: 50 MiB again
    a.malloc("e", 50 * MiB)
    assert a.reserved == 100 * MiB and a.peak_allocated == 100 * MiB


def test_a_persistent_tensor_inside_a_cached_block_forces_a_new_segment():
    """The fragmentation pattern behind torchtune's QLoRA init: a small tensor that outlives a large
    transient pins the transient's segment, so the next large transient needs a new one."""
    a = Allocator()
    a.malloc("t1", 1000 * MiB)
    a.free("t1")
    a.malloc("keep", 20 * MiB)  # best fit is the only cached block: split from the 1000 MiB one
    a.malloc("t2", 1000 * MiB)
    assert a.reserved == 2000 * MiB and a.allocated == 1020 * MiB


def _torchtune_init():
    spec = importlib.util.spec_from_file_location("torchtune01_init", ROOT / "bench" / "torchtune01_init.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["torchtune01_init"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_torchtune_init_replay_ends_with_the_model_and_peaks_at_a_quantization():
    tt = _torchtune_init()
    dims = dict(h=256, i=768, q=256, kv=128, vocab=1000, layers=3, r=4, head_dim=32, max_seq_len=64)
    a = tt.replay(**dims)
    linears = [(256, 256), (256, 128), (256, 128), (256, 256), (256, 768), (768, 256), (256, 768)]
    kept = sum(int(tt.NF4_BYTES_PER_ELEMENT * i * o) + 2 for i, o in linears)  # + the 2-byte scaler mean
    lora = sum(2 * 4 * i + 2 * o * 4 for i, o in linears)
    rope = 4 * 16 + 8 * 64 * 16
    model = 3 * (kept + lora + rope + 2 * 2 * 256) + 2 * 2 * 1000 * 256 + 2 * 256
    # every tensor rounds up to 512 bytes: compare within that rounding
    assert a.allocated == pytest.approx(model, abs=512 * 3 * (4 * 7 + 2 * 7 + 3 + 2) + 3 * 512)
    n_max = 256 * 768
    assert a.peak_allocated >= model + 68 * n_max  # one to_nf4 of the largest weight on top of the model
    assert a.peak_reserved >= a.peak_allocated


def test_torchtune_qlora_7b_init_reserves_what_torchtune_reported():
    """P5 of shared/reference/ground-truth.md: 9.29 GB reserved (torchtune docs, April 2024)."""
    tt = _torchtune_init()
    a = tt.replay(**tt.llama_dims("llama-2-7b", r=8))
    assert a.allocated / 1e9 == pytest.approx(4.19, abs=0.01)  # the NF4 model with bf16 embeddings
    assert a.peak_reserved / 1e9 == pytest.approx(9.29, rel=0.05)

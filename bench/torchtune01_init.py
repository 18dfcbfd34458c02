"""The GPU allocations of torchtune 0.1.1's QLoRA model init (recipe lora_finetune_single_device with
`qlora_llama2_*`, torchao 0.1 NF4), replayed through the caching-allocator model (advisor/estimator/allocator.py)
to predict the `max_memory_reserved` that init leaves behind. Used by bench/ground_truth.py for P5.

What runs on the GPU, in order (read from the torchtune 0.1.1 and torchao 0.1 wheels on PyPI):
1. the builder makes ONE template decoder layer under `with self._device`: every LoRALinear creates a
   bf16 nn.Linear weight on the GPU and quantizes it with `to_nf4` (the bf16 weight dies after), then
   its bf16 lora_a/lora_b; the layer's RoPE cache (fp32) and two RMSNorm scales; then tok_embeddings
   and the output projection (bf16) and the final norm;
2. `_get_clones` deep-copies the template into every layer: torchtune overrides `aten.clone` for NF4 as
   `to_nf4(get_original_weight())` (dequantize + re-quantize on the GPU); bf16 tensors are copied;
3. the template dies when the builder returns;
4. `load_state_dict` copies the bf16 checkpoint (on the CPU) in: bf16 parameters in place, NF4 ones
   through torchtune's `aten.copy_` override `to_nf4(src.to(device))`, which then replaces the
   destination's quantized tensors (the old ones die).

`TO_NF4` and `GET_ORIGINAL_WEIGHT` are the allocation sequences of torchao 0.1's functions, recorded op
by op on meta tensors (a TorchDispatchMode with a weakref finaliser per storage) at two weight shapes;
every size is `a·n + b` bytes for an n-element weight. `id 0` of TO_NF4 is its bf16 input.
"""

from __future__ import annotations

import itertools
import sys
from fractions import Fraction as F
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from advisor.estimator.allocator import Allocator

# (event, id, a, b) — alloc `a·n + b` bytes under id, or free id (a, b unused)
TO_NF4 = [
    ("alloc", 0, F(2), 0),  # the bf16 input
    ("alloc", 1, F(2), 0),
    ("alloc", 2, F(1, 32), 0),
    ("alloc", 3, F(1, 8), 0),
    ("free", 1),
    ("free", 3),
    ("alloc", 4, F(0), 2),  # scaler_mean (kept)
    ("alloc", 5, F(1, 32), 0),
    ("free", 2),
    ("alloc", 6, F(1, 32), 0),
    ("alloc", 7, F(1, 8192), 0),
    ("alloc", 8, F(1, 2048), 0),
    ("free", 6),
    ("free", 8),
    ("alloc", 9, F(1, 32), 0),
    ("alloc", 10, F(1, 32), 0),
    ("alloc", 11, F(1, 32), 0),  # quantization_factor: the expanded (n/64) bf16 tensor it views (kept)
    ("free", 10),
    ("free", 9),
    ("alloc", 12, F(1, 32), 0),
    ("alloc", 13, F(1, 32), 0),
    ("free", 12),
    ("alloc", 14, F(1, 32), 0),
    ("free", 13),
    ("alloc", 15, F(1, 64), 0),  # quantized_scalers, int8 (kept)
    ("free", 5),
    ("free", 7),
    ("free", 14),
    ("alloc", 16, F(2), 0),
    ("alloc", 17, F(1, 32), 0),
    ("alloc", 18, F(1, 8), 0),
    ("free", 16),
    ("free", 18),
    ("alloc", 19, F(2), 0),  # scaled blocks
    ("alloc", 20, F(32), 0),  # value - nf4: (n, 16) bf16
    ("alloc", 21, F(32), 0),  # .abs()
    ("free", 20),
    ("alloc", 22, F(2), 0),  # min values
    ("alloc", 23, F(8), 0),  # min indices (int64)
    ("free", 22),
    ("free", 21),
    ("alloc", 24, F(4), 0),
    ("alloc", 25, F(4), 0),
    ("free", 24),
    ("alloc", 26, F(1, 2), 0),  # quantized_data, two nibbles per byte (kept)
    ("free", 17),
    ("free", 19),
    ("free", 23),
    ("free", 25),
    ("free", 0),  # the input dies with the call
]
TO_NF4_KEPT = (4, 11, 15, 26)

GET_ORIGINAL_WEIGHT = [
    ("alloc", 0, F(1, 2), 0),
    ("alloc", 1, F(4), 0),
    ("free", 0),
    ("alloc", 2, F(1, 2), 0),
    ("alloc", 3, F(4), 0),
    ("free", 2),
    ("alloc", 4, F(1), 0),
    ("alloc", 5, F(1), 0),
    # (ids 6 and 7 of the recording are the weight's own int8 scalers and quantization factor, first
    # seen through a view: no allocation)
    ("alloc", 8, F(1, 32), 0),
    ("alloc", 9, F(1, 32), 0),
    ("free", 8),
    ("alloc", 10, F(1), 0),
    ("alloc", 11, F(1), 0),
    ("free", 10),
    ("alloc", 12, F(1), 0),
    ("alloc", 13, F(1), 0),
    ("free", 12),
    ("alloc", 14, F(2), 0),  # the bf16 weight it returns
    ("free", 1),
    ("free", 3),
    ("free", 4),
    ("free", 5),
    ("free", 9),
    ("free", 11),
    ("free", 13),
]

# torchao 0.1 NF4 storage per element (what TO_NF4 keeps): nibbles + int8 scalers + the bf16 (n/64)
# quantization-factor tensor its view keeps alive
NF4_BYTES_PER_ELEMENT = F(1, 2) + F(1, 64) + F(1, 32)


class _Events:
    def __init__(self) -> None:
        self.out: list[tuple] = []
        self.size: dict[int, int] = {}
        self._ids = itertools.count()

    def alloc(self, nbytes: int) -> int:
        k = next(self._ids)
        self.out.append(("alloc", k, nbytes))
        self.size[k] = nbytes
        return k

    def free(self, *keys: int) -> None:
        self.out.extend(("free", k) for k in keys)

    def run(self, table, n: int, bind: dict[int, int] | None = None) -> dict[int, int]:
        """Append one recorded function call for an n-element weight; returns recorded id -> key.
        `bind` maps recorded ids to existing keys (an input that already exists)."""
        keys = dict(bind or {})
        for ev in table:
            if ev[0] == "alloc":
                if ev[1] in keys:  # bound input: already allocated
                    continue
                keys[ev[1]] = self.alloc(int(ev[2] * n + ev[3]))
            else:
                self.free(keys[ev[1]])
        return keys


def _to_nf4(ev: _Events, n: int, input_key: int | None = None) -> tuple[int, ...]:
    """to_nf4 of an n-element bf16 weight; returns the keys of the quantized tensors it keeps."""
    keys = ev.run(TO_NF4, n, None if input_key is None else {0: input_key})
    return tuple(keys[i] for i in TO_NF4_KEPT)


def init_events(
    *,
    h: int,
    i: int,
    q: int,
    kv: int,
    vocab: int,
    layers: int,
    r: int,
    head_dim: int,
    max_seq_len: int = 4096,
) -> list[tuple]:
    """Allocation events of torchtune 0.1.1's QLoRA init with LoRA on q, k, v, o and the MLP."""
    ev = _Events()
    # (in, out) of the layer's LoRALinears in construction order: q, k, v, o, then gate, down, up
    linears = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (i, h), (h, i)]

    def lora(n_in: int, n_out: int) -> list[int]:
        return [ev.alloc(2 * r * n_in), ev.alloc(2 * n_out * r)]

    # 1. the template layer
    template: list[tuple[int, ...]] = []
    bf16: list[int] = []
    for n_in, n_out in linears[:4]:
        w = ev.alloc(2 * n_in * n_out)  # nn.Linear weight, bf16 on the GPU
        template.append(_to_nf4(ev, n_in * n_out, w))
        bf16 += lora(n_in, n_out)
    theta = ev.alloc(4 * head_dim // 2)  # RoPE: theta, then the cache built from intermediates
    seq, idx = ev.alloc(4 * max_seq_len), ev.alloc(4 * max_seq_len * head_dim // 2)
    cos, sin = ev.alloc(4 * max_seq_len * head_dim // 2), ev.alloc(4 * max_seq_len * head_dim // 2)
    cache = ev.alloc(8 * max_seq_len * head_dim // 2)
    ev.free(cos, sin, idx, seq)
    bf16 += [theta, cache]
    for n_in, n_out in linears[4:]:
        w = ev.alloc(2 * n_in * n_out)
        template.append(_to_nf4(ev, n_in * n_out, w))
        bf16 += lora(n_in, n_out)
    bf16 += [ev.alloc(2 * h), ev.alloc(2 * h)]  # sa_norm, mlp_norm
    ev.alloc(2 * vocab * h)  # tok_embeddings
    ev.alloc(2 * h * vocab)  # output projection
    ev.alloc(2 * h)  # final norm
    # 2. deep copies: NF4 weights through clone = to_nf4(get_original_weight()), the rest copied
    model: list[list[tuple[int, ...]]] = []
    for _ in range(layers):
        copies = []
        for n_in, n_out in linears:
            n = n_in * n_out
            gow = ev.run(GET_ORIGINAL_WEIGHT, n)
            copies.append(_to_nf4(ev, n, gow[14]))
        for key in bf16:
            ev.alloc(ev.size[key])
        model.append(copies)
    # 3. the template dies with the builder
    ev.free(*itertools.chain.from_iterable(template), *bf16)
    # 4. load_state_dict: every NF4 weight re-quantized from the bf16 checkpoint copied to the GPU
    for copies in model:
        for j, (n_in, n_out) in enumerate(linears):
            new = _to_nf4(ev, n_in * n_out)
            ev.free(*copies[j])
            copies[j] = new
    return ev.out


def replay(**dims) -> Allocator:
    return Allocator().replay(init_events(**dims))


def llama_dims(model: str, r: int) -> dict:
    """init_events' arguments for a catalog model."""
    from advisor.config.schema import from_names
    from advisor.estimator.arch import dims

    d = dims(from_names(model, "qlora", "a100-80gb").model)
    return {
        "h": d.h,
        "i": d.i,
        "q": d.q,
        "kv": d.kv,
        "vocab": d.vocab,
        "layers": d.layers,
        "r": r,
        "head_dim": d.head_dim,
    }


if __name__ == "__main__":
    a = replay(**llama_dims("llama-2-7b", r=8))
    gb = 1e9
    print(f"torchtune 0.1.1 QLoRA init, Llama-2-7B: allocated now {a.allocated / gb:.2f} GB, peak allocated")
    print(
        f"{a.peak_allocated / gb:.2f} GB, reserved {a.reserved / gb:.2f} GB (peak {a.peak_reserved / gb:.2f} GB)"
    )

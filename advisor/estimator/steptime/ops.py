"""One op of a training step, as both the analytic model and the trace describe it.

An op is a kernel (or, for `view`, host work without one): what it computes (FLOPs), what it moves
(bytes read + written), which part of the step it belongs to (`term`) and who issues it (`phase`:
Python in the forward, the autograd engine in the backward, the optimizer). Identical ops are
counted, not repeated: an op list is a mapping Op → count.
"""

from __future__ import annotations

from typing import NamedTuple

# The step's time terms, in the order breakdowns show them.
TERMS = (
    "compute",  # GEMMs of the model's own weights: forward, input and weight gradients, recompute
    "attention",  # the attention kernels (SDPA/flash; eager: scores, softmax, PV)
    "adapters",  # LoRA: the adapters' small GEMMs, dropout, casts, scaling and adds
    "dequant",  # QLoRA: dequantizing the 4-bit weights, every pass
    "elementwise",  # norms, activations, RoPE, residual adds, casts, copies, embedding
    "loss",  # the logits' upcast, log-softmax, NLL and their backward
    "optimizer",  # gradient clipping and the optimizer step
    "communication",  # collectives of ddp/fsdp/zero (exposed part)
)
# fused: a fused optimizer kernel; rng: random numbers (dropout masks: CPU generators are slow)
KINDS = ("gemm", "attn", "mem", "fused", "rng", "view", "comm")
PHASES = ("fwd", "bwd", "rec", "opt")


class Op(NamedTuple):
    """One kernel of the step (see the module docstring); a NamedTuple: hashed and compared in C
    (op lists are built for every estimate).

    shape: (m, n, k, batch) of a GEMM (C[m×n] = A[m×k]·B[k×n], `batch` of them); zeros otherwise.
    wide:  fp32 math (fp32 GEMMs: CUDA cores instead of tensor cores; fp32 elementwise on CPU).
    masked: an attention kernel given an explicit mask (no causal block skipping)."""

    term: str
    kind: str
    phase: str
    flops: float = 0.0
    bytes: float = 0.0
    wide: bool = False
    shape: tuple[int, int, int, int] = (0, 0, 0, 0)
    masked: bool = False


OpList = dict[Op, float]  # op → calls (a float: extrapolated and scaled counts)


def add(ops: OpList, op: Op, n: float = 1.0) -> None:
    ops[op] = ops.get(op, 0.0) + n


def ops_to_json(ops: OpList) -> list[list]:
    """An op list as JSON rows: [term, kind, phase, flops, bytes, wide, m, n, k, batch, masked, count]."""
    return [
        [op.term, op.kind, op.phase, op.flops, op.bytes, op.wide, *op.shape, op.masked, n]
        for op, n in ops.items()
    ]


def ops_from_json(rows: list[list]) -> OpList:
    out: OpList = {}
    for r in rows:
        term, kind, phase, flops, nbytes, wide, m, n, k, batch, masked, count = r
        op = Op(
            term,
            kind,
            phase,
            float(flops),
            float(nbytes),
            bool(wide),
            (int(m), int(n), int(k), int(batch)),
            bool(masked),
        )
        add(out, op, count)
    return out


def extrapolate(lo: OpList, hi: OpList, a: int, b: int, n: int) -> OpList:
    """The op list at depth n from lists traced at depths a and b.

    Decoder layers are identical, so a forward/backward op's count is affine in depth. The optimizer's
    ops instead run once per step over every parameter: their count stays and their bytes are affine
    in depth (the ops of the two traces are paired by kind and size order)."""
    out: OpList = {}
    f = (n - a) / (b - a)
    for op in set(lo) | set(hi):
        if op.phase == "opt" and op.kind != "view":
            continue
        c = lo.get(op, 0) + (hi.get(op, 0) - lo.get(op, 0)) * f
        if c > 1e-9:
            out[op] = c
    groups: dict[tuple, tuple[list[tuple[Op, float]], list[tuple[Op, float]]]] = {}
    for side, ops in ((0, lo), (1, hi)):
        for op, c in ops.items():
            if op.phase == "opt" and op.kind != "view":
                groups.setdefault((op.term, op.kind, op.wide), ([], []))[side].append((op, c))
    for lo_ops, hi_ops in groups.values():
        lo_ops.sort(key=lambda oc: oc[0].bytes)
        hi_ops.sort(key=lambda oc: oc[0].bytes)
        if len(lo_ops) != len(hi_ops):  # unpaired: keep the deeper trace's ops as they are
            for op, c in hi_ops:
                add(out, op, c)
            continue
        for (x, c), (y, _) in zip(lo_ops, hi_ops, strict=True):
            add(out, x._replace(bytes=x.bytes + (y.bytes - x.bytes) * f), c)
    return out

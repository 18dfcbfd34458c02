"""Time of an op list on a device, by term.

One op on the device: max(FLOPs / achievable FLOP/s, bytes / achievable bandwidth) + a per-kernel
floor (GPU) — GEMMs at the GEMM rate of their dtype (CPU: the probe's shape-aware GEMM model),
attention kernels at the attention rate on the FLOPs they execute (causal without a mask: half the
score matrix), everything else at the streaming bandwidth. Views run no kernel.

Host work: every op costs host time to issue (Python in the forward, the autograd engine in the
backward). A GPU runs kernels asynchronously, so between two synchronisations (the runner reads the
loss after every micro-batch; clipping reads the gradient norm) the interval takes
max(Σ device, Σ host): the host is hidden while kernels outlast it, and sets the pace when they do
not (small models, short sequences). That excess is reported as the `overhead` term. A CPU runs the
same host work and then the op, one after another: all host time is `overhead`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from advisor.estimator.steptime.device import GEMM_TILE, Device
from advisor.estimator.steptime.ops import TERMS, Op

OVERHEAD = "overhead"  # host-bound time (launch/dispatch) not hidden behind device work


def op_device_s(op: Op, dev: Device) -> float:
    """Device time of one call of `op` (0 for views)."""
    if op.kind == "view":
        return 0.0
    if op.kind == "gemm":
        m, n, k, batch = op.shape
        if dev.cpu_gemm:
            g = dev.cpu_gemm["32" if op.wide else "16"]
            return op.flops / g.rate + op.bytes / g.stream + g.fixed_s
        rate = dev.gemm32 if op.wide else dev.gemm16
        tiled = op.flops * _tiles(m) * _tiles(n) / max(m * n, 1)  # whole tiles computed
        return max(tiled / rate, op.bytes / dev.bandwidth) + dev.kernel_s
    if op.kind == "attn":
        # causal kernels without a mask skip the upper triangle (GPU flash kernels; the CPU's do not)
        executed = op.flops / 2 if dev.causal_skip and not op.masked else op.flops
        bwd = op.phase == "bwd"
        rate = dev.attn_bwd if bwd else dev.attn_fwd
        fixed = dev.attn_fixed_s[1 if bwd else 0]
        fits = dev.cpu_attention.get("32" if op.wide else "16")
        if fits:  # CPU: the probe's fit for this dtype, FLOPs and per-row work one after the other
            r, per_byte, fixed = fits[op.phase if bwd else "fwd"]
            return executed / r + op.bytes / per_byte + fixed
        return (
            max(executed / rate, op.bytes / dev.stream_rate(op.bytes, phase=op.phase)) + dev.kernel_s + fixed
        )
    if op.kind == "comm":
        return op.bytes / dev.link + dev.link_latency_s if dev.link else 0.0
    if op.kind == "rng" and dev.rng_rate:  # random numbers (CPU: the generator, measured)
        return op.bytes / dev.rng_rate
    if op.kind == "fused" and dev.optimizer_rate:  # a fused optimizer kernel (CPU: measured rate)
        return op.bytes / dev.optimizer_rate["32" if op.wide else "16"]
    if op.term == "dequant":  # reads the stored 4-bit weight: from DRAM, never just written (no L2 reuse)
        if dev.dequant_rate:
            return op.bytes / dev.dequant_rate
        return op.bytes / dev.stream_rate(op.bytes, op.wide, "opt") + dev.kernel_s
    return op.bytes / dev.stream_rate(op.bytes, op.wide, op.phase) + dev.kernel_s


def _tiles(x: int) -> int:
    return -(-x // GEMM_TILE) * GEMM_TILE if x > 0 else 0


def op_host_s(op: Op, dev: Device) -> float:
    if op.kind == "comm":
        return 0.0
    return dev.host_s["view" if op.kind == "view" else op.phase]


@dataclass
class Timed:
    """Seconds of an op list, by term (+ `overhead`), and the op count."""

    terms: dict[str, float] = field(default_factory=dict)
    ops: float = 0.0  # calls, views included

    @property
    def seconds(self) -> float:
        return sum(self.terms.values())

    def add(self, other: Timed, times: float = 1.0) -> Timed:
        for k, v in other.terms.items():
            self.terms[k] = self.terms.get(k, 0.0) + v * times
        self.ops += other.ops * times
        return self


def time_ops(ops: Mapping[Op, float] | Iterable[tuple[Op, float]], dev: Device) -> Timed:
    """One synchronisation interval of ops (see the module docstring)."""
    items = ops.items() if isinstance(ops, Mapping) else ops
    terms = dict.fromkeys(TERMS, 0.0)
    device_s = host_s = calls = 0.0
    for op, n in items:
        d = op_device_s(op, dev) * n
        h = op_host_s(op, dev) * n
        terms[op.term] += d
        device_s += d
        host_s += h
        calls += n
    terms[OVERHEAD] = max(0.0, host_s - device_s) if dev.overlap else host_s
    return Timed({k: v for k, v in terms.items() if v}, calls)

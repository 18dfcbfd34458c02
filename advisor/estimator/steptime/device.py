"""What a device can achieve: the ceilings the step-time model times ops against.

GPUs: from the catalog's device facts (dense bf16/fp16 and fp32 peak, memory bandwidth, the
interconnect) times achievable fractions from published microbenchmarks, never from training runs:

- large-GEMM efficiency: ~87 % of dense peak on A100 and ~80 % on H100 (estimator-notes §6;
  stas00/ml-engineering's maximum-achievable-matmul table: A100 SXM 271 of 312 TFLOP/s, H100 SXM
  ~795 of 989), ~60 % on MI300X (same table); 80 % elsewhere (no card-specific measurement).
- attention: FlashAttention-2 (what torch's SDPA runs for 16-bit inputs on sm80+) reaches 50–73 % of
  A100's peak in the forward and less in the backward (Dao 2023, "FlashAttention-2", Fig. 4–6); on
  H100 the same kernels reach ~35 % forward / ~28 % backward (Shah et al. 2024, "FlashAttention-3",
  Fig. 5–7, the FA2 baselines). Applied to the FLOPs a kernel executes (causal: half the scores).
- bandwidth: 80 % of the catalog's memory bandwidth for streaming kernels (STREAM-like copies reach
  80–90 % on HBM2e/HBM3 and GDDR6X).
- per-kernel device time floor 2.5 µs (launch latency and a tiny kernel's run time, NVIDIA's
  documented ~2–5 µs); host time per op: eager PyTorch issues every op from Python (forward) or the
  autograd engine (backward) and the GPU runs ahead only while its kernels outlast that. A forward
  op costs 30 µs: the published eager baseline of PyTorch's gpt-fast on an A100 server (Llama-2-7B,
  25.5 tokens/s = 39 ms per token over ~1,300 kernel ops, host-bound: the weights' 9 ms of reads
  hidden under it). This project's probe of the same stack on CPU tensors (runners/cpu_probe.py
  `host`: 14 µs forward, 8.5 µs backward per op on this VM's core) plus the CUDA launch path (~7 µs)
  gives less (21 µs): a GPU server's host core issuing CUDA work is slower than that sum, so the
  published server measurement sets the forward cost, and backward/optimizer ops (issued by the C++
  autograd engine / foreach kernels) cost the probe's backward/forward ratio of it (0.6 → 18 µs).
- GEMM tiles: cuBLAS computes whole tiles, so a GEMM's rows and columns are rounded up to 64 (its
  smallest tensor-core tile edge; NVIDIA, "Matrix Multiplication Background", tile quantization):
  short sequences at micro-batch 1 pay for the padding rows.
- interconnect: the catalog's `interconnect_gbs` (per-GPU, one direction; NVLink or PCIe) at 80 %
  (NCCL all-reduce bus bandwidth on DGX A100/H100 nodes: ~230 of 300 and ~370 of 450 GB/s), plus
  10 µs per collective.

CPU (gpu=cpu): everything from runners/cpu_probe.py's measurement of this machine (outputs/
cpu-throughput.json): GEMM time as a function of shape and dtype, streaming bandwidth as a function
of the bytes an op touches (caches), per-op host cost in forward and backward; ops run one after
another (no overlap of host and device work).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from advisor.config.schema import RunConfig

GEMM_EFFICIENCY = {
    "a100-40gb": 0.87,
    "a100-80gb": 0.87,
    "h100-sxm": 0.80,
    "h100-pcie": 0.80,
    "h200": 0.80,
    "mi300x": 0.60,
}
DEFAULT_GEMM_EFFICIENCY = 0.80
FP32_GEMM_EFFICIENCY = 0.70  # CUDA-core fp32 GEMMs (no TF32: torch's default since 1.12)
# FlashAttention-2 (forward, backward) as a fraction of dense peak, by architecture
ATTENTION_EFFICIENCY = {
    "ampere": (0.62, 0.50),
    "ada": (0.62, 0.50),
    "hopper": (0.35, 0.28),
    "blackwell": (0.35, 0.28),
    "volta": (0.35, 0.25),  # memory-efficient (cutlass) kernels; no flash for sm70/75
    "cdna3": (0.35, 0.25),
}
ARCH = {
    "a100-40gb": "ampere",
    "a100-80gb": "ampere",
    "a10": "ampere",
    "a10g": "ampere",
    "rtx-3090": "ampere",
    "rtx-a6000": "ampere",
    "l4": "ada",
    "l40s": "ada",
    "rtx-4090": "ada",
    "h100-sxm": "hopper",
    "h100-pcie": "hopper",
    "h200": "hopper",
    "b200": "blackwell",
    "v100-16gb": "volta",
    "v100-32gb": "volta",
    "t4": "volta",
    "mi300x": "cdna3",
}
BANDWIDTH_EFFICIENCY = 0.80
KERNEL_FLOOR_S = 2.5e-6
HOST_FWD_S = 30e-6  # a forward op issued from Python (module call, autograd record, launch)
HOST_BWD_S = 18e-6  # a backward op issued by the autograd engine (+ launch)
HOST_VIEW_S = 2e-6  # a view / detach (host only, no kernel)
HOST_OPT_S = 18e-6  # an optimizer op (foreach kernels over tensor lists)
GEMM_TILE = 64  # GPU GEMMs compute whole tiles: m and n rounded up to this
# L2: an eager step is chains of elementwise kernels, each reading what the previous one just wrote;
# when an op's tensors fit in (half) the L2 they come from it instead of DRAM. Forward chains reuse
# almost everything; backward ops also read activations saved long before (from DRAM); the optimizer
# streams whole parameter and state tensors. L2 sizes: NVIDIA/AMD whitepapers; L2 bandwidth as a
# multiple of DRAM bandwidth: ~2.5× on HBM parts (A100, H100: microbenchmarks report ~5 and ~8-10
# TB/s), ~4.5× on Ada's GDDR6(X) parts with their large L2 (RTX 4090 ~5 TB/s), ~2× on parts with a
# small L2, ~3× for MI300X's Infinity Cache.
L2_MB = {
    "a100-40gb": 40,
    "a100-80gb": 40,
    "h100-sxm": 50,
    "h100-pcie": 50,
    "h200": 50,
    "b200": 126,
    "l40s": 96,
    "rtx-4090": 72,
    "l4": 48,
    "rtx-3090": 6,
    "rtx-a6000": 6,
    "a10": 6,
    "a10g": 6,
    "t4": 4,
    "v100-16gb": 6,
    "v100-32gb": 6,
    "mi300x": 256,
}
L2_SPEEDUP = {"ampere": 2.5, "hopper": 2.5, "blackwell": 2.5, "ada": 4.5, "volta": 2.0, "cdna3": 3.0}
L2_SMALL_SPEEDUP = 2.0  # parts whose L2 is a few MB (consumer/workstation Ampere, Turing, Volta)
L2_USABLE = 0.5  # of the L2 a chain's working set can hold (the rest: weights, other streams)
L2_REUSE = {"fwd": 0.9, "rec": 0.9, "bwd": 0.5, "opt": 0.0}  # share of an op's bytes recently written
LINK_EFFICIENCY = 0.80
LINK_LATENCY_S = 10e-6


@dataclass(frozen=True)
class CpuGemm:
    """CPU GEMM time t = flops / rate + bytes / stream + fixed, per dtype class (16-bit, fp32)
    (least-squares fit of runners/cpu_probe.py's timed GEMMs over the shapes training runs)."""

    rate: float  # FLOP/s
    stream: float  # bytes/s for the operands (packing, reads, writes)
    fixed_s: float  # per call


@dataclass(frozen=True)
class Device:
    """Achievable ceilings (see the module docstring)."""

    name: str
    gemm16: float  # FLOP/s, large 16-bit GEMMs
    gemm32: float  # FLOP/s, fp32 GEMMs
    attn_fwd: float  # FLOP/s executed by the attention forward kernel
    attn_bwd: float  # FLOP/s executed by the attention backward kernel
    bandwidth: float  # bytes/s of streaming kernels
    kernel_s: float  # device time floor per kernel
    host_s: dict[str, float]  # host time per op by phase (fwd, bwd, rec, opt) and for views
    overlap: bool  # host work overlaps device work (GPU: asynchronous launches); CPU: none
    causal_skip: bool = True  # causal attention kernels skip the masked half (GPU flash; not the CPU's)
    link: float = 0.0  # bytes/s per GPU for collectives (0 = single device)
    link_latency_s: float = LINK_LATENCY_S
    cpu_gemm: dict[str, CpuGemm] = field(default_factory=dict)  # CPU only: "16" / "32"
    cpu_stream: tuple[tuple[float, float], ...] = ()  # CPU only: (bytes touched, bytes/s), 16-bit ops
    cpu_stream32: tuple[tuple[float, float], ...] = ()  # CPU only: the same for fp32 ops
    attn_fixed_s: tuple[float, float] = (0.0, 0.0)  # CPU only: fixed cost of an attention call (fwd, bwd)
    # CPU only: the probe's attention fits by dtype class ("16", "32") and phase: (FLOP/s, bytes/s of
    # its per-row work, fixed s)
    cpu_attention: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)
    optimizer_rate: dict[str, float] = field(default_factory=dict)  # CPU only: fused AdamW bytes/s
    dequant_rate: float = 0.0  # CPU only: bitsandbytes NF4 dequantization bytes/s
    rng_rate: float = 0.0  # CPU only: dropout's random numbers, bytes/s (in + out of bernoulli_)
    l2_bytes: float = 0.0  # GPU: L2 (last-level) cache
    l2_bandwidth: float = 0.0  # GPU: bytes/s streaming out of L2
    source: str = ""

    def stream_rate(self, nbytes: float, wide: bool = False, phase: str = "fwd") -> float:
        """Bytes/s of a streaming op touching `nbytes`. CPU: the probe's cache-dependent curve
        (log-interpolated). GPU: the share of its traffic that hits L2 (see L2 above) at L2 speed."""
        curve = self.cpu_stream32 if wide and self.cpu_stream32 else self.cpu_stream
        if not curve:
            if not self.l2_bytes:
                return self.bandwidth
            hit = L2_REUSE.get(phase, 0.0) * min(1.0, L2_USABLE * self.l2_bytes / max(nbytes, 1.0))
            return 1.0 / (hit / self.l2_bandwidth + (1.0 - hit) / self.bandwidth)
        if nbytes <= curve[0][0]:
            return curve[0][1]
        for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
            if nbytes <= x1:
                f = (math.log(nbytes) - math.log(x0)) / (math.log(x1) - math.log(x0))
                return math.exp(math.log(y0) + f * (math.log(y1) - math.log(y0)))
        return curve[-1][1]


def gpu_device(cfg: RunConfig) -> Device:
    g = cfg.gpu
    return _gpu_device(
        g.name,
        float(g.bf16_dense_tflops or 1.0),
        float(g.fp32_tflops or 1.0),
        float(g.bandwidth_gbs or 1.0),
        float(getattr(g, "interconnect_gbs", None) or 0.0),
        cfg.precision,
    )


@functools.lru_cache(maxsize=256)
def _gpu_device(name: str, bf16: float, fp32: float, bw: float, link: float, precision: str) -> Device:
    eff = GEMM_EFFICIENCY.get(name, DEFAULT_GEMM_EFFICIENCY)
    peak16 = (fp32 if precision == "fp32" else bf16) * 1e12
    arch = ARCH.get(name, "ampere")
    fwd, bwd = ATTENTION_EFFICIENCY[arch]
    l2 = L2_MB.get(name, 0) * 2**20
    speedup = L2_SPEEDUP[arch] if l2 >= 32 * 2**20 else L2_SMALL_SPEEDUP
    return Device(
        name=name,
        gemm16=peak16 * eff,
        gemm32=fp32 * 1e12 * FP32_GEMM_EFFICIENCY,
        attn_fwd=peak16 * fwd,
        attn_bwd=peak16 * bwd,
        bandwidth=bw * 1e9 * BANDWIDTH_EFFICIENCY,
        kernel_s=KERNEL_FLOOR_S,
        host_s={
            "fwd": HOST_FWD_S,
            "rec": HOST_FWD_S,
            "bwd": HOST_BWD_S,
            "opt": HOST_OPT_S,
            "view": HOST_VIEW_S,
        },
        overlap=True,
        link=link * 1e9 * LINK_EFFICIENCY,
        l2_bytes=float(l2),
        l2_bandwidth=bw * 1e9 * BANDWIDTH_EFFICIENCY * speedup,
        source="catalog × published achievable fractions",
    )

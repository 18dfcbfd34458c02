"""Training time: tokens processed (padding included), FLOPs per token by regime, a model-FLOPs-
utilization prior per GPU class, QLoRA dequantization, and fixed wall-clock costs (estimator-notes §6).

Priors, not fits: the utilization table below comes from the published ranges in estimator-notes §6
(single-GPU fine-tuning observes 12–47 % of dense bf16 peak; best-case bf16 matmul ceilings ~87 % on
A100, ~80 % on H100; lower at short sequences and small batches). Override MFU_PRIORS to change them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from advisor.config.catalog import repo_root
from advisor.config.schema import RunConfig
from advisor.estimator.arch import by_identity, dims, traits
from advisor.estimator.params import n_trainable, param_split

# Model-FLOPs utilization at large tokens-per-micro-batch, by GPU class (fraction of dense bf16 peak).
# Datacenter cards sit in the upper half of the observed 12–47 % range, consumer and workstation cards
# (lower sustained clocks, smaller L2) lower. The same prior serves every method: LoRA and QLoRA run the
# same GEMMs minus the weight gradients (the FLOPs count already drops them, and adds the adapters'),
# QLoRA's dequantization is timed separately (memory-bound), and so is the optimizer step.
MFU_PRIORS: dict[str, float] = {
    "datacenter": 0.42,
    "workstation": 0.35,
    "cpu": 0.5,  # of the probe's measured matmul TFLOP/s (attention, norms and Python overhead)
}
DATACENTER = {
    "a100-40gb",
    "a100-80gb",
    "h100-sxm",
    "h100-pcie",
    "h200",
    "b200",
    "mi300x",
    "v100-16gb",
    "v100-32gb",
}
MFU_HALF_TOKENS = 1024  # tokens per micro-batch at which utilization reaches half its prior (small batches)
DEQUANT_BANDWIDTH_EFFICIENCY = 0.6  # achieved fraction of memory bandwidth in dequantize kernels
OPTIMIZER_BANDWIDTH_EFFICIENCY = 0.7  # achieved fraction of memory bandwidth in foreach optimizer kernels
DISK_READ_GBS = 1.0  # model load: local NVMe / network-volume read throughput (GB/s)
DISK_WRITE_GBS = 0.5  # checkpoint writes (GB/s)
CHECKPOINTS_PER_RUN = 10  # when train.checkpoint_every_steps is null (~10 % of the run)
CPU_TFLOPS_PER_CORE_PRIOR = 0.02  # conservative fp32/bf16 matmul TFLOP/s per core without a probe
LENGTH_SIGMA_PRIOR = 0.6  # log-normal spread of example lengths when only data.avg_tokens is known
_QUANTILES = 64  # midpoints used to integrate expectations over the length distribution


@dataclass(frozen=True)
class Lengths:
    """Example lengths as a log-normal (fit from stats or the prior), truncated at seq_len."""

    mu: float
    sigma: float
    seq_len: int
    longest: int  # longest example expected in the run (≤ seq_len): sets the memory peak
    mean: float  # mean truncated length (tokens actually trained per example)
    assumed: bool  # True when only avg_tokens was known


def lengths(cfg: RunConfig, stats: Any = None) -> Lengths:
    """Example-length model; with packing every micro-batch row is filled to seq_len (the peak)."""
    ln = _lengths(cfg, stats)
    return dataclasses.replace(ln, longest=ln.seq_len) if cfg.train.packing else ln


def _lengths(cfg: RunConfig, stats: Any = None) -> Lengths:
    seq = cfg.train.seq_len
    mean = getattr(stats, "tokens_mean", None)
    if mean:
        p50 = getattr(stats, "tokens_p50", None) or mean
        p95 = getattr(stats, "tokens_p95", None)
        sigma = math.log(p95 / p50) / 1.645 if p95 and p95 > p50 else 0.0
        mu = math.log(max(p50, 1.0))
        longest = min(seq, int(getattr(stats, "tokens_max", 0) or math.exp(mu + 3.5 * sigma)))
        total, rows = getattr(stats, "total_tokens", None), getattr(stats, "rows", None)
        tmean = total / rows if total and rows else _trunc_mean(mu, sigma, seq)
        return Lengths(mu, sigma, seq, max(longest, 1), tmean, False)
    return _prior_lengths(float(cfg.data.avg_tokens), cfg.data.rows, seq)


@functools.lru_cache(maxsize=4096)
def _prior_lengths(avg: float, rows: int, seq: int) -> Lengths:
    sigma = LENGTH_SIGMA_PRIOR
    mu = math.log(avg) - sigma * sigma / 2  # mean of the log-normal = avg_tokens
    z = NormalDist().inv_cdf(1 - 1 / (rows + 1))  # longest of `rows` draws
    longest = min(seq, int(math.exp(mu + sigma * z)))
    return Lengths(mu, sigma, seq, max(longest, 1), _trunc_mean(mu, sigma, seq), True)


@functools.lru_cache(maxsize=4096)
def _quantile_grid(mu: float, sigma: float, seq: int) -> tuple[float, ...]:
    nd = NormalDist()
    return tuple(
        min(seq, math.exp(mu + sigma * nd.inv_cdf((k + 0.5) / _QUANTILES))) for k in range(_QUANTILES)
    )


def _trunc_mean(mu: float, sigma: float, seq: int) -> float:
    q = _quantile_grid(mu, sigma, seq)
    return sum(q) / len(q)


@functools.lru_cache(maxsize=4096)
def expected_padded(mu: float, sigma: float, seq: int, batch: int) -> float:
    """E[longest of `batch` examples]: what one padded sequence of a micro-batch costs."""
    q = _quantile_grid(mu, sigma, seq)
    n = len(q)
    # E[max of b] = ∫ Q(u) b u^(b-1) du, midpoint rule on the grid
    return sum(q[k] * batch * ((k + 0.5) / n) ** (batch - 1) for k in range(n)) / n


@functools.lru_cache(maxsize=1)
def cpu_probe() -> dict[str, Any] | None:
    """outputs/cpu-throughput.json written by runners/cpu_probe.py, if present."""
    try:
        return json.loads((repo_root() / "outputs" / "cpu-throughput.json").read_text())
    except (OSError, ValueError):
        return None


def peak_tflops(cfg: RunConfig) -> tuple[float, str]:
    """Dense matmul peak for the run's precision, and where the number comes from."""
    gpu, wide = cfg.gpu, cfg.precision == "fp32"
    if gpu.is_cpu:
        probe = cpu_probe()
        key = "fp32_tflops" if wide else "bf16_tflops"
        if probe and probe.get(key):
            return float(probe[key]), f"measured {probe.get('measured', '')}".strip()
        from advisor.config.schema import machine_cores

        return CPU_TFLOPS_PER_CORE_PRIOR * machine_cores(), "prior (no outputs/cpu-throughput.json yet)"
    tf = gpu.fp32_tflops if wide else gpu.bf16_dense_tflops
    return float(tf or 1.0), "catalog"


@by_identity()
def matmul_params(model) -> float:
    """N of estimator-notes §6: Linear weights taking part per token (MoE: top-k experts) + lm_head."""
    d, split = dims(model), param_split(model)
    linear = split.linear_weights
    if d.experts > 1:  # only top-k of the experts' weights take part per token
        experts = 3 * d.h * d.i * d.experts * d.layers
        linear = linear - experts + experts * d.active_experts / d.experts
    return float(linear + d.vocab * d.h)  # lm_head (tied or not) is a matmul


def flops_per_token(cfg: RunConfig, seq: float) -> float:
    """FLOPs per trained token. Matmuls (estimator-notes §6): N = Linear weights taking part (MoE: top-k
    experts) + lm_head, embedding lookup excluded; forward 2N, backward 4N for full fine-tuning and 2N
    (input gradients only) + the adapters' 6·trainable for LoRA/QLoRA; gradient checkpointing re-runs
    the decoder layers' forward (+2·(N − lm_head)), not the lm_head. Attention per layer: forward
    QKᵀ and PV = 4·s·q; backward 8·s·q for eager (saved probabilities) but 10·s·q for SDPA/flash,
    whose backward recomputes the scores (5 matmuls) — 12 or 14 in all, + 4 with recompute."""
    d = dims(cfg.model)
    n = matmul_params(cfg.model)
    gc = cfg.train.gradient_checkpointing
    eager = cfg.train.attention == "eager" or traits(cfg.model).attn_softcap
    attn = ((12 if eager else 14) + (4 if gc else 0)) * d.layers * d.q * seq
    f = 4 * n + 6 * n_trainable(cfg) if cfg.method.is_adapter else 6 * n
    if gc:
        f += 2 * (n - d.vocab * d.h)
    return float(f + attn)


def mfu(cfg: RunConfig, tokens_per_micro_batch: float) -> float:
    cls = "cpu" if cfg.gpu.is_cpu else ("datacenter" if cfg.gpu.name in DATACENTER else "workstation")
    top = MFU_PRIORS[cls]
    return top * tokens_per_micro_batch / (tokens_per_micro_batch + MFU_HALF_TOKENS)


def optimizer_step_s(cfg: RunConfig) -> float:
    """One optimizer step is memory-bound: bytes read and written per trainable parameter over the
    card's bandwidth. torch AdamW (foreach): param r/w, grad r, two states r/w, one sqrt temporary w/r
    (9 × the parameter dtype); bitsandbytes 8-bit: param r/w, grad r, two 1-byte states r/w; SGD:
    param r/w + grad r. Sharded optimizers (ZeRO/FSDP) step their shard only."""
    bw = cfg.gpu.bandwidth_gbs
    if not bw:
        return 0.0
    wide = cfg.precision == "fp32" or cfg.precision.startswith("amp")
    pb = (4 if wide else 2) if cfg.method.name == "full" else 4
    per_param = {"adamw": 9 * pb, "sgd": 3 * pb, "paged_adamw_32bit": 3 * pb + 16}.get(
        cfg.train.optimizer, 3 * pb + 4
    )
    shard = cfg.gpu.count if cfg.gpu.count > 1 and cfg.parallel != "ddp" else 1
    return n_trainable(cfg) * per_param / shard / (bw * 1e9 * OPTIMIZER_BANDWIDTH_EFFICIENCY)


@dataclass(frozen=True)
class RunTime:
    steps: int
    train_tokens: float  # real tokens trained (truncated examples, no padding), all epochs
    tokens: float  # tokens processed incl. padding (what the GPU computes on)
    padded_len: float  # mean padded sequence length of a micro-batch
    flops: float
    tokens_per_s: float  # processed tokens per second, all GPUs
    wall_s: dict[str, float]  # load, train, eval, checkpoint
    peak_tflops_source: str

    @property
    def hours(self) -> float:
        return sum(self.wall_s.values()) / 3600


def train_rows(cfg: RunConfig, stats: Any = None) -> int:
    rows = cfg.data.rows
    avail = getattr(stats, "rows", None)
    if avail:
        val = 0 if cfg.data.val_path else min(cfg.data.val_rows_max, int(avail * cfg.data.val_fraction))
        rows = min(rows, max(avail - val, 1))
    return rows


def run_time(cfg: RunConfig, ln: Lengths, rows: int, weight_bytes: float, state_bytes: float) -> RunTime:
    """Wall-clock of one run: load + train steps (+ QLoRA dequantization) + evals + checkpoints."""
    t, n_gpu = cfg.train, cfg.gpu.count
    mb, global_batch = t.micro_batch_size, t.micro_batch_size * t.grad_accum * n_gpu
    if t.packing:  # sequences filled to seq_len (boundary waste ignored)
        seqs, padded = max(1, math.ceil(rows * ln.mean / ln.seq_len)), float(ln.seq_len)
        per_seq_real = rows * ln.mean / seqs
    else:
        seqs, padded = rows, expected_padded(ln.mu, ln.sigma, ln.seq_len, mb)
        per_seq_real = ln.mean
    steps = t.max_steps or max(1, math.ceil(math.ceil(seqs / global_batch) * t.epochs))
    seqs_done = steps * global_batch
    tokens = seqs_done * padded
    train_tokens = seqs_done * per_seq_real
    peak, src = peak_tflops(cfg)
    fpt = flops_per_token(cfg, padded)
    flops = tokens * fpt
    util = mfu(cfg, mb * padded)
    compute_s = flops / (peak * 1e12 * util * n_gpu)
    dequant_s = 0.0
    split = param_split(cfg.model)
    if cfg.method.name == "qlora" and cfg.gpu.bandwidth_gbs:
        n = split.linear_weights
        passes = 3 if t.gradient_checkpointing else 2  # forward, backward (+ recompute)
        moved = 0.5 * n + 2 * 2 * n  # read 4-bit, write + read 16-bit weights
        per_pass = moved / (cfg.gpu.bandwidth_gbs * 1e9 * DEQUANT_BANDWIDTH_EFFICIENCY)
        dequant_s = per_pass * passes * t.grad_accum * steps
    train_s = compute_s + dequant_s + steps * optimizer_step_s(cfg)
    rate = tokens / train_s if train_s else 0.0
    # fixed wall-clock costs
    load_s = 2.0 * split.total / (DISK_READ_GBS * 1e9)  # 16-bit safetensors
    val_rows = min(cfg.data.val_rows_max, max(1, int(rows * cfg.data.val_fraction)))
    eval_tokens = t.eval_points * val_rows * padded
    d = dims(cfg.model)
    eval_fpt = 2 * matmul_params(cfg.model) + 4 * d.layers * d.q * padded  # forward only
    eval_s = eval_tokens * eval_fpt / (peak * 1e12 * util * n_gpu)
    if t.metric != "none" and cfg.gpu.bandwidth_gbs:  # greedy decoding: one weight read per token step
        metric_rows = t.metric_rows or val_rows
        eval_s += (
            math.ceil(metric_rows / mb) * t.max_new_tokens * weight_bytes / (cfg.gpu.bandwidth_gbs * 1e9)
        )
    n_ckpt = steps // t.checkpoint_every_steps if t.checkpoint_every_steps else CHECKPOINTS_PER_RUN
    ckpt_s = n_ckpt * state_bytes / (DISK_WRITE_GBS * 1e9)
    wall = {"load": load_s, "train": train_s, "eval": eval_s, "checkpoint": ckpt_s}
    return RunTime(steps, train_tokens, tokens, padded, flops, rate, wall, src)

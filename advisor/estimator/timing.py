"""Training time and wall clock of one run: tokens processed (padding included), the step time from
the ops a step runs (advisor.estimator.steptime), and the wall time outside the steps (docs/time-model.md).

A run's wall clock, by part (the keys of `RunTime.wall_s`, the runner's measured.wall_s has the same):
    start       process start and imports (torch, transformers; PEFT and bitsandbytes for adapters)
    load        tokenizer, data, weights from disk (QLoRA: quantized while loading), optimizer
    train       the optimizer steps: step time (steptime) × steps
    eval        the evals: forward passes over the validation rows, eval_points times
    metric      the task metric: greedy generation over metric_rows validation rows
    checkpoint  the resumable checkpoints written during training
    save        the adapter (and merged weights) at the end
Priors where nothing is measured are named below; on the CPU the probe (runners/cpu_probe.py)
measures imports and disk as well.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from advisor.config.schema import RunConfig
from advisor.estimator.arch import by_identity, dims, traits
from advisor.estimator.params import n_trainable, param_split
from advisor.estimator.static import Stack
from advisor.estimator.steptime import analytic, cpu
from advisor.estimator.steptime.ceilings import device
from advisor.estimator.steptime.cost import OVERHEAD, Timed, time_ops
from advisor.estimator.steptime.device import Device
from advisor.estimator.steptime.ops import Op

cpu_probe = cpu.probe  # outputs/cpu-throughput.json (sweep.run clears its cache after measuring)
LENGTH_SIGMA_PRIOR = 0.6  # log-normal spread of example lengths when only data.avg_tokens is known
_QUANTILES = 64  # midpoints used to integrate expectations over the length distribution
# Wall time outside the steps (GPU machines; the CPU probe measures its own): priors, not fits
GPU_START_S = 20.0  # python + torch/transformers imports + CUDA context (cloud VM, local NVMe)
ADAPTER_IMPORT_S = 3.0  # peft + bitsandbytes on top (the CPU probe measures both)
DISK_READ_GBS = 1.0  # weights: local NVMe / network volume (GB/s); the CPU probe measures its disk
DISK_WRITE_GBS = 0.5  # checkpoints and the adapter (GB/s)
TOKENIZE_S_PER_ROW = 60e-6  # fast tokenizer, one example at a time (runners.data.encode)
QUANTIZE_S_PER_PARAM_GPU = 0.3e-9  # bitsandbytes quantize_4bit while loading, on the GPU
QUANTIZE_S_PER_PARAM_CPU = 8e-9  # the same on the CPU
GEN_BATCH = 32  # runners.metric.GEN_BATCH: prompts generated together (left-padded)
GENERATE_STEP_OPS = 60  # host ops HF generate adds per decoding step (logits processing, stopping, cat)
FIXED_RUN_S = 1.0  # result.json, provenance, the runner's own bookkeeping
RUNNER_VIEWS = 20  # host work per micro-batch besides its tensors (collation loops, hooks, counters)


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
    return _prior_lengths(float(cfg.data.avg_tokens), cfg.data.rows, seq, length_sigma(cfg))


@functools.lru_cache(maxsize=4096)
def _prior_lengths(avg: float, rows: int, seq: int, sigma: float = LENGTH_SIGMA_PRIOR) -> Lengths:
    """Lengths from data.avg_tokens: log-normal with spread `sigma` (0: every example avg tokens)."""
    mu = math.log(avg) - sigma * sigma / 2  # mean of the log-normal = avg_tokens
    z = NormalDist().inv_cdf(1 - 1 / (rows + 1))  # longest of `rows` draws
    longest = min(seq, int(math.exp(mu + sigma * z) + 1e-6))
    return Lengths(mu, sigma, seq, max(longest, 1), _trunc_mean(mu, sigma, seq), True)


@functools.lru_cache(maxsize=4096)
def _quantile_grid(mu: float, sigma: float, seq: int) -> tuple[float, ...]:
    nd = NormalDist()
    return tuple(
        min(seq, math.exp(mu + sigma * nd.inv_cdf((k + 0.5) / _QUANTILES))) for k in range(_QUANTILES)
    )


def _trunc_mean(mu: float, sigma: float, seq: int) -> float:
    if sigma == 0:  # fixed-length examples
        return min(float(seq), round(math.exp(mu), 6))
    q = _quantile_grid(mu, sigma, seq)
    return sum(q) / len(q)


@functools.lru_cache(maxsize=4096)
def expected_padded(mu: float, sigma: float, seq: int, batch: int) -> float:
    """E[longest of `batch` examples]: what one padded sequence of a micro-batch costs."""
    if sigma == 0:  # fixed-length examples
        return min(float(seq), round(math.exp(mu), 6))
    q = _quantile_grid(mu, sigma, seq)
    n = len(q)
    # E[max of b] = ∫ Q(u) b u^(b-1) du, midpoint rule on the grid
    return sum(q[k] * batch * ((k + 0.5) / n) ** (batch - 1) for k in range(n)) / n


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


def length_sigma(cfg: RunConfig) -> float:
    """data.length_sigma, or the prior spread when it is null."""
    sigma = cfg.data.length_sigma
    return LENGTH_SIGMA_PRIOR if sigma is None else float(sigma)


@dataclass(frozen=True)
class RunTime:
    steps: int
    train_tokens: float  # real tokens trained (truncated examples, no padding), all epochs
    tokens: float  # tokens processed incl. padding (what the GPU computes on)
    padded_len: float  # mean padded sequence length of a micro-batch
    flops: float
    tokens_per_s: float  # processed tokens per second, all GPUs
    step_s: float  # seconds per optimizer step
    step_terms: dict[str, float]  # seconds per optimizer step by term (steptime.ops.TERMS + overhead)
    wall_s: dict[str, float]  # start, load, train, eval, metric, checkpoint, save
    peak_tflops_source: str

    @property
    def hours(self) -> float:
        return sum(self.wall_s.values()) / 3600


def train_rows(cfg: RunConfig, stats: Any = None) -> int:
    rows = cfg.data.rows
    avail = getattr(stats, "rows", None)
    if avail:
        rows = min(rows, max(avail - val_rows(cfg, stats), 1))
    return rows


def val_rows(cfg: RunConfig, stats: Any = None) -> int:
    """Validation rows the runner evaluates (carved from the file before any subsampling)."""
    avail = getattr(stats, "rows", None)
    if avail:
        return 0 if cfg.data.val_path else min(cfg.data.val_rows_max, int(avail * cfg.data.val_fraction))
    return min(cfg.data.val_rows_max, max(1, int(cfg.data.rows * cfg.data.val_fraction)))


@by_identity(maxsize=8192)
def micro_time(cfg: RunConfig, b: int, s: int, stack: Stack = Stack()) -> Timed:
    """One micro-batch of b sequences × s tokens on this run's device (forward, backward, recompute,
    and the training loop's own work around them: one synchronisation interval)."""
    ops = itertools.chain(analytic.micro_batch_ops(cfg, b, s, stack).items(), runner_ops(b, s))
    return time_ops(ops, device(cfg))


@by_identity(maxsize=8192)
def forward_time(cfg: RunConfig, b: int, s: int, stack: Stack = Stack()) -> Timed:
    """A forward pass only (eval; generation's prefill and decoding steps)."""
    return time_ops(analytic.forward_ops(cfg, b, s, stack), device(cfg))


@by_identity()
def optimizer_time(cfg: RunConfig) -> Timed:
    return time_ops(analytic.optimizer_ops(cfg), device(cfg))


def comm_s(cfg: RunConfig, micro: Timed, dev: Device) -> float:
    """Exposed seconds per optimizer step of the collectives (gpu.count > 1), over the card's link.

    ddp: gradients all-reduced once per step (ring: 2(n−1)/n of the bytes), overlapped with the last
    micro-batch's backward except its final 25 MB bucket. fsdp/zero3: every micro-batch all-gathers
    the weights forward and backward and reduce-scatters the gradients ((n−1)/n each), prefetched
    under the micro-batch's compute. zero2: gradients reduce-scattered per micro-batch (overlapped)
    and the updated weights all-gathered after the step (not overlapped)."""
    n = cfg.gpu.count
    if n <= 1 or not dev.link:
        return 0.0
    t = cfg.train
    ring = (n - 1) / n
    full = cfg.method.name == "full"
    pe = 4 if cfg.precision == "fp32" or cfg.precision.startswith("amp") else 2
    grad_bytes = n_trainable(cfg) * (pe if full else 4)
    weight_bytes = param_split(cfg.model).total * pe
    compute = micro.seconds
    bwd_share = 0.6  # of a micro-batch: its backward (≈ 2/3 of the GEMM work)
    lat = dev.link_latency_s
    if cfg.parallel == "ddp":
        comm = 2 * ring * grad_bytes / dev.link
        bucket = min(grad_bytes, 25e6) * 2 * ring / dev.link
        return max(comm - bwd_share * compute, bucket) + lat * max(1, grad_bytes / 25e6)
    layers = dims(cfg.model).layers
    if cfg.parallel in ("fsdp", "zero3"):
        per_micro = ring * (2 * weight_bytes + grad_bytes) / dev.link
        exposed = max(per_micro - compute, per_micro / max(1, layers)) + 3 * layers * lat
        return exposed * t.grad_accum
    # zero2
    per_micro = ring * grad_bytes / dev.link
    return t.grad_accum * max(per_micro - bwd_share * compute, 0.0) + ring * weight_bytes / dev.link


@dataclass(frozen=True)
class Step:
    """One optimizer step: seconds by term (per GPU; all GPUs run theirs in parallel)."""

    terms: dict[str, float]
    micro: Timed

    @property
    def seconds(self) -> float:
        return sum(self.terms.values())


def runner_ops(b: int, s: int) -> list[tuple[Op, float]]:
    """The training loop's own work per micro-batch (runners.train): the padded batch built from
    Python lists (input ids, labels, mask), moved to the device, its target tokens counted (a host
    sync) and the loss read back (another)."""
    batch = float(b * s * 8)
    return [
        (Op("elementwise", "mem", "fwd", 0.0, batch), 3),  # the three tensors
        (Op("elementwise", "mem", "fwd", 0.0, batch / 4), 3),  # labels != -100, sum, int()
        (Op("elementwise", "view", "fwd"), RUNNER_VIEWS),
    ]


def step_time(cfg: RunConfig, b: int, s: float, stack: Stack = Stack()) -> Step:
    """Seconds of one optimizer step at micro-batch b × s tokens (grad_accum micro-batches, the
    optimizer, exposed communication); `stack`: the training code (static.Stack; default our runner)."""
    dev = device(cfg)
    micro = micro_time(cfg, b, max(1, int(round(s))), stack)
    total = Timed().add(micro, cfg.train.grad_accum).add(optimizer_time(cfg))
    terms = dict(total.terms)
    comm = comm_s(cfg, micro, dev)
    if comm:
        terms["communication"] = terms.get("communication", 0.0) + comm
    return Step(terms, micro)


def generation_s(cfg: RunConfig, rows: int, prompt: float, new_tokens: int) -> float:
    """Greedy generation for `rows` prompts (batches of GEN_BATCH): per batch a prefill forward, then
    one forward per new token over the KV cache (+ the cache appends and generate's own host work)."""
    if rows <= 0 or new_tokens <= 0:
        return 0.0
    dev = device(cfg)
    d = dims(cfg.model)
    batches = math.ceil(rows / GEN_BATCH)
    b = min(GEN_BATCH, rows)
    prefill = forward_time(cfg, b, max(1, int(prompt))).seconds
    decode = forward_time(cfg, b, 1).seconds
    e = 4 if cfg.precision == "fp32" else 2
    past = prompt + new_tokens / 2
    cache = Op("elementwise", "mem", "fwd", 0.0, 2.0 * b * past * d.kv * e)
    extra = time_ops([(cache, 2 * d.layers), (Op("elementwise", "view", "fwd"), GENERATE_STEP_OPS)], dev)
    return batches * (prefill + new_tokens * (decode + extra.seconds))


def _start_s(cfg: RunConfig) -> float:
    probe = cpu.probe() if cfg.gpu.is_cpu else None
    imports = (probe or {}).get("imports") or {}
    if cfg.gpu.is_cpu and imports:
        base = float(imports.get("base", 0.0))
        return base + (float(imports.get("adapters", 0.0)) if cfg.method.is_adapter else 0.0)
    return GPU_START_S + (ADAPTER_IMPORT_S if cfg.method.is_adapter else 0.0)


def _disk(cfg: RunConfig) -> tuple[float, float]:
    """(read, write) bytes/s: the CPU probe's measurement of this machine's disk, else the priors."""
    disk = ((cpu.probe() or {}).get("disk") or {}) if cfg.gpu.is_cpu else {}
    return float(disk.get("read") or DISK_READ_GBS * 1e9), float(disk.get("write") or DISK_WRITE_GBS * 1e9)


def run_time(
    cfg: RunConfig,
    ln: Lengths,
    rows: int,
    weight_bytes: float,
    state_bytes: float,
    stats: Any = None,
    stack: Stack = Stack(),
) -> RunTime:
    """Wall-clock of one run, by part (see the module docstring)."""
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
    flops = tokens * flops_per_token(cfg, padded)
    step = step_time(cfg, mb, padded, stack)
    train_s = steps * step.seconds
    rate = tokens / train_s if train_s else 0.0
    dev = device(cfg)
    split = param_split(cfg.model)
    read, write = _disk(cfg)
    # load: tokenizer + data (train and validation rows), weights, QLoRA's quantization on load
    n_val = val_rows(cfg, stats)
    load_s = 0.5 + (rows + n_val) * TOKENIZE_S_PER_ROW + 2.0 * split.total / read
    if cfg.method.name == "qlora":
        per = QUANTIZE_S_PER_PARAM_CPU if cfg.gpu.is_cpu else QUANTIZE_S_PER_PARAM_GPU
        load_s += split.linear_weights * per
    # evals: eval_points passes over the validation rows (padded batches of the micro-batch size)
    eval_batches = math.ceil(n_val / mb) if n_val else 0
    eval_len = expected_padded(ln.mu, ln.sigma, ln.seq_len, mb) if eval_batches else 0.0
    evals = len(_eval_steps(steps, t.eval_every_steps, t.eval_points))
    eval_s = evals * eval_batches * forward_time(cfg, min(mb, max(1, n_val)), max(1, int(eval_len))).seconds
    metric_s = 0.0
    if t.metric != "none" and n_val:
        m_rows = min(t.metric_rows or n_val, n_val)
        metric_s = generation_s(cfg, m_rows, ln.mean, t.max_new_tokens)
    every = t.checkpoint_every_steps or max(1, round(0.1 * steps))
    n_ckpt = max(0, (steps - 1) // every)
    ckpt_s = n_ckpt * (state_bytes / write + 0.02)
    save_s = (n_trainable(cfg) * 4 if cfg.method.is_adapter else 0.0) / write + 0.05
    if t.merge:
        save_s += weight_bytes / write
    wall = {
        "start": _start_s(cfg),
        "load": load_s + FIXED_RUN_S,
        "train": train_s,
        "eval": eval_s,
        "metric": metric_s,
        "checkpoint": ckpt_s,
        "save": save_s,
    }
    return RunTime(
        steps=steps,
        train_tokens=train_tokens,
        tokens=tokens,
        padded_len=padded,
        flops=flops,
        tokens_per_s=rate,
        step_s=step.seconds,
        step_terms=step.terms,
        wall_s=wall,
        peak_tflops_source=dev.source,
    )


def _eval_steps(steps: int, every: int | None, points: int) -> list[int]:
    """runners.train.eval_schedule (the same steps; no torch import)."""
    if every:
        at = set(range(every, steps + 1, every))
    else:
        at = {max(1, round(k * steps / points)) for k in range(1, points + 1)}
    at.add(steps)
    return sorted(at)


def dominant(terms: dict[str, float], share: float = 0.2) -> list[str]:
    """The terms that make up at least `share` of a step, largest first (at least the largest)."""
    total = sum(terms.values()) or 1.0
    ranked = sorted(terms.items(), key=lambda kv: -kv[1])
    out = [k for k, v in ranked if v / total >= share]
    return out or [ranked[0][0]] if ranked else []


__all__ = [
    "OVERHEAD",
    "Lengths",
    "RunTime",
    "cpu_probe",
    "dominant",
    "expected_padded",
    "flops_per_token",
    "lengths",
    "matmul_params",
    "run_time",
    "step_time",
    "train_rows",
]

"""One advise row (design.md): parameters, memory, fit, time, cost and budget for one RunConfig.

`estimate` is pure arithmetic on cached per-model quantities: ≥ 10,000 rows per second
(bench/bench_advisor.py). `fit_batch` finds the largest micro-batch that fits the card.
"""

from __future__ import annotations

from typing import Any

from advisor.config.schema import RunConfig
from advisor.estimator.arch import traits
from advisor.estimator.memory import GIB, Stack, memory
from advisor.estimator.params import n_trainable, total_params
from advisor.estimator.timing import Lengths, dominant, lengths, run_time, train_rows

DEFAULT_STACK = Stack()


def _notes(cfg: RunConfig, ln: Lengths) -> list[str]:
    notes = list(cfg.notes)
    if ln.assumed and ln.sigma > 0:
        notes.append(
            f"example lengths assumed log-normal around data.avg_tokens={cfg.data.avg_tokens:g} "
            f"(σ={ln.sigma:g}); give data.path for measured lengths, or data.length_sigma=0 when every "
            "example has that length"
        )
    if cfg.train.optimizer.startswith("paged"):
        notes.append(
            "paged optimizer states page out to host memory when the card is full (slower, not an OOM)"
        )
    if cfg.train.optimizer == "sgd":
        notes.append("sgd: plain SGD without momentum (no optimizer state)")
    if cfg.method.name == "qlora":
        notes.append("qlora: prepare_model_for_kbit_training upcasts non-4-bit parameters to fp32")
    if traits(cfg.model).attn_softcap and cfg.train.attention == "sdpa":
        notes.append(f"{cfg.model.architecture}: transformers runs eager attention (soft-capping; no SDPA)")
    m = cfg.method
    if traits(cfg.model).moe and m.is_adapter and m.target_modules == "all-linear" and m.dropout > 0:
        notes.append("MoE experts: PEFT's LoRA on fused expert weights refuses method.dropout > 0; set 0")
    if cfg.model.num_local_experts and cfg.method.name == "qlora":
        notes.append("MoE: fused expert weights counted as 4-bit (not checked against bitsandbytes)")
    return notes


def estimate(
    cfg: RunConfig, stats: Any = None, calibration: Any = None, stack: Stack = DEFAULT_STACK
) -> dict:
    """The advise row for `cfg`. `stats` (advisor.data.stats.DataStats) gives measured lengths."""
    ln = lengths(cfg, stats)
    mem = memory(cfg, ln.longest, stack)
    rows = train_rows(cfg, stats)
    state_bytes = n_trainable(cfg) * 4.0 + mem.optimizer
    rt = run_time(cfg, ln, rows, mem.weights, state_bytes, stats, stack)
    gpu, price = cfg.gpu, cfg.price
    hours = rt.hours
    usd = hours * price.usd_per_gpu_hour * gpu.count
    within = None
    if cfg.budget_usd is not None or cfg.budget_hours is not None:
        within = (cfg.budget_usd is None or usd <= cfg.budget_usd) and (
            cfg.budget_hours is None or hours <= cfg.budget_hours
        )
    mem_gib = mem.gib()
    t = cfg.train
    row = {
        "method": cfg.method.name,
        "r": cfg.method.r if cfg.method.is_adapter else None,
        "gpu": gpu.name,
        "gpu_count": gpu.count,
        "total_params": total_params(cfg.model),
        "trainable_params": n_trainable(cfg),
        "adapter_bytes": n_trainable(cfg) * stack.adapter_bytes if cfg.method.is_adapter else None,
        "memory": mem_gib,
        "fits": fits(mem, cfg),
        "time": {
            "tokens": round(rt.tokens),
            "flops": rt.flops,
            "hours": round(hours, 4),
            "train_tokens": round(rt.train_tokens),
            "padding_fraction": round(1 - rt.train_tokens / rt.tokens, 4) if rt.tokens else 0.0,
            "tokens_per_s": round(rt.tokens_per_s, 1),
            "steps": rt.steps,
            "step_s": round(rt.step_s, 6),
            "step_terms_s": {k: round(v, 6) for k, v in sorted(rt.step_terms.items(), key=lambda kv: -kv[1])},
            "dominant": dominant(rt.step_terms),
            "wall_s": {k: round(v, 2) for k, v in rt.wall_s.items()},
            "throughput_source": rt.peak_tflops_source,
        },
        "cost": {
            "usd": round(usd, 2),
            "usd_per_gpu_hour": price.usd_per_gpu_hour,
            "price_source": price.provider + (f" ({price.source})" if price.source else ""),
            "price_as_of": price.as_of,
        },
        "within_budget": within,
        "calibrated": [],
        "precision": cfg.precision,
        "optimizer": t.optimizer,
        "seq_len": t.seq_len,
        "peak_seq_len": ln.longest,
        "micro_batch_size": t.micro_batch_size,
        "grad_accum": t.grad_accum,
        "gradient_checkpointing": t.gradient_checkpointing,
        "peak_phase": mem.peak_phase,
        "paged_gib": round(mem.paged / GIB, 3),
        "notes": _notes(cfg, ln),
    }
    if (
        calibration is not None
    ):  # measured factors (advisor.estimator.calibrate): a Calibration or a records path
        from advisor.estimator.calibrate import as_calibration

        row = as_calibration(calibration).apply(row, cfg)
    return row


def fits(mem, cfg: RunConfig) -> bool:
    """device_gib within the card's usable memory; paged optimizer states (cudaMallocManaged) count
    only as far as they fit — beyond that they page out to host memory instead of failing."""
    return mem.device - mem.paged <= cfg.gpu.usable_mib * 2**20


def _divisors_desc(n: int) -> list[int]:
    return [k for k in range(n, 0, -1) if n % k == 0]


def fit_batch(cfg: RunConfig, stats: Any = None, stack: Stack = DEFAULT_STACK) -> RunConfig | None:
    """The largest micro-batch (a divisor of micro × accum, accum adjusted) whose estimate fits the
    card; None when micro-batch 1 does not fit."""
    ln = lengths(cfg, stats)
    global_batch = cfg.train.micro_batch_size * cfg.train.grad_accum
    for micro in _divisors_desc(global_batch):
        c = cfg.replace(train={"micro_batch_size": micro, "grad_accum": global_batch // micro})
        if fits(memory(c, ln.longest, stack), c):
            return c
    return None

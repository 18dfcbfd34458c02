"""Optimizers (design.md's `train.optimizer`) and the learning-rate schedule.

- `adamw`: torch.optim.AdamW (betas 0.9/0.999, weight decay 0.0; states in the parameter dtype). On
  CPU its fused kernel (`fused=True`, what Trainer's default `adamw_torch_fused` runs): one pass per
  tensor, no temporaries, 3-4x faster than the per-tensor loop torch picks on CPU (1.7 % of a step on
  bench/bench_runner_vs_trainer.py's model). On CUDA torch's default (foreach), which the advisor's
  memory model describes: one parameter-sized temporary at the step and the per-tensor `step`
  counters in host memory (advisor.estimator.static.step_counter_bytes);
- `sgd`: torch.optim.SGD without momentum (no state);
- `adamw_8bit`, `paged_adamw_8bit`, `paged_adamw_32bit`: bitsandbytes' AdamW8bit / PagedAdamW8bit /
  PagedAdamW32bit. bitsandbytes 0.50 runs all three on CPU (measured: 8-bit state, block absmax); on
  CPU "paged" has nothing to page out of, so it behaves like the unpaged optimizer.
Schedule: linear warm-up over `ceil(warmup_ratio × steps)` steps, then cosine decay to 0 at the last
step (transformers' get_cosine_schedule_with_warmup shape).
"""

from __future__ import annotations

import math

import torch

BNB = {
    "adamw_8bit": "AdamW8bit",
    "paged_adamw_8bit": "PagedAdamW8bit",
    "paged_adamw_32bit": "PagedAdamW32bit",
}
WEIGHT_DECAY = 0.0  # no decay: adapters and short fine-tunes; one dial fewer


def make_optimizer(name: str, params, lr: float):
    params = [p for p in params if p.requires_grad]
    if name == "adamw":
        cpu = bool(params) and all(p.device.type == "cpu" for p in params)
        return torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY, fused=True if cpu else None)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    import bitsandbytes as bnb

    return getattr(bnb.optim, BNB[name])(params, lr=lr, weight_decay=WEIGHT_DECAY)


def warmup_steps(steps: int, warmup_ratio: float) -> int:
    return math.ceil(warmup_ratio * steps)


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_scheduler(optimizer, steps: int, warmup_ratio: float):
    warm = warmup_steps(steps, warmup_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warm))

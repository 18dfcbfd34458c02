"""Hold the analytic estimator (advisor.estimator.memory / advisor.estimator.timing) to the trace, component by component.

Both sides are put on the same definitions:
    weights, optimizer   static sizes (paged optimizer state included)
    gradients            every trainable parameter's .grad (both sides run with grad_accum = 2, where
                         the analytic row reports the full gradient size)
    activations          bytes saved for backward and alive at the end of the forward (decoder + final
                         norm + lm_head input; the analytic `saved` + autocast weight cache)
    logits               output-layer and loss tensors alive at the end of the forward
    allocated            peak of live bytes over the step (the row's allocated_gib)
    flops                FLOPs per trained token (advisor.estimator.timing.flops_per_token at seq_len)
The analytic forward-end terms are advisor.estimator.memory.Memory.forward_saved / forward_logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advisor.config.schema import RunConfig

GIB = 2**30
COMPONENTS = ("weights", "gradients", "optimizer", "activations", "logits", "allocated", "flops")


def analytic(cfg: RunConfig) -> dict[str, float]:
    """The analytic model's numbers under the definitions above (GiB; flops per token)."""
    from advisor.estimator.memory import memory
    from advisor.estimator.timing import flops_per_token

    seq = cfg.train.seq_len
    mem = memory(cfg, seq)
    accum = memory(cfg.replace(train={"grad_accum": 2}), seq)
    return {
        "weights": mem.weights / GIB,
        "gradients": accum.gradients / GIB,
        "optimizer": mem.optimizer / GIB,
        "activations": mem.forward_saved / GIB,
        "logits": mem.forward_logits / GIB,
        "allocated": mem.allocated / GIB,
        "flops": flops_per_token(cfg, seq),
    }


def traced(cfg: RunConfig, cache_dir: Path | None = None, layers: int | None = None) -> dict[str, float]:
    from runners.trace.tracer import trace

    row = trace(cfg, layers=layers, cache_dir=cache_dir)
    grads = trace(cfg.replace(train={"grad_accum": 2}), layers=layers, cache_dir=cache_dir)
    m = row["memory"]
    return {
        "weights": m["weights_gib"],
        "gradients": grads["memory"]["gradients_gib"],
        "optimizer": m["optimizer_gib"],
        "activations": m["activations_gib"],
        "logits": m["logits_gib"],
        "allocated": m["allocated_gib"],
        "flops": row["time"]["flops_per_token"],
    }


def compare(cfg: RunConfig, cache_dir: Path | None = None) -> dict[str, Any]:
    """{component: {trace, analytic, error}} with error = analytic / trace − 1 (None when both are 0)."""
    t, a = traced(cfg, cache_dir), analytic(cfg)
    out = {}
    for k in COMPONENTS:
        tv, av = t[k], a[k]
        err = None if tv == 0 and av == 0 else (av / tv - 1 if tv else float("inf"))
        out[k] = {"trace": tv, "analytic": av, "error": err}
    return out

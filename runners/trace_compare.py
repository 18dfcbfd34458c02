"""Hold the analytic estimator (advisor.memory / advisor.timing) to the trace, component by component.

Both sides are put on the same definitions:
    weights, optimizer   static sizes (paged optimizer state included)
    gradients            every trainable parameter's .grad (both sides run with grad_accum = 2, where
                         the analytic row reports the full gradient size)
    activations          bytes saved for backward and alive at the end of the forward (decoder + final
                         norm + lm_head input; the analytic `saved` + autocast weight cache)
    logits               output-layer and loss tensors alive at the end of the forward
    allocated            peak of live bytes over the step (the row's allocated_gib)
    flops                FLOPs per trained token (advisor.timing.flops_per_token at seq_len)
The analytic forward-end terms are composed from advisor.activations' per-token functions the same
way advisor.memory.memory composes its `forward_end` phase.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advisor.config import RunConfig

GIB = 2**30
COMPONENTS = ("weights", "gradients", "optimizer", "activations", "logits", "allocated", "flops")


def analytic(cfg: RunConfig) -> dict[str, float]:
    """The analytic model's numbers under the definitions above (GiB; flops per token)."""
    from advisor.activations import head_bytes_per_token, layer_bytes_per_token, pos_bytes_per_token
    from advisor.arch import dims
    from advisor.memory import Stack, memory, regime
    from advisor.params import param_split
    from advisor.timing import flops_per_token

    stack, seq = Stack(), cfg.train.seq_len
    mem = memory(cfg, seq, stack)
    accum = memory(cfg.replace(train={"grad_accum": 2}), seq, stack)
    g, d, model = regime(cfg, stack), dims(cfg.model), cfg.model
    tokens = cfg.train.micro_batch_size * seq
    layer = sum(layer_bytes_per_token(model, g, cfg.method.target_modules, cfg.method.r or 0).values())
    layer += pos_bytes_per_token(model, g) * seq
    head = head_bytes_per_token(model, g, g.full)
    per_layer = g.res * d.h if cfg.train.gradient_checkpointing else layer
    acts = tokens * (d.layers * per_layer + head) + (
        2.0 * param_split(model).linear_weights if g.amp else 0.0
    )
    lb = 4 if (g.cmp == 4 or stack.lm_head_fp32 or cfg.precision == "fp32") else 2
    logits = (lb if stack.logits_kept else 0) * d.vocab * tokens + 4 * d.vocab * tokens
    return {
        "weights": mem.weights / GIB,
        "gradients": accum.gradients / GIB,
        "optimizer": mem.optimizer / GIB,
        "activations": acts / GIB,
        "logits": logits / GIB,
        "allocated": mem.allocated / GIB,
        "flops": flops_per_token(cfg, seq),
    }


def traced(cfg: RunConfig, cache_dir: Path | None = None, layers: int | None = None) -> dict[str, float]:
    from runners.trace import trace

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

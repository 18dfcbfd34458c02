"""Exact memory and FLOPs of one training step, by running the real architecture on fake tensors.

`trace(cfg)` builds the Hugging Face model of cfg.model with the configured method (runners.trace.model),
runs one steady-state training step under FakeTensorMode and counts every tensor's bytes by category
and the FLOPs (runners.trace.step). Nothing is allocated: Llama-3.1-70B traces on a laptop.

Depth: decoder layers are identical (or alternate with period 2, as in Gemma-2), so every byte count,
peak and FLOP count is affine in the number of layers L. By default the model is traced with 2 and 4
layers and extrapolated linearly (per-layer cost = half the difference); models with ≤ 4 layers are
traced whole. `layers=cfg.model.num_hidden_layers` forces one full trace (tests check both agree).

Results are cached as JSON under outputs/trace-cache/, keyed by a hash of everything they depend on.

Reserved memory: the traced allocations and frees, in order, are replayed through a model of the CUDA
caching allocator (advisor/estimator/allocator.py): the persistent tensors, then the step twice. The slack it
finds (reserved − allocated) settles with depth instead of growing with it, so an extrapolated row
adds the deepest trace's slack to the extrapolated peak.

What a trace cannot see (the analytic model must add it): the CUDA context and memory outside torch,
the allocator's behaviour where CUDA kernels allocate differently from their CPU twins, kernels whose workspaces differ between CPU and CUDA (SDPA runs the CPU kernel
choice: with attention dropout that is the O(s²) math path), and bitsandbytes' dequantization buffer
inside its CUDA gemm (the backward's explicit dequantize is traced).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from advisor.config.catalog import repo_root
from advisor.config.schema import RunConfig
from advisor.errors import ConfigError
from advisor.estimator.steptime.ops import extrapolate, ops_from_json, ops_to_json

TRACE_VERSION = 8  # bump when the traced quantities change meaning (6: the op list for time; 7: CPU casts; 8: attention dtype)
GIB = 2**30
BASE_LAYERS = (2, 4)  # traced depths for the linear extrapolation (differ by 2: period-2 layer patterns)


def _versions() -> dict[str, str]:
    import bitsandbytes
    import peft
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "bitsandbytes": bitsandbytes.__version__,
    }


def cache_key(cfg: RunConfig, points: tuple[int, ...]) -> str:
    """Hash of everything a trace depends on (architecture, method, batch shape, precision, …)."""
    model = dataclasses.asdict(cfg.model)
    for k in ("name", "path", "total_params", "trust_remote_code"):
        model.pop(k, None)
    t = cfg.train
    relevant = {
        "v": TRACE_VERSION,
        "versions": _versions(),
        "model": model,
        "method": dataclasses.asdict(cfg.method) if cfg.method.is_adapter else {"name": "full"},
        "train": [
            t.micro_batch_size,
            t.seq_len,
            t.grad_accum > 1,
            t.gradient_checkpointing,
            t.optimizer,
            t.attention,
            t.chunked_loss,
        ],
        "precision": cfg.precision,
        "cpu": cfg.gpu.is_cpu,
        "ddp": cfg.gpu.count > 1,
        "points": list(points),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:20]


def _check(cfg: RunConfig) -> None:
    problems = []
    if cfg.model.num_local_experts:
        problems.append(
            f"model={cfg.model.name!r}: mixture-of-experts routing is data-dependent, so a trace on fake "
            "tensors cannot count expert activations (allowed: dense models; use advisor.mode=analytic)"
        )
    if cfg.train.chunked_loss:
        problems.append("train.chunked_loss=True: not traced yet (allowed: false; use advisor.mode=analytic)")
    if cfg.gpu.count > 1 and cfg.parallel != "ddp":
        problems.append(
            f"parallel={cfg.parallel!r} with gpu.count={cfg.gpu.count}: trace mode traces one unsharded "
            "process (allowed: ddp or gpu.count=1; use advisor.mode=analytic for sharded runs)"
        )
    if cfg.model.trust_remote_code:
        problems.append(
            "model.trust_remote_code=True: trace mode builds only transformers' own architectures"
        )
    if problems:
        raise ConfigError(problems)


def _trace_depth(cfg: RunConfig, layers: int) -> dict[str, Any]:
    """One trace of the model with `layers` decoder layers (raw byte counts)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from runners.trace import model as trace_model
    from runners.trace import step as trace_step

    mode = FakeTensorMode()
    bnb = cfg.method.name == "qlora" or "8bit" in cfg.train.optimizer or "paged" in cfg.train.optimizer
    with trace_model.bnb_constants(mode) if bnb else contextlib.nullcontext(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecation notes, once per trace
        model, notes = trace_model.build(cfg, layers, mode)
        with mode:
            out = trace_step.run_step(cfg, model, trace_model.static_tensors(model))
    if cfg.gpu.count > 1:
        notes.append(f"one of {cfg.gpu.count} DDP processes traced (DDP's gradient buckets not included)")
    out["notes"] = notes
    return out


def _affine(lo: Any, hi: Any, a: int, b: int, n: int) -> Any:
    """Value at depth n of the quantity measured as lo at depth a and hi at depth b."""
    if isinstance(lo, dict):
        return {k: _affine(lo[k], hi[k], a, b, n) for k in lo}
    if isinstance(lo, bool) or not isinstance(lo, (int, float)):
        return lo
    return lo + (hi - lo) * (n - a) / (b - a)


def _row(raw: dict[str, Any], cfg: RunConfig, points: list[int], seconds: float) -> dict[str, Any]:
    phase = max(raw["peak"], key=raw["peak"].get)
    at_peak = raw["peak_cat"][phase]
    memory = {
        "weights_gib": raw["weights"] / GIB,
        "gradients_gib": raw["gradients"] / GIB,
        "optimizer_gib": raw["optimizer"] / GIB,
        "activations_gib": raw["activations"] / GIB,
        "logits_gib": raw["logits"] / GIB,
        "temporaries_gib": at_peak["temporaries"] / GIB,
        "allocated_gib": raw["peak"][phase] / GIB,
        "reserved_gib": raw["reserved"] / GIB,
    }
    tokens = cfg.train.micro_batch_size * cfg.train.seq_len
    return {
        "memory": {k: round(v, 6) for k, v in memory.items()},
        "memory_bytes": {k.removesuffix("_gib"): round(v * GIB) for k, v in memory.items()},
        "time": {
            "flops_per_micro_batch": raw["flops"],
            "flops_per_step": raw["flops"] * cfg.train.grad_accum,
            "flops_per_token": raw["flops"] / tokens,
            "ops": raw["ops"],  # one micro-batch (fwd, bwd, rec) + the optimizer step (opt): steptime ops
        },
        "trainable_params": round(raw["trainable_params"]),
        "traced": True,
        "trace_layers": points,
        "peak_phase": phase,
        "peaks_gib": {ph: round(v / GIB, 6) for ph, v in raw["peak"].items()},
        "peak_breakdown_gib": {k: round(v / GIB, 6) for k, v in at_peak.items()},
        "optimizer_paged": raw["optimizer_paged"],
        "trace_notes": raw["notes"],
        "trace_s": round(seconds, 2),
        "versions": _versions(),
    }


def default_cache_dir() -> Path:
    return Path(os.environ.get("TUNEWISE_TRACE_CACHE") or repo_root() / "outputs" / "trace-cache")


def trace(cfg: RunConfig, layers: int | None = None, cache_dir: Path | None = None) -> dict[str, Any]:
    """Exact memory (GiB by category, peak = allocated) and FLOPs of one training step of cfg.

    layers: None = auto (2 and 4 layers extrapolated by depth; whole model when it has ≤ 4 layers);
    n ≥ num_hidden_layers = one full trace; 2 ≤ n < num_hidden_layers = n−2 and n extrapolated.
    cache_dir: JSON cache folder (None = outputs/trace-cache, or $TUNEWISE_TRACE_CACHE).
    """
    _check(cfg)
    depth = cfg.model.num_hidden_layers
    if layers is None:
        points = [depth] if depth <= BASE_LAYERS[1] else list(BASE_LAYERS)
    elif layers >= depth:
        points = [depth]
    elif layers >= 2:
        points = [max(1, layers - 2), layers]
    else:
        raise ConfigError(f"layers={layers!r}: must be at least 2 (or None = auto)")
    folder = cache_dir or default_cache_dir()
    path = folder / f"{cache_key(cfg, tuple(points))}.json"
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_text())
    t0 = time.perf_counter()
    raws = [_trace_depth(cfg, n) for n in points]
    op_lists = [ops_from_json(r.pop("ops")) for r in raws]
    raw = raws[0] if len(raws) == 1 else _affine(raws[0], raws[1], points[0], points[1], depth)
    ops = (
        op_lists[0] if len(raws) == 1 else extrapolate(op_lists[0], op_lists[1], points[0], points[1], depth)
    )
    raw["ops"] = ops_to_json(ops)
    if len(raws) > 1:  # the allocator's slack is not affine in depth: it settles (a few % per layer
        # pair in either direction); take the deepest trace's slack on top of the extrapolated peak
        deep = raws[-1]
        raw["reserved"] = max(raw["peak"].values()) + deep["reserved"] - max(deep["peak"].values())
    row = _row(raw, cfg, points, time.perf_counter() - t0)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(row, indent=1))
    os.replace(tmp, path)
    return row


def trace_row(cfg: RunConfig) -> dict[str, Any]:
    """The tracer advise uses for advisor.mode=trace: the traced parts of an advise row."""
    return trace(cfg)

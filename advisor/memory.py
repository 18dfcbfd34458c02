"""Peak memory of one training process: named components in bytes, the phase-wise peak, and the three
numbers a user compares with (estimator-notes §1): allocated (live tensors), reserved (caching
allocator), device (what nvidia-smi shows; on CPU: process RSS).

peak = weights + optimizer states + max(forward_end, backward, optimizer_step)   (estimator-notes §5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from advisor.activations import (
    Regime,
    head_bytes_per_token,
    layer_bytes_per_token,
    pos_bytes_per_token,
)
from advisor.arch import by_identity, dims, traits
from advisor.config import RunConfig
from advisor.params import (
    linear_layers,
    lora_params,
    lora_rank,
    n_trainable,
    param_split,
    targeted,
    total_params,
)

GIB = 2**30
QUANT_BLOCK = 64  # bitsandbytes 4-bit block size (elements per absmax)
DQ_BLOCK = 256  # double quantization: 8-bit absmax, one fp32 scale per 256 absmax values
OPT8_BLOCK = 256  # bitsandbytes 8-bit optimizer: one fp32 absmax per 256 state values
OPT8_MIN_SIZE = 4096  # tensors with fewer elements keep 32-bit states (bnb `min_8bit_size`)
CUDA_CONTEXT_GIB = 0.5  # CUDA context with lazy module loading: 0.3–0.7 GB (estimator-notes §1)
CUBLAS_WORKSPACE_GIB = 0.0625  # cuBLAS/cuBLASLt workspaces outside the caching allocator
CPU_PROCESS_GIB = 0.5  # python + torch/transformers libraries resident on CPU runs: 0.4–0.6 GiB
# Caching-allocator headroom (reserved − allocated). Tensors allocated once at load (weights, states)
# pack into segments with at most a rounding loss per tensor (sizes round up to 2 MiB: ~1 MiB each on
# average); the per-step tensors (activations, logits, gradients, temporaries) churn and fragment:
# 0–10 % in steady state, more with variable-length batches (estimator-notes §1). Fixed = packing.
RESERVED_FRACTION_FIXED = 0.03  # of the per-step bytes, fixed shapes (packing)
RESERVED_FRACTION_VARIABLE = 0.10  # of the per-step bytes, variable-length padded batches
STATIC_ROUNDING_BYTES = 2**20  # average rounding loss per persistent tensor above 10 MiB


@dataclass(frozen=True)
class Stack:
    """What the training code does, where training stacks differ. Defaults = our runner
    (transformers + PEFT + bitsandbytes); the ground-truth test describes other stacks with it."""

    adapter_bytes: int = 4  # PEFT keeps LoRA matrices in fp32 (autocast_adapter_dtype=True)
    kbit_upcast: bool = True  # QLoRA: prepare_model_for_kbit_training casts non-4-bit params to fp32
    logits_kept: bool = True  # the model output object holds the logits through backward
    lm_head_fp32: bool = False  # the model upcasts its logits itself (torchtune's `.float()`)
    bnb_saves_input: bool = False  # bitsandbytes < 0.43.2 (before July 2024): 4-bit matmuls save their input


@dataclass(frozen=True)
class Memory:
    """Bytes of each component at the peak, and the phase that sets it."""

    weights: float
    gradients: float
    optimizer: float  # optimizer states (incl. paged ones)
    activations: float
    logits: float
    temporaries: float  # optimizer-step temporaries / backward transients at the peak
    allocated: float
    reserved: float
    device: float
    paged: float  # paged optimizer states (cudaMallocManaged: outside torch's counters)
    peak_phase: str
    precision: str

    def gib(self) -> dict[str, float]:
        r = lambda b: round(b / GIB, 3)  # noqa: E731
        return {
            "weights_gib": r(self.weights),
            "gradients_gib": r(self.gradients),
            "optimizer_gib": r(self.optimizer),
            "activations_gib": r(self.activations),
            "logits_gib": r(self.logits),
            "overhead_gib": r(self.device - self.allocated),
            "allocated_gib": r(self.allocated),
            "reserved_gib": r(self.reserved),
            "device_gib": r(self.device),
        }


def q4_bytes(n: int, double_quant: bool) -> int:
    """Storage of one 4-bit Params4bit with n elements: packed nibbles + its quant_state."""
    blocks = math.ceil(n / QUANT_BLOCK)
    code = 16 * 4  # the 16-value NF4/FP4 code (fp32), one per tensor
    if not double_quant:
        return n // 2 + 4 * blocks + code  # fp32 absmax per block
    # uint8 absmax + fp32 scale per 256 of them + offset + the 256-value dynamic map of state2
    return n // 2 + blocks + 4 * math.ceil(blocks / DQ_BLOCK) + 4 + 256 * 4 + code


def regime(cfg: RunConfig, stack: Stack) -> Regime:
    p, m = cfg.precision, cfg.method.name
    amp = p.startswith("amp")
    wide = p == "fp32" or amp  # fp32 weights / residual stream
    if m == "qlora":
        up = stack.kbit_upcast or wide
        res = cmp = 4 if up else 2  # Linear4bit casts its output back to the (fp32) input dtype
    else:
        res, cmp = (4 if wide else 2), (4 if p == "fp32" else 2)
    mb, packing = cfg.train.micro_batch_size, cfg.train.packing
    attention = cfg.train.attention
    if attention == "sdpa" and traits(cfg.model).attn_softcap:
        attention = "eager"  # transformers refuses SDPA for Gemma-2 (soft-capping): eager runs
    masked = packing or mb > 1  # padding or packing masks make transformers expand k/v for SDPA
    return Regime(
        full=m == "full",
        res=res,
        cmp=cmp,
        amp=amp,
        adapter=stack.adapter_bytes if cfg.method.is_adapter else 0,
        dropout=cfg.method.is_adapter and cfg.method.dropout > 0,
        attention=attention,
        gqa_expand=attention == "eager" or (attention == "sdpa" and masked),
        masked=masked,
        q4_saves_input=m == "qlora" and stack.bnb_saves_input,
        mask=cmp if cfg.gpu.is_cpu else 1,
    )


def _weight_bytes(cfg: RunConfig, g: Regime, stack: Stack) -> float:
    m, model = cfg.method, cfg.model
    wide = cfg.precision == "fp32" or g.amp
    if m.name == "full":
        return total_params(model) * (4 if wide else 2)
    adapters = n_trainable(cfg) * g.adapter
    if m.name == "lora":
        return total_params(model) * (4 if wide else 2) + adapters
    split = param_split(model)
    other = split.other * (4 if stack.kbit_upcast or wide else 2)
    return _q4_linear_bytes(model, m.double_quant) + other + adapters


@by_identity()
def _q4_linear_bytes(model, double_quant: bool) -> int:
    from advisor.params import linear_layers

    total = 0
    for lin in linear_layers(model):
        if lin.part != "lm_head":  # transformers keeps the output layer unquantized
            total += q4_bytes(lin.in_features * lin.out_features, double_quant) * lin.experts * lin.count
    return total


@by_identity()
def _trainable_tensors(model, method) -> tuple[tuple[int, int], ...]:
    """(elements, instances) of every trainable tensor: what 8-bit optimizers decide on per tensor."""
    if method.is_adapter:
        r = method.r or 0
        out = []
        for lin in targeted(model, method.target_modules):
            out.append((lora_rank(lin, r) * lin.in_features, lin.count))
            out.append((lora_rank(lin, r) * lin.out_features, lin.count))
        assert sum(n * c for n, c in out) == sum(
            lora_params(lin, r) for lin in targeted(model, method.target_modules)
        )
        return tuple(out)
    d = dims(model)
    split = param_split(model)
    small = 0  # norms and biases under OPT8_MIN_SIZE
    from advisor.arch import traits

    t = traits(model)
    norm_n = d.h * (2 if t.layernorm else 1)
    if d.h < OPT8_MIN_SIZE:
        small += (d.layers * t.norms_per_layer + 1) * norm_n
    if t.qk_norm and d.head_dim < OPT8_MIN_SIZE:
        small += d.layers * 2 * d.head_dim
    return ((split.total - small, 1), (1, small)) if small else ((split.total, 1),)


def optimizer_bytes(cfg: RunConfig, state_bytes: int) -> tuple[float, float]:
    """(torch-visible, paged) optimizer-state bytes for train.optimizer.

    adamw: torch AdamW keeps exp_avg and exp_avg_sq in the parameter dtype. adamw_8bit /
    paged_adamw_8bit: bitsandbytes blockwise 8-bit states (2 B/param + fp32 absmax per 256), 32-bit
    for tensors under 4,096 elements. paged_adamw_32bit: 8 B/param. Paged variants allocate with
    cudaMallocManaged (visible to nvidia-smi, not to torch). sgd: our runner uses plain SGD without
    momentum: no state.
    """
    opt = cfg.train.optimizer
    if opt == "sgd":
        return 0.0, 0.0
    if opt == "adamw":
        return n_trainable(cfg) * 2.0 * state_bytes, 0.0
    if opt == "paged_adamw_32bit":
        return 0.0, n_trainable(cfg) * 8.0
    b, eight_bit = 0.0, False
    for n, count in _trainable_tensors(cfg.model, cfg.method):
        eight_bit |= n >= OPT8_MIN_SIZE
        per = 2 * n + 2 * 4 * math.ceil(n / OPT8_BLOCK) if n >= OPT8_MIN_SIZE else 8 * n
        b += per * count
    if eight_bit:
        b += 2 * 256 * 4  # the two quantization maps (qmap1, qmap2), shared by all tensors
    return (0.0, b) if opt.startswith("paged") else (b, 0.0)


@by_identity()
def _layer_total(model, g: Regime, targets, r: int) -> float:
    return float(sum(layer_bytes_per_token(model, g, targets, r).values()))


@by_identity()
def _head_total(model, g: Regime, lm_head_trains: bool) -> float:
    return head_bytes_per_token(model, g, lm_head_trains)


@by_identity()
def _large_persistent_tensors(model, method: str, precision: str, optimizer: str) -> int:
    """Tensors above 10 MiB that live for the whole run (each gets its own segment, rounded to 2 MiB):
    16-bit/4-bit weights, and for full fine-tuning their gradients and optimizer states."""
    d, full = dims(model), method == "full"
    wbytes = 4 if (precision == "fp32" or precision.startswith("amp")) else 2
    big = 10 * 2**20
    n = 0
    for lin in linear_layers(model):
        if lin.part == "lm_head" and d.tied:
            continue
        per = lin.in_features * lin.out_features * lin.experts
        b = per / 2 if (method == "qlora" and lin.part != "lm_head") else per * wbytes
        n += lin.count * (b > big)
    n += d.vocab * d.h * wbytes > big  # embedding
    if full:
        n *= 1 + (2 if optimizer != "sgd" else 0) + 1  # + grads + two states
    return n


def static_bytes(cfg: RunConfig, stack: Stack = Stack()) -> dict[str, float]:
    """Bytes of parameters (4-bit storage and quant_state included), gradients and optimizer states
    after the first step, before any sharding: what a runner can count on the real tensors."""
    g = regime(cfg, stack)
    wide = cfg.precision == "fp32" or g.amp
    pbytes = (4 if wide else 2) if g.full else g.adapter
    opt, paged = optimizer_bytes(cfg, pbytes)
    grads = n_trainable(cfg) * pbytes
    return {"weights": _weight_bytes(cfg, g, stack), "gradients": grads, "optimizer": opt, "paged": paged}


def memory(cfg: RunConfig, padded_len: int, stack: Stack = Stack()) -> Memory:
    """Per-process (per-GPU) peak memory for micro-batches of `padded_len` tokens per sequence."""
    model, method, train = cfg.model, cfg.method, cfg.train
    g = regime(cfg, stack)
    d = dims(model)
    n_gpu, par = cfg.gpu.count, cfg.parallel
    tokens = train.micro_batch_size * padded_len
    wide = cfg.precision == "fp32" or g.amp
    pbytes = (4 if wide else 2) if g.full else g.adapter  # trainable params' dtype
    weights = _weight_bytes(cfg, g, stack)
    grads = n_trainable(cfg) * pbytes
    opt, paged = optimizer_bytes(cfg, pbytes)
    # ---- activations (per token) -----------------------------------------------------------------
    layer = _layer_total(model, g, method.target_modules, method.r or 0)
    layer += pos_bytes_per_token(model, g) * padded_len
    lm_head_trains = g.full
    head = _head_total(model, g, lm_head_trains)
    amp_cache = 2.0 * param_split(model).linear_weights if g.amp else 0.0  # 16-bit weight copies
    if train.gradient_checkpointing:
        saved = tokens * (d.layers * g.res * d.h + head)  # each layer's input (+ head)
        recompute = tokens * layer  # one layer's full activations while it is recomputed
    else:
        saved = tokens * (d.layers * layer + head)
        recompute = 0.0
    acts = saved + amp_cache
    # backward transients at the MLP: grads of the product, gate and up, plus two residual grads
    i_eff = d.i * (2 if d.experts == 1 else 2 * d.active_experts)
    transient = tokens * (3 * g.cmp * i_eff / 2 + 2 * g.res * d.h)
    # ---- logits and loss (estimator-notes §4) ----------------------------------------------------
    lb = 4 if (g.cmp == 4 or stack.lm_head_fp32 or cfg.precision == "fp32") else 2
    kept = lb * d.vocab * tokens if stack.logits_kept else 0.0
    if train.chunked_loss:  # chunked CE in the logits dtype: per-chunk log-softmax, no fp32 copies
        logits_fwd = kept + lb * d.vocab * tokens
        logits_bwd = logits_fwd
    else:  # fp32 copy (freed) → log-softmax output (saved, fp32); backward: nll grad + lsm grad
        logits_fwd = kept + 4 * d.vocab * tokens
        logits_bwd = logits_fwd + 8 * d.vocab * tokens
    # ---- multi-GPU sharding ----------------------------------------------------------------------
    if n_gpu > 1 and par in ("zero2", "zero3", "fsdp"):
        opt, paged, grads = opt / n_gpu, paged / n_gpu, grads / n_gpu
        if par != "zero2":
            gathered = 2 * weights / max(d.layers, 1)  # current + prefetched layer, unsharded
            weights = weights / n_gpu + gathered
    ddp_buckets = grads if (n_gpu > 1 and par == "ddp") else 0.0  # DDP's flat gradient buckets
    # ---- phases ----------------------------------------------------------------------------------
    accum = train.grad_accum > 1
    g_head = d.vocab * d.h * pbytes if lm_head_trains else 0.0
    g0 = grads + ddp_buckets if accum else g_head
    # torch's foreach AdamW allocates one parameter-sized temporary (sqrt of exp_avg_sq) per step, over
    # the parameters this process updates (its shard under ZeRO/FSDP)
    sharded = n_gpu > 1 and par in ("zero2", "zero3", "fsdp")
    step_tmp = n_trainable(cfg) * pbytes / (n_gpu if sharded else 1) if train.optimizer == "adamw" else 0.0
    phases = {
        "forward_end": acts + logits_fwd + g0,
        "backward_start": acts + logits_bwd + g0,
        "backward_layers": acts + kept + g0 + recompute + transient,
        "backward_end": grads
        + ddp_buckets
        + recompute
        + transient
        + (0 if train.gradient_checkpointing else tokens * layer),
        "optimizer_step": grads + ddp_buckets + step_tmp,
    }
    phase = max(phases, key=phases.__getitem__)
    allocated = weights + opt + phases[phase]
    if cfg.gpu.is_cpu:
        reserved, device = allocated, allocated + paged + CPU_PROCESS_GIB * GIB
    else:
        frac = RESERVED_FRACTION_FIXED if train.packing else RESERVED_FRACTION_VARIABLE
        reserved = (
            allocated
            + frac * phases[phase]
            + STATIC_ROUNDING_BYTES
            * _large_persistent_tensors(model, method.name, cfg.precision, train.optimizer)
        )
        device = reserved + (CUDA_CONTEXT_GIB + CUBLAS_WORKSPACE_GIB) * GIB + paged
    in_acts = phase not in ("optimizer_step", "backward_end")
    return Memory(
        weights=weights,
        gradients=grads if (accum or phase in ("optimizer_step", "backward_end")) else g0,
        optimizer=opt + paged,
        activations=(acts + (recompute if phase == "backward_layers" else 0)) if in_acts else 0.0,
        logits=(logits_bwd if phase == "backward_start" else logits_fwd if phase == "forward_end" else kept)
        if in_acts
        else 0.0,
        temporaries=step_tmp if phase == "optimizer_step" else transient if "backward" in phase else 0.0,
        allocated=allocated,
        reserved=reserved,
        device=device,
        paged=paged,
        peak_phase=phase,
        precision=cfg.precision,
    )

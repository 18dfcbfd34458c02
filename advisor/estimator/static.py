"""Bytes that live for the whole run — parameters (4-bit storage and quant_state included), gradients,
optimizer states — and the facts of the training code that decide dtypes (`Stack`, `regime`).

Every number here equals the real tensors after a training step (tests/advisor/test_memory_real.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from advisor.config.schema import RunConfig
from advisor.estimator.activations import Regime
from advisor.estimator.arch import by_identity, dims, traits
from advisor.estimator.params import (
    linear_layers,
    lora_params,
    lora_rank,
    n_trainable,
    n_trainable_tensors,
    param_split,
    targeted,
    total_params,
)

QUANT_BLOCK = 64  # bitsandbytes 4-bit block size (elements per absmax)
DQ_BLOCK = 256  # double quantization: 8-bit absmax, one fp32 scale per 256 absmax values
OPT8_BLOCK = 256  # bitsandbytes 8-bit optimizer: one fp32 absmax per 256 state values
OPT8_MIN_SIZE = 4096  # tensors with fewer elements keep 32-bit states (bnb `min_8bit_size`)
LARGE_TENSOR_BYTES = 10 * 2**20  # the caching allocator gives larger tensors their own segment
STEP_COUNTER_BYTES = 4  # torch AdamW's per-tensor `step`: a 0-dim float32 tensor


@dataclass(frozen=True)
class Stack:
    """What the training code does, where training stacks differ. Defaults = our runner
    (transformers + PEFT + bitsandbytes); the ground-truth test describes other stacks with it."""

    adapter_bytes: int = 4  # PEFT keeps LoRA matrices in fp32 (autocast_adapter_dtype=True)
    kbit_upcast: bool = True  # QLoRA: prepare_model_for_kbit_training casts non-4-bit params to fp32
    logits_kept: bool = True  # the model output object holds the logits through backward
    lm_head_fp32: bool = False  # the model upcasts its logits itself (torchtune's `.float()`)
    bnb_saves_input: bool = False  # bitsandbytes < 0.43.2 (before July 2024): 4-bit matmuls save their input
    # QLoRA quantizes the output layer too (Lightning Fabric's BitsandbytesPrecision replaces every
    # nn.Linear; transformers keeps lm_head in 16-bit)
    lm_head_4bit: bool = False
    # bytes per element of the weight a 4-bit matmul dequantizes for its forward and its backward: 2 when
    # bitsandbytes dequantizes straight into the compute dtype (the quant_state keeps the dtype the weight
    # had, bf16 here); 4 when the weight was quantized from fp16 (Fabric) and the fp16 result is then
    # cast to bf16 (`dequantize_4bit(B, state).to(A.dtype)`)
    dequant_bytes: int = 2


def q4_bytes(n: int, double_quant: bool) -> int:
    """Storage of one 4-bit Params4bit with n elements: packed nibbles + its quant_state."""
    blocks = math.ceil(n / QUANT_BLOCK)
    code = 16 * 4  # the 16-value NF4/FP4 code (fp32), one per tensor
    if not double_quant:
        return n // 2 + 4 * blocks + code  # fp32 absmax per block
    # uint8 absmax + fp32 scale per 256 of them + offset + the 256-value dynamic map of state2
    return n // 2 + blocks + 4 * math.ceil(blocks / DQ_BLOCK) + 4 + 256 * 4 + code


def gathers_16bit(cfg: RunConfig) -> bool:
    """FSDP's mixed precision in the runner (runners.parallel.group.mixed_precision): parameters are
    gathered in the 16-bit compute dtype (amp_*, and pure bf16/fp16 with fp32 adapters or 4-bit
    weights), so a layer computes as pure 16-bit does — no autocast copies of the weights, a 16-bit
    residual stream (FSDP casts the inputs), 16-bit adapters."""
    p = cfg.precision
    return sharded(cfg) and (p.startswith("amp") or (p in ("bf16", "fp16") and cfg.method.is_adapter))


def regime(cfg: RunConfig, stack: Stack) -> Regime:
    p, m = cfg.precision, cfg.method.name
    mp = gathers_16bit(cfg)
    amp = p.startswith("amp") and not mp
    wide = p == "fp32" or amp  # fp32 weights / residual stream
    if m == "qlora":
        # under FSDP the recipe has no kbit upcast: the non-4-bit parameters stay 16-bit
        up = (stack.kbit_upcast and not sharded(cfg)) or wide
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
        adapter=(2 if mp else stack.adapter_bytes) if cfg.method.is_adapter else 0,
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
    other, q4 = split.other, _q4_linear_bytes(model, m.double_quant)
    if stack.lm_head_4bit and split.lm_head:
        other, q4 = other - split.lm_head, q4 + q4_bytes(split.lm_head, m.double_quant)
    return q4 + other * (4 if stack.kbit_upcast or wide else 2) + adapters


@by_identity()
def _q4_linear_bytes(model, double_quant: bool) -> int:
    from advisor.estimator.params import linear_layers

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
    from advisor.estimator.arch import traits

    t = traits(model)
    norm_n = d.h * (2 if t.layernorm else 1)
    if d.h < OPT8_MIN_SIZE:
        small += (d.layers * t.norms_per_layer + 1) * norm_n
    if t.qk_norm and d.head_dim < OPT8_MIN_SIZE:
        small += d.layers * 2 * d.head_dim
    return ((split.total - small, 1), (1, small)) if small else ((split.total, 1),)


def step_counter_bytes(cfg: RunConfig) -> int:
    """torch AdamW's `step` counters in the run's device memory.

    torch (optim/adam.py, Adam._init_group, which AdamW inherits) creates `state["step"]` for every
    parameter tensor as a 0-dim float32 tensor on the parameter's device when `fused` or `capturable`
    is set, else on the CPU ("[special device hosting for step]"). The runner's AdamW sets neither
    on CUDA, so there they are host memory and count nothing; a CPU run holds them beside the states:
    4 bytes per trainable parameter tensor. Other optimizers: 0 (SGD without momentum keeps no state,
    bitsandbytes keeps its step as a Python int)."""
    if cfg.train.optimizer != "adamw" or not cfg.gpu.is_cpu:
        return 0
    return STEP_COUNTER_BYTES * n_trainable_tensors(cfg)


def optimizer_bytes(cfg: RunConfig, state_bytes: int) -> tuple[float, float]:
    """(torch-visible, paged) optimizer-state bytes for train.optimizer.

    adamw: torch AdamW keeps exp_avg and exp_avg_sq in the parameter dtype, plus one fp32 `step`
    per parameter tensor on CPU runs (step_counter_bytes). adamw_8bit / paged_adamw_8bit:
    bitsandbytes blockwise 8-bit states (2 B/param + fp32 absmax per 256), 32-bit for tensors under
    4,096 elements. paged_adamw_32bit: 8 B/param. Paged variants allocate with cudaMallocManaged
    (visible to nvidia-smi, not to torch). bitsandbytes keeps its `step` as a Python int (no tensor).
    sgd: our runner uses plain SGD without momentum: no state.
    """
    opt = cfg.train.optimizer
    if opt == "sgd":
        return 0.0, 0.0
    if opt == "adamw":
        return n_trainable(cfg) * 2.0 * state_bytes + step_counter_bytes(cfg), 0.0
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
def _large_persistent_tensors(model, method: str, precision: str, optimizer: str) -> int:
    """Tensors above 10 MiB that live for the whole run (each gets its own segment, rounded to 2 MiB):
    16-bit/4-bit weights, and for full fine-tuning their gradients and optimizer states."""
    d, full = dims(model), method == "full"
    wbytes = 4 if (precision == "fp32" or precision.startswith("amp")) else 2
    big = LARGE_TENSOR_BYTES
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


# ---- one rank of a cell on N processes (runners.parallel) -------------------------------------------
SHARDED_PARALLELS = ("fsdp", "zero2", "zero3")  # FSDP2 in the runner: parameters sharded at rest


def sharded(cfg: RunConfig) -> bool:
    """Whether each rank holds 1/N of the parameters, gradients and optimizer states (FSDP2)."""
    return cfg.gpu.count > 1 and cfg.parallel in SHARDED_PARALLELS


class Tensor(NamedTuple):
    """One parameter tensor (per instance) as FSDP2 shards it: along dim 0, padded to N equal parts."""

    dim0: int
    rest: int  # product of the other dims
    elem: int  # bytes per element
    copies: int  # instances (decoder layers)
    trains: bool
    layer: bool  # inside a decoder layer (else the root: embeddings, final norm, lm_head)

    def shard(self, n: int) -> int:
        """Bytes one rank holds of all instances: ceil(dim0 / n) rows each."""
        return -(-self.dim0 // n) * self.rest * self.elem * self.copies

    @property
    def whole(self) -> int:
        return self.dim0 * self.rest * self.elem * self.copies


def parameter_tensors(cfg: RunConfig, stack: Stack = Stack()) -> list[Tensor]:
    """Every parameter tensor of the model as the runner builds it for cfg (under FSDP, QLoRA's 4-bit
    weights are stored in the compute dtype, packed 2 values a byte, as an (n/2/elem, 1) tensor, and
    the other parameters stay in the compute dtype: no prepare_model_for_kbit_training)."""
    m, model = cfg.method, cfg.model
    d, t = dims(model), traits(model)
    wide = cfg.precision == "fp32" or cfg.precision.startswith("amp")  # fp32 (master) weights
    qlora, shard = m.name == "qlora", sharded(cfg)
    if m.name == "qlora":  # the 16-bit (or upcast) parameters beside the 4-bit ones
        base = (4 if cfg.precision == "fp32" else 2) if shard else (4 if stack.kbit_upcast or wide else 2)
        store = (4 if cfg.precision == "fp32" else 2) if shard else 1  # Params4bit's storage dtype
    else:
        base, store = (4 if wide else 2), 0
    full, r = m.name == "full", m.r or 0
    hit = {(lin.name, lin.part) for lin in targeted(model, m.target_modules)} if m.is_adapter else set()
    out: list[Tensor] = []
    for lin in linear_layers(model):
        if lin.part == "lm_head":
            continue
        n = lin.in_features * lin.out_features
        if lin.experts > 1:
            out.append(Tensor(lin.experts, n, base, lin.count, full, True))
        elif qlora:
            packed = -(-n // 2)
            out.append(Tensor(-(-packed // store), 1, store, lin.count, False, True))
        else:
            d0, rest = (
                (lin.in_features, lin.out_features) if t.conv1d else (lin.out_features, lin.in_features)
            )
            out.append(Tensor(d0, rest, base, lin.count, full, True))
        if lin.bias:
            out.append(Tensor(lin.out_features * lin.experts, 1, base, lin.count, full, True))
        if (lin.name, lin.part) in hit:
            rank = lora_rank(lin, r)
            out.append(Tensor(rank, lin.in_features, stack.adapter_bytes, lin.count, True, True))
            out.append(Tensor(lin.out_features, rank, stack.adapter_bytes, lin.count, True, True))
    norm = 2 if t.layernorm else 1  # LayerNorm: weight and bias
    out.append(Tensor(d.h, 1, base, d.layers * t.norms_per_layer * norm, full, True))
    if t.qk_norm:
        out.append(Tensor(d.head_dim, 1, base, d.layers * 2, full, True))
    out.append(Tensor(d.vocab, d.h, base, 1, full, False))  # token embedding (the lm_head when tied)
    if t.learned_positions:
        out.append(Tensor(model.max_position_embeddings, d.h, base, 1, full, False))
    out.append(Tensor(d.h, 1, base, norm, full, False))  # final norm
    if not d.tied:
        out.append(Tensor(d.vocab, d.h, base, 1, full, False))
    return out


def quant_state_bytes(cfg: RunConfig) -> int:
    """QLoRA's quant_state (absmax, code tables): whole on every rank (bitsandbytes keeps it on the
    Linear4bit module, which FSDP does not shard)."""
    if cfg.method.name != "qlora":
        return 0
    dq = cfg.method.double_quant
    return sum(
        (q4_bytes(n, dq) - n // 2) * lin.count
        for lin in linear_layers(cfg.model)
        if lin.part != "lm_head" and (n := lin.in_features * lin.out_features * lin.experts)
    )


def per_rank_static(cfg: RunConfig, stack: Stack = Stack()) -> dict[str, float]:
    """static_bytes of one rank: as static_bytes under DDP (every rank holds everything) or on one
    process; under FSDP (fsdp, zero2, zero3) each parameter, gradient and optimizer state is this rank's
    padded 1/N shard (FSDP2 pads dim 0 to N equal parts), while QLoRA's quant_state and torch AdamW's
    per-tensor step counters stay whole. Equal to the runner's measured.ranks[*].static_bytes."""
    if not sharded(cfg):
        return static_bytes(cfg, stack)
    n = cfg.gpu.count
    tensors = parameter_tensors(cfg, stack)
    weights = sum(x.shard(n) for x in tensors) + quant_state_bytes(cfg)
    grads = sum(x.shard(n) for x in tensors if x.trains)
    opt = cfg.train.optimizer
    states: float
    if opt == "sgd":
        states = 0.0
    elif opt == "adamw":
        states = 2 * grads + step_counter_bytes(cfg)
    else:  # bitsandbytes' optimizers cannot step FSDP's shards (advisor.config.checks.parallel_problems)
        states = optimizer_bytes(cfg, 4)[0] / n
    return {"weights": weights, "gradients": grads, "optimizer": states, "paged": 0.0}


class Gathered(NamedTuple):
    """What FSDP2 holds whole on a rank beside its shards, per decoder layer and for the root (embeddings,
    final norm, lm_head), in the dtype it gathers them (the compute dtype under mixed precision)."""

    layer: float  # one decoder layer's parameters
    root: float  # the root's parameters: gathered at the first forward, kept through the backward
    layer_grads: float  # one decoder layer's gradients before the reduce-scatter
    root_grads: float  # the root's gradients (lm_head's from the backward's start, the embedding's last)


def gathered(cfg: RunConfig, stack: Stack = Stack()) -> Gathered:
    n, layers = cfg.gpu.count, max(1, dims(cfg.model).layers)
    elem = 4 if cfg.precision == "fp32" else 2  # mixed precision gathers (and computes grads) in 16 bits
    mp = gathers_16bit(cfg)

    def size(x: Tensor) -> float:
        return -(-x.dim0 // n) * n * x.rest * (elem if mp else x.elem) * x.copies

    tensors = parameter_tensors(cfg, stack)
    return Gathered(
        layer=sum(size(x) for x in tensors if x.layer) / layers,
        root=sum(size(x) for x in tensors if not x.layer),
        layer_grads=sum(size(x) for x in tensors if x.layer and x.trains) / layers,
        root_grads=sum(size(x) for x in tensors if not x.layer and x.trains),
    )

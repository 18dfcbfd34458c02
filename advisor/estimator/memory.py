"""Peak memory of one training process: named components in bytes, the phase-wise peak, and the three
numbers a user compares with (estimator-notes §1): allocated (live tensors), reserved (caching
allocator), device (what nvidia-smi shows; on CPU: process RSS).

peak = weights + optimizer states + max(forward_end, backward, optimizer_step)   (estimator-notes §5)

One rank of a cell on N processes (the runner's runners.parallel), phase by phase:
- DDP: every rank holds the whole model; its gradients are views of DDP's buckets, which live for the
  whole run (held in every phase, not only with gradient accumulation).
- FSDP2 (fsdp, zero3): each rank holds 1/N of the parameters, gradients and optimizer states
  (static.per_rank_static, exact). The root's parameters (embeddings, final norm, lm_head) are gathered
  at the first forward and kept to the end of the backward; a decoder layer is gathered for its forward
  and freed after it, gathered again (and the next one prefetched) for its backward; its gradients form
  during that backward (at the MLP, where most activations are alive, only the output projection's
  exists), and once it is done the layer is resharded and its whole gradients and their reduce-scatter
  copy live until they are scattered into the shards (the copy is kept until the next layer's
  reduce); the root's gradients stay whole until the backward ends. Mixed precision gathers in the
  compute dtype, one layer at a time — no autocast copy of all weights on every GPU
  (static.gathers_16bit).
- zero2: FSDP2 keeping every gathered layer from its forward to its backward.
Checked against the runner's per-rank live bytes on CPU (tests/sweep/test_multigpu_peaks.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from advisor.config.schema import RunConfig
from advisor.estimator.activations import (
    Regime,
    attn_grad_bytes_per_token_per_pos,
    first_layer_unsaved,
    head_bytes_per_token,
    head_freed_bytes_per_token,
    input_leaf_bytes_per_token,
    layer_bytes_per_token,
    layer_constant_bytes,
    mask_bytes_per_token_per_pos,
    norm_backward_bytes_per_token,
    pos_bytes_per_token,
    position_bytes_per_pos,
)
from advisor.estimator.arch import by_identity, dims, traits
from advisor.estimator.params import linear_layers, n_trainable, param_split
from advisor.estimator.static import (  # noqa: F401  (re-exported: Stack, regime, static_bytes, q4_bytes)
    Stack,
    _large_persistent_tensors,
    _weight_bytes,
    gathered,
    gathers_16bit,
    optimizer_bytes,
    per_rank_static,
    q4_bytes,
    regime,
    sharded,
    static_bytes,
)

GIB = 2**30
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
    # at the end of the forward: saved for backward (+ autocast copies), and logits/loss tensors
    forward_saved: float = 0.0
    forward_logits: float = 0.0

    def gib(self) -> dict[str, float]:
        """The row's memory block. allocated = weights + gradients + optimizer (less paged) +
        activations + logits + temporaries; device = allocated + overhead + paged states."""
        r = lambda b: round(b / GIB, 3)  # noqa: E731
        return {
            "weights_gib": r(self.weights),
            "gradients_gib": r(self.gradients),
            "optimizer_gib": r(self.optimizer),
            "activations_gib": r(self.activations),
            "logits_gib": r(self.logits),
            "temporaries_gib": r(self.temporaries),
            "overhead_gib": r(self.device - self.allocated - self.paged),
            "allocated_gib": r(self.allocated),
            "reserved_gib": r(self.reserved),
            "device_gib": r(self.device),
        }


@by_identity()
def _layer_const(model, g: Regime, targets) -> float:
    return layer_constant_bytes(model, g, targets)


@by_identity()
def _head_total(model, g: Regime, lm_head_trains: bool) -> float:
    return head_bytes_per_token(model, g, lm_head_trains)


@by_identity()
def _largest_layer_weight(model) -> int:
    return max(x.in_features * x.out_features for x in linear_layers(model) if x.part != "lm_head")


class _Fixed(NamedTuple):
    """What memory() needs that does not depend on the sequence length or batch size."""

    g: Regime
    pbytes: int  # bytes per trainable parameter (and its gradient)
    weights: float
    grads: float
    opt: float
    paged: float
    layer: float  # saved bytes per token per layer
    layer_after_attn: float  # of which saved from o_proj on (freed when the backward reaches attention)
    pos: float  # saved bytes per token per layer per key position
    mask_pos: float  # the shared attention mask, bytes per token per key position
    position: float  # RoPE cos/sin or position ids, bytes per sequence position (shared by the batch)
    head: float  # saved bytes per token outside the layers (final norm, lm_head input, ids)
    leaf: float  # checkpointing: the embedding output kept as a leaf beside layer 0's input (GPT-2)
    first_unsaved: float  # adapters: what layer 0 does not save before its first adapter, per token
    head_freed: tuple[float, float]  # the head's saved bytes freed before the final norm's / layers' backward
    norm_bwd: float  # the final norm's backward transients, per token
    mlp_out: float  # saved by the MLP's output projection (freed by its backward), per token
    mlp_out_grads: float  # full fine-tuning: the MLP output projection's weight gradient (bytes)
    pending_grads: float  # full fine-tuning: gradients not yet formed at the first layer's MLP backward
    attn_grad: float  # eager attention's backward over its scores, bytes per token per key position
    amp_cache: float  # autocast's 16-bit weight copies
    const: float  # saved bytes per layer independent of tokens (MoE LoRA)
    large: int  # persistent tensors above 10 MiB
    q4_largest: int  # elements of the largest layer weight (what one 4-bit matmul dequantizes)
    final_softcap: bool
    n_train: int


_FIXED: dict[tuple, tuple[object, object, _Fixed]] = {}


def _fixed(cfg: RunConfig, stack: Stack) -> _Fixed:
    """Cached on the model and stack objects and the few config values that matter (the frozen
    dataclasses' own hashes are too slow for ≥ 10,000 estimates per second)."""
    m, t = cfg.method, cfg.train
    key = (
        id(cfg.model),
        id(stack),
        m.name,
        m.r,
        m.target_modules,
        m.dropout > 0,
        m.double_quant,
        cfg.precision,
        t.attention,
        t.optimizer,
        t.packing or t.micro_batch_size > 1,
        cfg.gpu.is_cpu,
        sharded(cfg),  # FSDP's recipe and mixed precision change dtypes (static.regime)
    )
    hit = _FIXED.get(key)
    if hit is not None and hit[0] is cfg.model and hit[1] is stack:
        return hit[2]
    if len(_FIXED) > 8192:
        _FIXED.clear()
    model, g = cfg.model, regime(cfg, stack)
    saved = layer_bytes_per_token(model, g, m.target_modules, m.r or 0)  # one layer's, per token
    layer = float(sum(saved.values()))
    wide = cfg.precision == "fp32" or g.amp
    pbytes = (4 if wide else 2) if g.full else g.adapter  # trainable params' dtype
    opt, paged = optimizer_bytes(cfg, pbytes)
    n_train = n_trainable(cfg)
    d = dims(model)
    mlp_out_grads = pending = 0.0
    if g.full and d.experts == 1:  # (MoE: the fused experts' gradients are not split out: all counted)
        ps = param_split(model)
        final_norm = d.h * (2 if traits(model).layernorm else 1)
        per_layer = (ps.total - ps.embedding - ps.lm_head - final_norm) / d.layers
        tied_emb = d.vocab * d.h if d.tied else 0  # the tied embedding's gradient comes with the lm_head's
        mlp_out_grads = float(d.h * d.i * pbytes)
        pending = (per_layer - d.h * d.i + ps.embedding - tied_emb) * pbytes
    f = _Fixed(
        g=g,
        pbytes=pbytes,
        weights=_weight_bytes(cfg, g, stack),
        grads=n_train * pbytes,
        opt=opt,
        paged=paged,
        layer=layer,
        layer_after_attn=layer - saved.before_o_proj,
        pos=pos_bytes_per_token(model, g),
        mask_pos=mask_bytes_per_token_per_pos(model, g),
        position=position_bytes_per_pos(model, g),
        head=_head_total(model, g, g.full),
        leaf=input_leaf_bytes_per_token(model, g),
        first_unsaved=first_layer_unsaved(saved, g),
        head_freed=head_freed_bytes_per_token(model, g, g.full),
        norm_bwd=norm_backward_bytes_per_token(model, g),
        mlp_out=saved.mlp_out,
        mlp_out_grads=mlp_out_grads,
        pending_grads=pending,
        attn_grad=attn_grad_bytes_per_token_per_pos(model, g),
        amp_cache=2.0 * (param_split(model).linear_weights + (n_train if g.adapter else 0)) if g.amp else 0.0,
        const=_layer_const(model, g, m.target_modules),
        large=_large_persistent_tensors(model, m.name, cfg.precision, t.optimizer),
        q4_largest=_largest_layer_weight(model),
        final_softcap=traits(model).final_softcap,
        n_train=n_train,
    )
    _FIXED[key] = (model, stack, f)
    return f


def memory(cfg: RunConfig, padded_len: int, stack: Stack = Stack()) -> Memory:
    """Per-process (per-GPU) peak memory for micro-batches of `padded_len` tokens per sequence."""
    train = cfg.train
    f = _fixed(cfg, stack)
    g, d = f.g, dims(cfg.model)
    n_gpu, par = cfg.gpu.count, cfg.parallel
    tokens = train.micro_batch_size * padded_len
    pbytes, weights, grads, opt, paged = f.pbytes, f.weights, f.grads, f.opt, f.paged
    # ---- activations (per token) -----------------------------------------------------------------
    layer = f.layer + f.pos * padded_len
    # + per position: RoPE cos/sin or position ids, shared by the batch ((1, s) position ids) — except
    # for packed rows, whose restarting position ids are (b, s): one cos/sin row per token
    head = f.head + (f.position if train.packing else f.position / train.micro_batch_size)
    if train.gradient_checkpointing:  # + the embedding output made a leaf by enable_input_require_grads
        head += f.mask_pos * padded_len + f.leaf
    const, amp_cache = f.const, f.amp_cache
    lm_head_trains = g.full
    if train.gradient_checkpointing:
        saved = tokens * (d.layers * g.res * d.h + head)  # each layer's input (+ head)
        recompute = tokens * layer + const  # one layer's full activations while it is recomputed
    else:
        # adapters on a frozen embedding: layer 0 saves nothing before its first adapter
        saved = tokens * (d.layers * layer + head - f.first_unsaved) + d.layers * const
        recompute = 0.0
    lm_head_q4 = cfg.method.name == "qlora" and stack.lm_head_4bit and not d.tied
    if lm_head_q4 and g.q4_saves_input:  # the 4-bit lm_head saves its input (the final norm's output)
        saved += tokens * g.res * d.h
    acts = saved + amp_cache
    # backward transients at the last layer's MLP, once the backward has freed the head's saved tensors
    # and the output projection's input (its backward has run): the gradients of the product, gate and
    # up beside the residual stream's gradient (measured op by op on CPU: tests/sweep/test_multigpu_peaks.py)
    i_eff = d.i * (2 if d.experts == 1 else 2 * d.active_experts)
    transient = tokens * (3 * g.cmp * i_eff / 2 + g.res * d.h)
    # QLoRA: a 4-bit matmul dequantizes its weight for the forward and again for the backward; the
    # largest layer weight's copy is live in the output projection's backward, beside its input gradient
    # and the adapter's (and the 4-bit lm_head's beside everything saved, when its backward runs first)
    deq = deq_head = 0.0
    if cfg.method.name == "qlora":
        deq = stack.dequant_bytes * f.q4_largest
        deq_head = stack.dequant_bytes * d.vocab * d.h if lm_head_q4 else 0.0
        transient = max(transient, tokens * (g.cmp * i_eff + g.res * d.h) + deq)
    # the final norm's backward: everything saved but the lm_head's input, the kept logits, the norm's
    # backward transients
    head_acts = acts - tokens * f.head_freed[0]
    norm_t = tokens * f.norm_bwd
    # ---- logits and loss (estimator-notes §4) ----------------------------------------------------
    lb = 4 if (g.cmp == 4 or stack.lm_head_fp32 or cfg.precision == "fp32") else 2
    kept = lb * d.vocab * tokens if stack.logits_kept else 0.0
    kept_layers = kept  # what stays of them while the backward runs through the layers
    if f.final_softcap:  # Gemma-2: tanh(logits / cap) * cap — tanh saves its output (freed by its backward)
        kept += lb * d.vocab * tokens
    if train.chunked_loss:  # chunked CE in the logits dtype: per-chunk log-softmax, no fp32 copies
        logits_fwd = kept + lb * d.vocab * tokens
        logits_bwd = logits_fwd
    else:  # fp32 copy (freed) → log-softmax output (saved, fp32); backward: nll grad + lsm grad
        logits_fwd = kept + 4 * d.vocab * tokens
        logits_bwd = logits_fwd + 8 * d.vocab * tokens
    # ---- phases ----------------------------------------------------------------------------------
    accum = train.grad_accum > 1
    g_head = d.vocab * d.h * pbytes if lm_head_trains else 0.0
    # torch's foreach AdamW allocates one parameter-sized temporary (sqrt of exp_avg_sq) per step, over
    # the parameters this process updates (its shard under FSDP)
    # (the runner's CPU AdamW is the fused kernel: no temporaries)
    foreach = train.optimizer == "adamw" and not cfg.gpu.is_cpu
    unsaved0 = 0.0 if train.gradient_checkpointing else tokens * f.first_unsaved
    last = recompute or tokens * layer + const - unsaved0  # the first layer's activations, its backward last
    # in a layer's backward, at its MLP: its output projection's input is freed (that backward has run)
    layer_drop, layer_t = tokens * f.mlp_out, transient
    if f.attn_grad:  # eager attention: a layer's backward at its softmax, once the MLP, the norms after
        # attention and o_proj have run theirs (their saved tensors freed), holds O(s²) fp32 gradients
        attn_t = tokens * (f.attn_grad * padded_len + 2 * g.res * d.h)
        if attn_t - tokens * f.layer_after_attn > transient - layer_drop:  # the layer's peak is there
            layer_drop, layer_t = tokens * f.layer_after_attn, attn_t
    drop = tokens * f.head_freed[1] + layer_drop  # and the head's saved tensors are freed by then
    # (gathered parameters, gradients, activations, logits, temporaries) live in each phase
    parts: dict[str, tuple[float, float, float, float, float]]
    if sharded(cfg):  # FSDP2 (fsdp, zero3; zero2 keeps every layer gathered to its backward)
        st, gat = per_rank_static(cfg, stack), gathered(cfg, stack)
        weights, grads, opt, paged = st["weights"], st["gradients"], st["optimizer"], 0.0
        held = gat.root + (d.layers * gat.layer if par == "zero2" else 0.0)  # gathered from the forward on
        one = 0.0 if par == "zero2" else gat.layer  # a layer gathered again for its backward
        g_acc = grads if accum else 0.0  # sharded gradients accumulate across micro-batches
        # the lm_head's whole gradient (in the compute dtype), from the backward's start
        head = d.vocab * d.h * (2 if gathers_16bit(cfg) else pbytes) if lm_head_trains else 0.0
        step_tmp = grads if foreach else 0.0
        # the MLP output projection's whole gradient, the first a layer's backward forms (in the
        # gathered dtype)
        mlp_g = f.mlp_out_grads * (2 / pbytes if gathers_16bit(cfg) else 1.0)
        # once a layer's backward is done: its activations freed (recomputed ones, or its saved ones)
        layer_freed = recompute if train.gradient_checkpointing else tokens * layer + const
        # a layer's reduce-scatter copy, kept until the next layer's reduce; the gradient shards once
        # one layer is reduced
        prev_rs = gat.layer_grads if d.layers > 1 else 0.0
        shards_one = g_acc or gat.layer_grads / n_gpu
        # between two layers' backward: the last one's and the head's saved tensors freed; the residual
        # stream's gradient
        between = acts + recompute - tokens * f.head_freed[1] - layer_freed
        resid_grad = tokens * g.res * d.h
        parts = {
            "forward_end": (held, g_acc, acts, logits_fwd, deq_head),
            # the last layer is gathered as the backward begins (FSDP prefetches it)
            "backward_start": (held + one, g_acc + head, acts, logits_bwd, deq_head),
            "backward_head": (held + one, g_acc + head, head_acts, kept_layers, norm_t),
            # the last layer's MLP backward (most activations alive): it and the next one gathered
            # (the backward prefetch), the gradients formed so far
            "backward_layers": (
                held + 2 * one,
                g_acc + head + mlp_g,
                acts + recompute - drop,
                kept_layers,
                layer_t,
            ),
            # the last layer's backward done: resharded, the next one gathered; its whole gradients
            # and their reduce-scatter copy, the residual stream's gradient
            "backward_reduce": (
                held + one,
                g_acc + head + 2 * gat.layer_grads,
                between,
                kept_layers,
                resid_grad,
            ),
            # the next layer gathered as its backward begins (copied out of the all-gather's buffer):
            # the last one's activations freed, its reduce-scatter copy kept until this layer's reduce
            # and its shards formed, the residual stream's gradient
            "backward_next_gather": (
                held + 2 * one,
                shards_one + head + prev_rs,
                between,
                kept_layers,
                resid_grad,
            ),
            # that layer's MLP backward (no layer before it to prefetch when it is layer 0)
            "backward_next": (
                held + (2 if d.layers > 2 else 1) * one,
                shards_one + head + mlp_g + prev_rs,
                acts + recompute - drop - layer_freed,
                kept_layers,
                layer_t,
            ),
            # the first layer's backward: every shard of the gradients, the root's whole (and their
            # copy), the previous layer's reduce-scatter copy
            "backward_end": (
                held + one,
                grads + 2 * gat.root_grads + prev_rs,
                last - layer_drop,
                0.0,
                layer_t,
            ),
            "optimizer_step": (0.0, grads, 0.0, 0.0, step_tmp),
        }
    else:
        # DDP (the runner's gradient_as_bucket_view): the gradients are views of its buckets, which
        # live for the whole run; one process frees them after every step
        ddp = n_gpu > 1 and par == "ddp"
        g0 = grads if accum or ddp else g_head
        step_tmp = f.n_train * pbytes if foreach else 0.0
        parts = {
            "forward_end": (0.0, g0, acts, logits_fwd, deq_head),
            "backward_start": (0.0, max(g0, g_head), acts, logits_bwd, deq_head),
            "backward_head": (0.0, max(g0, g_head), head_acts, kept_layers, norm_t),
            # the last layer's MLP backward: the head's and its output projection's gradients so far
            "backward_layers": (
                0.0,
                max(g0, g_head + f.mlp_out_grads),
                acts + recompute - drop,
                kept_layers,
                layer_t,
            ),
            # the first layer's MLP backward: the gradients of the rest of it (and of an untied
            # embedding) are not formed yet — unless they live all along (DDP buckets, accumulation)
            "backward_end": (
                0.0,
                grads if g0 == grads else grads - f.pending_grads,
                last - layer_drop,
                0.0,
                layer_t,
            ),
            "optimizer_step": (0.0, grads, 0.0, 0.0, step_tmp),
        }
    phases = {k: sum(v) for k, v in parts.items()}
    phase = max(phases, key=phases.__getitem__)
    allocated = weights + opt + phases[phase]
    if cfg.gpu.is_cpu:
        reserved, device = allocated, allocated + paged + CPU_PROCESS_GIB * GIB
    else:
        frac = RESERVED_FRACTION_FIXED if train.packing else RESERVED_FRACTION_VARIABLE
        reserved = allocated + frac * phases[phase] + STATIC_ROUNDING_BYTES * f.large
        device = reserved + (CUDA_CONTEXT_GIB + CUBLAS_WORKSPACE_GIB) * GIB + paged
    w_peak, g_peak, a_peak, l_peak, t_peak = parts[phase]
    return Memory(
        weights=weights + w_peak,
        gradients=g_peak,
        optimizer=opt + paged,
        activations=a_peak,
        logits=l_peak,
        temporaries=t_peak,
        allocated=allocated,
        reserved=reserved,
        device=device,
        paged=paged,
        peak_phase=phase,
        precision=cfg.precision,
        forward_saved=acts,
        forward_logits=logits_fwd,
    )

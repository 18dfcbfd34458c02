"""Activation memory: the tensors autograd saves for backward, per token, derived op by op.

Each decoder layer is walked as transformers 5 runs it; every tensor an op saves for its backward is
put in a dict under a name, so a tensor saved by several ops (the norm output feeding q, k and v) is
counted once. Rules used throughout (PyTorch autograd formulas):
- `F.linear(x, W)` saves x only when W needs a gradient (full fine-tuning); a frozen Linear saves
  nothing but its weight. bitsandbytes' 4-bit matmul (>= 0.43.2) saves no input when frozen.
- `a * b` saves a when b needs a gradient and b when a does; multiplying by a Python scalar saves
  nothing; add, view, transpose, `.to()` save nothing.
- RMSNorm (HF LlamaRMSNorm): `x.to(fp32)` → pow/mul save the fp32 copy (the input itself when it
  already is fp32) and rsqrt (1 value per token); `weight * normed` saves normed when the weight trains.
- SiLU/GELU(tanh) save their input; `act(gate) * up` saves act(gate) and up.
- SDPA / flash (memory-efficient and flash kernels) save q, k, v, the output and an fp32 log-sum-exp per
  head. With a padding or packing mask transformers' `sdpa_attention_forward` expands k/v to all heads
  (`repeat_kv`) before the call, so the saved k/v are query-sized; flash-attention handles GQA natively.
- Eager attention saves the fp32 softmax output and its 16-bit copy (heads × s per token) on top.
- PEFT LoRA (`lora.Linear.forward`): x is cast to the adapter dtype (fp32 by default; a new tensor
  unless x already has it), dropout saves a 1-byte mask and lora_A saves the dropped input; without
  dropout lora_A saves the cast input; lora_B saves lora_A's output (r values). Dropout masks are
  1 byte on CUDA (fused kernel) and in the input dtype on CPU. Under autocast every Linear saves a
  16-bit cast of its input (a new copy per call) and the 16-bit weight copies live until backward.
- SDPA/flash kernels write their output in (b, s, heads·head_dim) layout, so o_proj's input is the
  saved output itself; eager attention (and CPU SDPA handed Phi-3's strided v) copies it.
Checked exactly against `torch.autograd.graph.saved_tensors_hooks` on tiny real models on CPU
(tests/advisor/test_memory_real.py: Llama, Qwen2/3, Gemma-2, Phi-3, GPT-2, Mixtral; full, LoRA with and
without dropout, QLoRA with and without kbit upcast, bf16/fp32/amp) and within 2.5 % of the CUDA-
faithful fake-tensor trace (runners/trace/compare.py, docs/trace-vs-analytic.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from advisor.config.schema import ModelConfig
from advisor.estimator.arch import by_identity, dims, traits
from advisor.estimator.params import targeted


@dataclass(frozen=True)
class Regime:
    """Dtypes and switches that decide what autograd saves (element sizes in bytes)."""

    full: bool  # base weights train (full fine-tuning)
    res: int  # residual stream / norm outputs (2 = bf16/fp16, 4 = fp32 master or kbit-upcast)
    cmp: int  # Linear outputs and MLP/attention intermediates
    amp: bool  # autocast: Linear inputs are cast to 16-bit per call (a new copy when they are fp32)
    adapter: int  # LoRA matrices' element size (0 = no adapters)
    dropout: bool  # LoRA dropout > 0
    attention: str  # sdpa | flash | eager
    gqa_expand: bool  # k/v expanded to all query heads before attention
    masked: bool  # SDPA gets an attention mask (padding or packing)
    q4_saves_input: bool  # frozen 4-bit matmuls save their input (bitsandbytes < 0.43.2)
    mask: int  # bytes per dropout-mask element: 1 (CUDA fused dropout, bool) or the input's dtype (CPU)


class Saved(dict):
    """name → bytes per token; `put` keeps the first size for a name (shared tensors count once).
    `before_o_proj`: the bytes saved before the attention output projection (forward order) — what is
    still alive of a layer's saved tensors when its backward reaches the attention core.
    `first_adapter`: how many entries were put before the first LoRA adapter's (forward order), and
    `adapter_inputs` the names adapters saved as their input — what `first_layer_unsaved` needs.
    `mlp_out`: the bytes the MLP's output projection saved (freed once its backward has run)."""

    before_o_proj: float = 0.0
    first_adapter: int | None = None
    mlp_out: float = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.adapter_inputs: set[str] = set()

    def put(self, name: str, nbytes: float) -> str:
        self.setdefault(name, nbytes)
        return name


def _norm(s: Saved, tag: str, x: str, width: int, t, g: Regime, trainable: bool) -> str:
    """One norm on tensor `x` (dtype g.res); returns the name of its output (dtype g.res)."""
    if t.layernorm:  # native_layer_norm saves its input, mean and rstd (its weight grad needs no more)
        s.put(x, g.res * width)
        s.put(f"{tag}.stats", 2 * g.res)
        return f"{tag}.out"
    s.put(x if g.res == 4 else f"{tag}.x32", 4 * width)  # RMSNorm: fp32 copy (or x itself), rsqrt
    s.put(f"{tag}.rsqrt", 4)
    if trainable:  # weight * normed saves normed (Gemma: fp32, before type_as); the output is new
        s.put(f"{tag}.normed", (4 if t.gemma_norm else g.res) * width)
    return f"{tag}.out"


def _linear(s: Saved, g: Regime, x: str, x_bytes: int, name: str, in_f: int, r: int, lora: bool) -> None:
    """Saved inputs of one Linear (+ its LoRA adapter) reading tensor `x` of `x_bytes` per element."""
    if g.full:
        if g.amp and x_bytes != 2:  # autocast casts the fp32 input per call: a new 16-bit copy
            s.put(f"{name}.in16", 2 * in_f)
        else:
            s.put(x, x_bytes * in_f)
    elif g.q4_saves_input:  # bitsandbytes < 0.43.2: MatMul4Bit saved its (16-bit) input regardless
        s.put(x if x_bytes == 2 else f"{name}.in16", 2 * in_f)
    if lora and s.first_adapter is None:
        s.first_adapter = len(s)
    if lora and not g.amp and not g.dropout and g.adapter == x_bytes:
        s.adapter_inputs.add(x)  # lora_A saves the input itself (no cast, no dropout)
    if lora and g.amp:  # autocast casts the adapter's input to 16-bit per call: lora_A saves that copy
        if g.dropout:
            s.put(f"{name}.lora_mask", (g.mask if g.mask == 1 else g.adapter) * in_f)
        s.put(f"{name}.lora_in16", 2 * in_f)
        s.put(f"{name}.lora_mid", 2 * r)
    elif lora:
        a = g.adapter
        if g.dropout:
            s.put(f"{name}.lora_mask", (g.mask if g.mask == 1 else a) * in_f)
            s.put(f"{name}.lora_in", a * in_f)
        else:
            s.put(x if a == x_bytes else f"{name}.lora_in", a * in_f)
        s.put(f"{name}.lora_mid", a * r)


@by_identity()
def layer_bytes_per_token(model: ModelConfig, g: Regime, targets: str | tuple[str, ...], r: int) -> Saved:
    """Saved bytes per token of one decoder layer (attention scores of eager attention excluded)."""
    t, d = traits(model), dims(model)
    hit = (
        {lin.name + ("@mlp" if lin.part == "mlp" else "") for lin in targeted(model, targets)}
        if g.adapter
        else set()
    )
    s = Saved()
    res = g.res
    ln = _norm(s, "norm1", "x0", d.h, t, g, g.full)
    # attention projections read the norm output
    if t.fused_qkv:
        _linear(
            s,
            g,
            ln,
            res,
            "qkv_proj" if not t.conv1d else "c_attn",
            d.h,
            r,
            bool(hit & {"qkv_proj", "c_attn"}),
        )
    else:
        for name in ("q_proj", "k_proj", "v_proj"):
            _linear(s, g, ln, res, name, d.h, r, name in hit)
    _attention(s, g, t, d, r, hit)
    if t.norms_per_layer == 4:  # Gemma: post-attention norm on the attention output, before the add
        _norm(s, "norm_pa", "o_out", d.h, t, g, g.full)
    ln2 = _norm(s, "norm2", "x1", d.h, t, g, g.full)
    _mlp(s, g, t, d, ln2, hit, r)
    if t.norms_per_layer == 4:
        _norm(s, "norm_pf", "mlp_out", d.h, t, g, g.full)
    return s


def _attention(s: Saved, g: Regime, t, d, r: int, hit: set[str]) -> None:
    c = g.cmp
    if t.conv1d and g.mask != 1:  # GPT-2 on CPU (measured): fp32 q/k/v and scores with attn dropout
        for name in ("q", "k", "v"):
            s.put(name, 4 * d.q)
        _linear(s, g, "o_in", c, "c_proj", d.q, r, "c_proj" in hit)
        s.put("resid_drop1", g.mask * d.h)
        return
    if t.conv1d:  # GPT-2 on CUDA: SDPA (dropout inside the kernel) on views of the c_attn output
        s.put("qkv", c * (d.q + 2 * d.kv))
        s.put("attn_out", c * d.q)
        s.put("lse", 4 * d.heads)
        _linear(s, g, "attn_out", c, "c_proj", d.q, r, "c_proj" in hit)
        s.put("resid_drop1", g.mask * d.h)
        return
    if t.qk_norm:  # RMSNorm over head_dim on q and k (outputs feed RoPE, which saves only cos/sin)
        s.put("q.x32" if c == 2 else "q.raw", 4 * d.q)
        s.put("k.x32" if c == 2 else "k.raw", 4 * d.kv)
        s.put("qk.rsqrt", 4 * (d.heads + d.kv_heads))
        if g.full:
            s.put("q.normed", c * d.q)
            s.put("k.normed", c * d.kv)
    s.put("q_rot", c * d.q)  # RoPE: q*cos + rotate_half(q)*sin → new q, k (cos/sin shared by layers)
    if g.gqa_expand and d.kv < d.q:
        s.put("k_rep", c * d.q)
        s.put("v_rep", c * d.q)
    else:
        s.put("k_rot", c * d.kv)
        if t.fused_qkv and g.mask == 1:  # CUDA SDPA takes the strided v slice: the qkv output stays alive
            s.put("qkv", c * (d.q + 2 * d.kv))
        else:  # CPU SDPA makes the strided v slice contiguous (own copy)
            s.put("v", c * d.kv)
    if g.attention != "eager":  # SDPA/flash save their output and an fp32 log-sum-exp per head
        s.put("attn_out", c * d.q)
        s.put("lse", 4 * d.heads)
    # o_proj reads the attention output as (b, s, heads·head_dim): SDPA/flash kernels allocate their
    # output in that layout already (`.transpose(1, 2).contiguous()` is a no-op); eager copies it, and
    # so does SDPA when it was handed a strided v (fused qkv_proj)
    o_in = "o_in" if g.attention == "eager" or t.fused_qkv else "attn_out"
    s.before_o_proj = float(sum(s.values()))
    _linear(s, g, o_in, c, "o_proj", d.q, r, "o_proj" in hit)


def _mlp(s: Saved, g: Regime, t, d, x: str, hit: set[str], r: int) -> None:
    c, res = g.cmp, g.res
    if t.moe:  # router (fp32 softmax + top-k: small) and the routed tokens' expert MLPs
        _linear(s, g, x, res, "gate", d.h, r, "gate" in hit)
        s.put("router", 8 * d.experts)
        k = d.active_experts
        lora_exp = bool(hit & {"gate_up_proj", "down_proj"})
        s.put("exp.gate_up", c * 2 * d.i * k)  # SiLU saves the gate half: a view of the gate_up output
        s.put("exp.act", c * d.i * k)
        s.put("exp.down_out", c * d.h * k)  # × routing weight saves it
        if g.full or lora_exp:  # expert weights need a gradient: their inputs are saved
            s.put("exp.in", c * d.h * k)
            s.put("exp.prod", c * d.i * k)
        return
    if not t.gated_mlp:  # GPT-2: c_fc → gelu_new (python tanh formula) → c_proj
        _linear(s, g, x, res, "c_fc", d.h, r, "c_fc@mlp" in hit)
        s.put("fc_out", c * d.i)
        for name in ("gelu.tanh", "gelu.half_x", "gelu.one_plus"):
            s.put(name, c * d.i)
        n = float(sum(s.values()))
        _linear(s, g, "act", c, "c_proj@mlp", d.i, r, "c_proj@mlp" in hit)
        s.mlp_out = float(sum(s.values())) - n
        s.put("resid_drop2", g.mask * d.h)
        return
    if t.fused_gate_up:
        _linear(s, g, x, res, "gate_up_proj", d.h, r, "gate_up_proj@mlp" in hit)
    else:
        for name in ("gate_proj", "up_proj"):
            _linear(s, g, x, res, name, d.h, r, f"{name}@mlp" in hit)
    s.put("gate", c * d.i)  # activation input
    s.put("up", c * d.i)  # saved by act(gate) * up
    s.put("act", c * d.i)
    n = float(sum(s.values()))
    _linear(s, g, "prod", c, "down_proj", d.i, r, "down_proj@mlp" in hit)
    s.mlp_out = float(sum(s.values())) - n


def layer_constant_bytes(model: ModelConfig, g: Regime, targets: str | tuple[str, ...]) -> float:
    """Saved bytes per layer that do not scale with tokens. PEFT 0.21 applies LoRA to fused 3-D expert
    weights (ParamWrapper) by materializing W + B·A per forward; the merged weights (all experts, in the
    compute dtype) are saved for the input gradient, and the adapters' 16-bit casts beside them."""
    t, d = traits(model), dims(model)
    if not (t.moe and g.adapter) or not any(lin.part == "experts" for lin in targeted(model, targets)):
        return 0.0
    return float(g.cmp * d.experts * 3 * d.h * d.i)


def pos_bytes_per_token(model: ModelConfig, g: Regime) -> float:
    """Saved bytes per token per key position (× padded length) of one layer.

    Eager: the fp32 softmax output and its 16-bit copy (saved by probs @ v); Gemma-2 adds the tanh
    output of attention-logit soft-capping. SDPA with a mask: the boolean mask is converted to an
    additive float mask (b, 1, s, s) per call and saved. GPT-2: fp32 softmax, dropout mask and output.
    """
    t, d, c = traits(model), dims(model), g.cmp
    if t.conv1d and g.mask != 1:
        return d.heads * (4 + 4 + 4)
    if g.attention == "eager":
        return d.heads * (4 + (c if c != 4 else 0) + (c if t.attn_softcap else 0))
    return float(c) if g.masked and g.attention == "sdpa" else 0.0


def head_bytes_per_token(model: ModelConfig, g: Regime, lm_head_trains: bool) -> float:
    """Final norm + lm_head input + embedding indices, per token (logits are counted separately)."""
    t, d = traits(model), dims(model)
    s = Saved()
    ln = _norm(s, "norm_f", "xL", d.h, t, g, g.full)
    if lm_head_trains:
        s.put(ln, g.res * d.h)
    s.put("input_ids", 8)
    s.put("labels", 8)  # int64 targets saved by the loss
    if t.learned_positions:  # GPT-2: dropout on the embedding sum keeps its mask
        s.put("embd_drop", g.mask * d.h)
    return float(sum(s.values()))


def position_bytes_per_pos(model: ModelConfig, g: Regime) -> float:
    """Per sequence position, shared by the batch (position_ids are (1, s)): RoPE's cos and sin
    (head_dim each, compute dtype), or GPT-2's int64 position ids saved by the wpe lookup."""
    t, d = traits(model), dims(model)
    return 8.0 if t.learned_positions else float(2 * d.head_dim * g.cmp)


def mask_bytes_per_token_per_pos(model: ModelConfig, g: Regime) -> float:
    """The (b, 1, s, s) attention mask transformers builds once per forward, as checkpointed layers keep
    it (an input of every layer): boolean for SDPA with padding/packing, a 16-bit additive mask for
    eager attention, none for flash-attention or unmasked SDPA. Without checkpointing no op saves it
    (SDPA saves its own float copy per layer: pos_bytes_per_token)."""
    masks = 2 if traits(model).sliding_window else 1  # Gemma: a sliding-window mask beside the causal one
    if g.attention == "eager":
        return float(g.cmp * masks)
    return float(masks) if g.masked and g.attention == "sdpa" else 0.0


def input_leaf_bytes_per_token(model: ModelConfig, g: Regime) -> float:
    """The input embedding's output kept beside the first layer's input, per token, with gradient
    checkpointing on a frozen embedding (adapters).

    transformers' checkpointing (`activation_checkpointing_enable`, also reached through PEFT's
    `prepare_model_for_kbit_training`) calls `enable_input_require_grads`: a forward hook on the input
    embedding does `output.requires_grad_(True)`, so with the embedding frozen its output is a *leaf*
    requiring grad, and the leaf's AccumulateGrad node (referenced by the graph) holds it until the
    graph is freed. Where that output is the first decoder layer's input (Llama, Qwen, Phi-3, Mistral;
    Gemma scales inside its embedding module, so the hooked output is already the scaled one) it is
    the first checkpointed layer input, counted already. GPT-2 adds the position embeddings (wte + wpe)
    and applies dropout first, so the leaf (residual dtype: fp32 after the kbit upcast) is one more
    b·s·h tensor. Full fine-tuning: the output has a grad_fn (not a leaf); embedding saves only ids."""
    if g.full or not traits(model).learned_positions:
        return 0.0
    return float(g.res * dims(model).h)


def attn_grad_bytes_per_token_per_pos(model: ModelConfig, g: Regime) -> float:
    """Backward transient of eager attention over its scores, per token per key position, on top of
    the layer's saved activations (pos_bytes_per_token) — the backward's peak inside a layer at long
    sequence lengths. At `_softmax_backward_data` these O(s²) tensors are live: the saved fp32 softmax
    output (and Gemma-2's saved soft-capping tanh output), the incoming gradient of the probabilities
    in fp32 (the backward of `.to(query.dtype)` upcasts the 16-bit gradient the matmul wrote; with fp32
    compute the matmul's own gradient) and the softmax backward's fp32 output: 4 + 4 bytes per head
    more than saved, less the 16-bit probabilities copy, freed once `probs @ v`'s backward has run.
    SDPA / flash kernels keep no O(s²) tensors (their backward recomputes the scores in tiles): 0.
    GPT-2's own eager path (softmax in the compute dtype, attention dropout) is not modelled: 0."""
    if g.attention != "eager" or traits(model).conv1d:
        return 0.0
    c = g.cmp
    return float(dims(model).heads * (4 + 4 - (c if c != 4 else 0)))


def first_layer_unsaved(s: Saved, g: Regime) -> float:
    """Of a layer's saved tensors `s` (layer_bytes_per_token), the bytes per token that the first decoder
    layer does not save, with adapters on a frozen embedding and no gradient checkpointing: its input (the embedding output) does not require grad, so autograd
    records nothing — and saves nothing — until the first adapter's output joins the computation.
    What the layer puts before its first adapter (the input norm's fp32 copy and rsqrt; with adapters on
    the MLP only, the whole attention block and the residual after it) is not saved in layer 0, except
    what that adapter saves as its own input. (Checkpointing makes the embedding output require grad:
    `enable_input_require_grads`; full fine-tuning trains the embedding: neither applies there.)"""
    if g.full or not g.adapter:
        return 0.0
    if s.first_adapter is None:  # no adapter in the layers: nothing of them is saved
        return float(sum(s.values()))
    return float(sum(v for k, v in list(s.items())[: s.first_adapter] if k not in s.adapter_inputs))


def head_freed_bytes_per_token(model: ModelConfig, g: Regime, lm_head_trains: bool) -> tuple[float, float]:
    """Of the head's saved bytes per token (head_bytes_per_token), what the backward has freed
    (before the final norm's backward: the lm_head's input and the norm's weighted input; before it enters
    the last decoder layer: those and the norm's input copy and statistics). The token ids and labels
    stay (the batch holds them)."""
    t, d = traits(model), dims(model)
    s = Saved()
    ln = _norm(s, "norm_f", "xL", d.h, t, g, g.full)
    norm_in = float(sum(s.values())) - s.get("norm_f.normed", 0.0)
    if lm_head_trains:
        s.put(ln, g.res * d.h)
    total = float(sum(s.values()))
    return total - norm_in, total


def norm_backward_bytes_per_token(model: ModelConfig, g: Regime) -> float:
    """Transient bytes per token of the final norm's backward (its input gradient being formed), on top
    of the incoming gradient's consumers. RMSNorm (measured op by op on CPU, fp32): the gradient through
    `x * rsqrt(mean(x²))` holds five fp32 hidden-sized tensors at once (the product rule's term, the
    mean's gradient, pow's and its two scalings). LayerNorm's fused backward: input and output gradient."""
    t, d = traits(model), dims(model)
    return float(2 * g.res * d.h) if t.layernorm else float(5 * 4 * d.h)

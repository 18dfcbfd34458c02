"""Family traits: what a Hugging Face `model_type` builds, as transformers 5 builds it.

Everything the estimator counts (parameters, Linear layers, saved activations) follows from these few
traits plus the ModelConfig sizes. Checked against transformers 5.24 modeling files (tests/advisor/
test_params.py builds every catalog model on the meta device and compares counts):

- llama / mistral: q/k/v/o + gated MLP (gate/up/down), no biases (config `attention_bias`/`mlp_bias`
  switch them on for q/k/v/o and the MLP), RMSNorm ×2 per layer, RoPE.
- qwen2: as llama but q/k/v carry a bias (o_proj does not).
- qwen3: as llama plus RMSNorm on q and k over head_dim (`q_norm`, `k_norm`).
- gemma2: 4 RMSNorms per layer (pre/post attention, pre/post feed-forward), head_dim ≠ hidden/heads,
  tied embeddings, Gemma RMSNorm computes in fp32 with `(1 + weight)`.
- gemma3_text: gemma2 plus q/k norms.
- phi3: fused `qkv_proj` (hidden → q + 2·kv) and `gate_up_proj` (hidden → 2·intermediate).
- mixtral: llama attention; MoE MLP = router `mlp.gate` (Linear hidden → experts, no bias) and, in
  transformers 5, fused 3-D expert parameters `experts.gate_up_proj` (E, 2i, h) and
  `experts.down_proj` (E, h, i). All experts are stored; top-k are active per token.
- gpt2: learned positions (`wpe`), LayerNorm with bias, Conv1D `c_attn` (h → 3h), `c_proj`, `c_fc`,
  `mlp.c_proj`, all with biases, non-gated GELU MLP, tied lm_head.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from advisor.config.schema import ModelConfig
from advisor.errors import ConfigError


def by_identity(maxsize: int = 4096):
    """Cache on the identity of the first argument (a frozen config) and the value of the others.

    Frozen dataclasses recompute their hash at every lookup, which dominated `estimate`; one config
    object is estimated many times (the advise search, fit_batch), so identity is the cheap key. The
    cached entry keeps the object alive, so an id is never reused while its entry exists."""

    def deco(fn):
        cache: dict = {}

        @functools.wraps(fn)
        def wrapper(obj, *args):
            key = (id(obj), *args) if args else id(obj)
            hit = cache.get(key)
            if hit is not None and hit[0] is obj:
                return hit[1]
            if len(cache) >= maxsize:
                cache.clear()
            val = fn(obj, *args)
            cache[key] = (obj, val)
            return val

        wrapper.cache_clear = cache.clear  # type: ignore[attr-defined]
        return wrapper

    return deco


@dataclass(frozen=True)
class Traits:
    """Structural traits of a model family (see module docstring)."""

    gated_mlp: bool = True  # SiLU(gate) * up → down; False = fc → GELU → proj
    qkv_bias: bool = False  # biases on q/k/v projections
    o_bias: bool = False  # bias on the attention output projection
    mlp_bias: bool = False  # biases on the MLP projections
    layernorm: bool = False  # LayerNorm with bias (True) or RMSNorm (False)
    norms_per_layer: int = 2
    qk_norm: bool = False  # RMSNorm over head_dim on q and k
    gemma_norm: bool = False  # Gemma RMSNorm: fp32 compute, output * (1 + weight)
    fused_qkv: bool = False  # one qkv_proj (phi3) / c_attn (gpt2)
    fused_gate_up: bool = False  # one gate_up_proj (phi3)
    learned_positions: bool = False  # wpe table of max_position_embeddings × hidden
    conv1d: bool = False  # GPT-2's Conv1D (PEFT treats it as a Linear)
    moe: bool = False
    attn_softcap: bool = False  # Gemma-2: tanh soft-capping of attention logits (eager only)
    final_softcap: bool = False  # Gemma-2: tanh soft-capping of the output logits
    sliding_window: bool = False  # alternating sliding-window layers: a second (b, 1, s, s) mask


FAMILIES: dict[str, Traits] = {
    "llama": Traits(),
    "mistral": Traits(),
    "qwen2": Traits(qkv_bias=True),
    "qwen3": Traits(qk_norm=True),
    "gemma2": Traits(
        norms_per_layer=4, gemma_norm=True, attn_softcap=True, final_softcap=True, sliding_window=True
    ),
    "gemma3_text": Traits(norms_per_layer=4, gemma_norm=True, qk_norm=True, sliding_window=True),
    "phi3": Traits(fused_qkv=True, fused_gate_up=True),
    "mixtral": Traits(moe=True),
    "gpt2": Traits(
        gated_mlp=False,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        layernorm=True,
        fused_qkv=True,
        learned_positions=True,
        conv1d=True,
    ),
}


@by_identity()
def traits(model: ModelConfig) -> Traits:
    """Traits of `model.architecture`, with `attention_bias`/`mlp_bias` overrides applied."""
    base = FAMILIES.get(model.architecture)
    if base is None:
        raise ConfigError(
            f"model.architecture={model.architecture!r}: no estimator for this family "
            f"(allowed: {', '.join(FAMILIES)})"
        )
    changes: dict[str, bool] = {}
    if model.attention_bias is not None:
        changes["qkv_bias"] = model.attention_bias
        # llama-style families apply config.attention_bias to o_proj too; qwen2 never biases o_proj
        changes["o_bias"] = model.attention_bias if model.architecture not in ("qwen2",) else base.o_bias
    if model.mlp_bias is not None:
        changes["mlp_bias"] = model.mlp_bias
    if not changes:
        return base
    from dataclasses import replace

    return replace(base, **changes)


@dataclass(frozen=True)
class Dims:
    """The sizes the estimator uses, named once: h, q/kv widths, intermediate, vocab, layers."""

    h: int  # hidden_size
    layers: int  # num_hidden_layers
    heads: int  # num_attention_heads
    kv_heads: int
    head_dim: int
    q: int  # heads × head_dim (query / attention-output width)
    kv: int  # kv_heads × head_dim
    i: int  # intermediate_size (per expert for MoE)
    vocab: int
    experts: int  # 1 for dense models
    active_experts: int  # top-k (1 for dense models)
    tied: bool


@by_identity()
def dims(model: ModelConfig) -> Dims:
    hd = model.head_dim_eff
    moe = traits(model).moe
    return Dims(
        h=model.hidden_size,
        layers=model.num_hidden_layers,
        heads=model.num_attention_heads,
        kv_heads=model.num_key_value_heads,
        head_dim=hd,
        q=model.num_attention_heads * hd,
        kv=model.num_key_value_heads * hd,
        i=model.intermediate_size,
        vocab=model.vocab_size,
        experts=(model.num_local_experts or 1) if moe else 1,
        active_experts=(model.num_experts_per_tok or 1) if moe else 1,
        tied=model.tie_word_embeddings,
    )

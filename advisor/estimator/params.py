"""Exact parameter counts: total, per Linear layer, and LoRA-trainable for any target set.

`total_params` equals transformers' `num_parameters()`, `trainable_params` equals PEFT's
`get_nb_trainable_parameters()`, and `param_tensors` / `trainable_tensors` count the tensors
`parameters()` yields (tests/advisor/test_params.py checks them on real modules).
"""

from __future__ import annotations

from typing import NamedTuple

from advisor.config.schema import MethodConfig, ModelConfig
from advisor.errors import ConfigError
from advisor.estimator.arch import by_identity, dims, traits


class Linear(NamedTuple):
    """One Linear (or GPT-2 Conv1D, or fused 3-D expert weight) as PEFT sees it."""

    name: str  # module name PEFT matches in target_modules (last path component)
    in_features: int
    out_features: int
    count: int  # type: ignore[assignment]  # instances in the model (layers for decoder Linears, 1 for lm_head)
    bias: bool
    experts: int = 1  # > 1: a fused (experts, out, in) parameter; PEFT's LoRA uses rank r × experts
    part: str = "attn"  # attn | mlp | router | experts | lm_head

    @property
    def weight_params(self) -> int:
        return self.in_features * self.out_features * self.experts * self.count

    @property
    def bias_params(self) -> int:
        return self.out_features * self.experts * self.count if self.bias else 0


@by_identity()
def linear_layers(model: ModelConfig) -> tuple[Linear, ...]:
    """Every Linear of the model (decoder layers, then lm_head), with its counts and shapes."""
    t, d = traits(model), dims(model)
    L = d.layers
    out: list[Linear] = []
    if t.conv1d:  # GPT-2
        out += [
            Linear("c_attn", d.h, d.q + 2 * d.kv, L, True),
            Linear("c_proj", d.q, d.h, L, True),
            Linear("c_fc", d.h, d.i, L, True, part="mlp"),
            Linear("c_proj", d.i, d.h, L, True, part="mlp"),
        ]
    else:
        if t.fused_qkv:
            out.append(Linear("qkv_proj", d.h, d.q + 2 * d.kv, L, t.qkv_bias))
        else:
            out += [
                Linear("q_proj", d.h, d.q, L, t.qkv_bias),
                Linear("k_proj", d.h, d.kv, L, t.qkv_bias),
                Linear("v_proj", d.h, d.kv, L, t.qkv_bias),
            ]
        out.append(Linear("o_proj", d.q, d.h, L, t.o_bias))
        if t.moe:
            out += [
                Linear("gate", d.h, d.experts, L, False, part="router"),
                Linear("gate_up_proj", d.h, 2 * d.i, L, False, d.experts, "experts"),
                Linear("down_proj", d.i, d.h, L, False, d.experts, "experts"),
            ]
        elif t.fused_gate_up:
            out += [
                Linear("gate_up_proj", d.h, 2 * d.i, L, t.mlp_bias, part="mlp"),
                Linear("down_proj", d.i, d.h, L, t.mlp_bias, part="mlp"),
            ]
        else:
            out += [
                Linear("gate_proj", d.h, d.i, L, t.mlp_bias, part="mlp"),
                Linear("up_proj", d.h, d.i, L, t.mlp_bias, part="mlp"),
                Linear("down_proj", d.i, d.h, L, t.mlp_bias, part="mlp"),
            ]
    out.append(Linear("lm_head", d.h, d.vocab, 1, False, part="lm_head"))  # shares the embedding if tied
    return tuple(out)


class ParamSplit(NamedTuple):
    """Parameter counts by storage class (what quantization and upcasting act on)."""

    total: int
    linear_weights: int  # decoder Linear/expert weights: what bitsandbytes quantizes in QLoRA
    other: int  # embeddings, norms, biases, lm_head: stays 16-bit under QLoRA
    lm_head: int  # untied lm_head weight (0 when tied)
    embedding: int  # token (+ position) embeddings


@by_identity()
def param_split(model: ModelConfig) -> ParamSplit:
    t, d = traits(model), dims(model)
    lins = linear_layers(model)
    lm_head = 0 if d.tied else d.vocab * d.h
    linear_w = sum(lin.weight_params for lin in lins if lin.part != "lm_head")
    biases = sum(lin.bias_params for lin in lins)
    norm_w = 2 if t.layernorm else 1  # LayerNorm has weight and bias
    norms = d.layers * t.norms_per_layer * d.h * norm_w + d.h * norm_w  # + final norm
    if t.qk_norm:
        norms += d.layers * 2 * d.head_dim
    emb = d.vocab * d.h + (model.max_position_embeddings * d.h if t.learned_positions else 0)
    other = emb + norms + biases + lm_head
    return ParamSplit(linear_w + other, linear_w, other, lm_head, emb)


def total_params(model: ModelConfig) -> int:
    """All parameters, as transformers' `model.num_parameters()` counts them (tied counted once)."""
    return param_split(model).total


def target_names(model: ModelConfig) -> list[str]:
    """Module names usable in method.target_modules for this model."""
    return sorted({lin.name for lin in linear_layers(model) if lin.part not in ("experts", "lm_head")})


@by_identity()
def targeted(model: ModelConfig, target_modules: str | tuple[str, ...]) -> tuple[Linear, ...]:
    """The Linears PEFT wraps with LoRA for `target_modules`.

    `all-linear`: every Linear/Conv1D except the output layer (PEFT excludes lm_head), and — for
    transformers 5 MoE — the fused expert parameters (PEFT 0.21 wraps them as ParamWrapper).
    A list matches module names (the last path component, as PEFT's suffix match does); fused expert
    parameters are not modules, so only `all-linear` reaches them. `lm_head` may be named explicitly.
    """
    lins = linear_layers(model)
    if target_modules == "all-linear":
        return tuple(lin for lin in lins if lin.part != "lm_head")
    names = set(target_modules)
    allowed = set(target_names(model)) | ({"lm_head"} if not dims(model).tied else set())
    unknown = sorted(names - allowed)
    if unknown:
        raise ConfigError(
            f"method.target_modules={list(target_modules)!r}: {', '.join(unknown)} not in "
            f"model {model.name} ({model.architecture}) (allowed: all-linear, {', '.join(sorted(allowed))})"
        )
    return tuple(lin for lin in lins if lin.name in names and lin.part != "experts")


def lora_rank(lin: Linear, r: int) -> int:
    """Rank PEFT gives one wrapped weight: r; fused 3-D experts r × experts (ParamWrapper), and twice that
    for the fused gate_up_proj experts (measured on transformers 5.24 + PEFT 0.21: lora_A is
    (2·r·experts, hidden) there, (r·experts, intermediate) for down_proj)."""
    if lin.experts == 1:
        return r
    return r * lin.experts * (2 if lin.name == "gate_up_proj" else 1)


def lora_params(lin: Linear, r: int) -> int:
    """LoRA A (rank × in) + B (out × rank) per instance."""
    return lora_rank(lin, r) * (lin.in_features + lin.out_features) * lin.count


def trainable_params(model: ModelConfig, method: MethodConfig) -> int:
    """Parameters that receive gradients: all for full fine-tuning, the LoRA matrices otherwise."""
    if not method.is_adapter:
        return total_params(model)
    return _lora_trainable(model, method.target_modules, method.r or 0)


@by_identity()
def param_tensors(model: ModelConfig) -> int:
    """Parameter tensors as `model.parameters()` yields them (a tied lm_head once): one per weight,
    bias, norm weight/bias and embedding table; a fused 3-D expert weight is one tensor."""
    t, d = traits(model), dims(model)
    n = sum(lin.count * (1 + lin.bias) for lin in linear_layers(model) if lin.part != "lm_head")
    n += 0 if d.tied else 1  # lm_head weight
    n += 2 if t.learned_positions else 1  # token (+ position) embedding tables
    n += (d.layers * t.norms_per_layer + 1) * (2 if t.layernorm else 1)  # + the final norm
    if t.qk_norm:
        n += 2 * d.layers
    return n


def trainable_tensors(model: ModelConfig, method: MethodConfig) -> int:
    """Parameter tensors that receive gradients: every one for full fine-tuning; for LoRA/QLoRA
    lora_A and lora_B of every wrapped module (fused expert weights too: PEFT's ParamWrapper)."""
    if not method.is_adapter:
        return param_tensors(model)
    return 2 * sum(lin.count for lin in targeted(model, method.target_modules))


@by_identity()
def n_trainable_tensors(cfg) -> int:
    """trainable_tensors(cfg.model, cfg.method), cached on the RunConfig object."""
    return trainable_tensors(cfg.model, cfg.method)


@by_identity()
def n_trainable(cfg) -> int:
    """trainable_params(cfg.model, cfg.method), cached on the RunConfig object."""
    return trainable_params(cfg.model, cfg.method)


@by_identity()
def _lora_trainable(model: ModelConfig, target_modules: str | tuple[str, ...], r: int) -> int:
    return sum(lora_params(lin, r) for lin in targeted(model, target_modules))

"""advisor.estimator.params against the real thing: transformers' num_parameters() for every catalog model (built
on the meta device: no memory) and PEFT's trainable-parameter count for LoRA target sets."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from advisor.config import catalog  # noqa: E402
from advisor.config.schema import ModelConfig, from_names  # noqa: E402
from advisor.estimator.params import (  # noqa: E402
    linear_layers,
    param_tensors,
    total_params,
    trainable_params,
    trainable_tensors,
)


def hf_config(m: ModelConfig):
    """The transformers config for a ModelConfig (what `model.config_path` would hold)."""
    if m.architecture == "gpt2":
        kw = dict(
            n_embd=m.hidden_size,
            n_layer=m.num_hidden_layers,
            n_head=m.num_attention_heads,
            n_inner=m.intermediate_size,
            vocab_size=m.vocab_size,
            n_positions=m.max_position_embeddings,
        )
    else:
        kw = dict(
            hidden_size=m.hidden_size,
            num_hidden_layers=m.num_hidden_layers,
            num_attention_heads=m.num_attention_heads,
            num_key_value_heads=m.num_key_value_heads,
            intermediate_size=m.intermediate_size,
            vocab_size=m.vocab_size,
            max_position_embeddings=m.max_position_embeddings,
        )
        if m.head_dim:
            kw["head_dim"] = m.head_dim
        if m.num_local_experts:
            kw.update(num_local_experts=m.num_local_experts, num_experts_per_tok=m.num_experts_per_tok)
    special = min(m.vocab_size - 1, 0)
    kw.update(
        tie_word_embeddings=m.tie_word_embeddings,
        pad_token_id=special,
        bos_token_id=special,
        eos_token_id=special,
    )
    return transformers.AutoConfig.for_model(m.architecture, **kw)


def meta_model(m: ModelConfig):
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return transformers.AutoModelForCausalLM.from_config(hf_config(m))


@pytest.mark.parametrize("name", [n for n in catalog.models() if n != "demo-base"] + ["demo-base"])
def test_total_params_equals_transformers(name):
    model = from_names(name, "full", "a100-80gb").model
    hf = meta_model(model)
    assert total_params(model) == hf.num_parameters()
    assert param_tensors(model) == len(list(hf.parameters()))  # what torch AdamW keeps a `step` for
    if model.total_params is not None:  # the catalog's reference count agrees too
        assert total_params(model) == model.total_params


SMALL = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=96,
    vocab_size=256,
)
FAMILIES = {  # catalog entry of the family → small architecture override
    "llama-3.2-1b": SMALL,
    "qwen2.5-0.5b": SMALL,
    "qwen3-0.6b": {**SMALL, "head_dim": 32},
    "gemma-2-2b": {**SMALL, "head_dim": 32},
    "gemma-3-1b": {**SMALL, "head_dim": 32},
    "phi-3-mini": {**SMALL, "num_key_value_heads": 4},
    "gpt2": {**SMALL, "num_key_value_heads": 4},
    "mixtral-8x7b": {**SMALL, "num_local_experts": 4, "num_experts_per_tok": 2},
}
TARGETS = {
    "qv": {"gpt2": ["c_attn"], "phi-3-mini": ["qkv_proj"]},
    "mlp": {"gpt2": ["c_fc"], "phi-3-mini": ["gate_up_proj", "down_proj"], "mixtral-8x7b": ["gate"]},
}


def _targets(kind: str, name: str):
    if kind == "all":
        return "all-linear"
    default = ["q_proj", "v_proj"] if kind == "qv" else ["gate_proj", "up_proj", "down_proj"]
    return TARGETS[kind].get(name, default)


@pytest.mark.parametrize("kind", ["qv", "mlp", "all"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_lora_trainable_equals_peft(name, kind):
    targets = _targets(kind, name)
    cfg = from_names(name, "lora", "a100-80gb", arch=FAMILIES[name], lora={"r": 8, "target_modules": targets})
    hf = meta_model(cfg.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(hf, peft.LoraConfig(r=8, target_modules=targets))
    trainable, total = pm.get_nb_trainable_parameters()
    assert trainable_params(cfg.model, cfg.method) == trainable
    assert trainable_tensors(cfg.model, cfg.method) == sum(p.requires_grad for p in pm.parameters())
    assert total_params(cfg.model) + trainable == total


@pytest.mark.parametrize("name", list(FAMILIES))
def test_linear_layers_are_the_models_linears(name):
    """Every nn.Linear / Conv1D / fused expert weight, with its shape and count, as PEFT sees them."""
    model = from_names(name, "lora", "a100-80gb", arch=FAMILIES[name]).model
    hf = meta_model(model)
    seen: dict[tuple, int] = {}
    for full_name, mod in hf.named_modules():
        leaf = full_name.rsplit(".", 1)[-1]
        if isinstance(mod, torch.nn.Linear):
            key = (leaf, mod.in_features, mod.out_features, 1, mod.bias is not None)
        elif type(mod).__name__ == "Conv1D":
            key = (leaf, mod.weight.shape[0], mod.weight.shape[1], 1, mod.bias is not None)
        elif not isinstance(mod, torch.nn.Embedding):
            for pname, p in mod.named_parameters(recurse=False):
                if p.dim() == 3:  # transformers 5 fused MoE experts: (experts, out, in)
                    k = (pname, p.shape[2], p.shape[1], p.shape[0], False)
                    seen[k] = seen.get(k, 0) + 1
                elif p.dim() == 2:  # a Linear-like weight on another module (Mixtral's top-k router)
                    k = (leaf, p.shape[1], p.shape[0], 1, False)
                    seen[k] = seen.get(k, 0) + 1
            continue
        else:
            continue
        seen[key] = seen.get(key, 0) + 1
    ours: dict[tuple, int] = {}
    for lin in linear_layers(model):
        key = (lin.name, lin.in_features, lin.out_features, lin.experts, lin.bias)
        ours[key] = ours.get(key, 0) + lin.count
    assert ours == seen

"""The memory model against real tensors on CPU.

1. Static bytes: after one real training step on a tiny model (saved, then loaded through the real
   `from_pretrained` path; QLoRA with a real 4-bit BitsAndBytesConfig and
   prepare_model_for_kbit_training), the bytes of parameters (Params4bit storage + quant_state
   counted by hand), `.grad`s and optimizer states equal `advisor.estimator.memory.static_bytes`.
2. Activations: the bytes autograd saves per token per decoder layer (saved_tensors_hooks, unique
   storages, difference between a 3-layer and a 1-layer model) equal advisor.estimator.activations'.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from advisor.config.schema import from_names  # noqa: E402
from advisor.estimator.activations import (  # noqa: E402
    head_bytes_per_token,
    layer_bytes_per_token,
    layer_constant_bytes,
    pos_bytes_per_token,
    position_bytes_per_pos,
)
from advisor.estimator.memory import Stack, regime, static_bytes  # noqa: E402
from advisor.estimator.params import param_split, trainable_params, trainable_tensors  # noqa: E402
from advisor.estimator.static import step_counter_bytes  # noqa: E402

TINY = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    tie_word_embeddings=False,
)
R = 8


def _hf_config(arch: str, **over):
    kw = {**TINY, **over}
    if arch == "gpt2":
        kw = dict(
            tie_word_embeddings=True,
            n_embd=kw["hidden_size"],
            n_layer=kw["num_hidden_layers"],
            n_head=kw["num_attention_heads"],
            n_inner=kw["intermediate_size"],
            vocab_size=kw["vocab_size"],
        )
    return transformers.AutoConfig.for_model(arch, pad_token_id=0, bos_token_id=0, eos_token_id=0, **kw)


def _quiet():
    w = warnings.catch_warnings()
    w.__enter__()
    warnings.simplefilter("ignore")
    transformers.logging.set_verbosity_error()
    return w


# ---------------------------------------------------------------------------------------------
# 1. static bytes after a real step


def _build(tmp_path, method: str, precision: str):
    dtype = torch.float32 if precision in ("fp32", "amp_bf16") else torch.bfloat16
    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_config(_hf_config("llama")).to(dtype)
    base.save_pretrained(tmp_path)
    kw = {"dtype": dtype}
    if method == "qlora":
        kw["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, **kw)
    if method == "qlora":
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if method != "full":
        model = peft.get_peft_model(
            model, peft.LoraConfig(r=R, lora_alpha=16, target_modules="all-linear", lora_dropout=0.05)
        )
    return model


def _optimizer(name: str, params):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-4)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-4)  # our runner: plain SGD, no momentum
    import bitsandbytes as bnb

    return {"adamw_8bit": bnb.optim.AdamW8bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit}[name](
        params, lr=1e-4
    )


def _storage_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def _param_tensors(model):
    for p in model.parameters():
        yield p
        qs = getattr(p, "quant_state", None)
        if qs is not None:  # bitsandbytes' 4-bit quant_state is neither parameter nor buffer
            yield from (t for t in (qs.absmax, qs.code, getattr(qs, "offset", None)) if t is not None)
            if getattr(qs, "state2", None) is not None:
                yield from (qs.state2.absmax, qs.state2.code)


CASES = [
    ("full", "bf16", "adamw"),
    ("full", "bf16", "sgd"),
    ("full", "fp32", "adamw"),
    ("full", "amp_bf16", "adamw"),
    ("full", "bf16", "adamw_8bit"),
    ("lora", "bf16", "adamw"),
    ("lora", "bf16", "sgd"),
    ("lora", "bf16", "adamw_8bit"),
    ("qlora", "bf16", "adamw"),
    ("qlora", "bf16", "sgd"),
    ("qlora", "bf16", "paged_adamw_8bit"),
]


@pytest.mark.parametrize("method,precision,optimizer", CASES)
def test_static_bytes_equal_real_tensors(tmp_path, method, precision, optimizer):
    w = _quiet()
    try:
        model = _build(tmp_path, method, precision)
        # bitsandbytes 0.50 on CPU repacks some 4-bit weights into a CPU kernel layout during the first
        # forward (bf16 absmax, no nested state); GPUs keep the loaded layout: count weights as loaded
        weights = _storage_bytes(_param_tensors(model))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = _optimizer(optimizer, params)
        ids = torch.randint(1, TINY["vocab_size"], (2, 16))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("amp")):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
    finally:
        w.__exit__(None, None, None)
    measured = {
        "weights": weights,
        "gradients": sum(p.grad.nbytes for p in params),
        # optimizer states, torch AdamW's 0-dim fp32 `step` per parameter tensor included (on the CPU)
        "optimizer": _storage_bytes(
            t for st in opt.state.values() for t in st.values() if torch.is_tensor(t)
        ),
    }
    cfg = from_names(
        "llama-3.2-1b",
        method,
        "cpu",
        arch=TINY,
        train={"precision": precision, "optimizer": optimizer},
        lora={"r": R, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
    )
    pred = static_bytes(cfg)
    pred_opt = pred["optimizer"] + pred["paged"]  # paged states are ordinary memory on CPU
    assert pred["weights"] == measured["weights"]
    assert pred["gradients"] == measured["gradients"]
    assert pred_opt == measured["optimizer"]
    steps = [st["step"] for st in opt.state.values() if torch.is_tensor(st.get("step"))]
    if optimizer == "adamw":  # torch: a 0-dim fp32 `step` on the CPU per parameter tensor (not fused)
        assert len(steps) == trainable_tensors(cfg.model, cfg.method) == len(params)
        assert all(t.dim() == 0 and t.dtype == torch.float32 and t.device.type == "cpu" for t in steps)
        assert step_counter_bytes(cfg) == 4 * len(steps)
    else:  # SGD keeps no state; bitsandbytes keeps `step` as a Python int
        assert not steps and step_counter_bytes(cfg) == 0


# ---------------------------------------------------------------------------------------------
# 2. activations saved for backward, per token per layer


def _saved_bytes(model, ids, mask=None) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    params |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, attention_mask=mask, labels=ids)
    return sum(seen.values())


def _measured_per_layer(
    arch, method, dtype, attn, batch, seq, dropout, targets, gc, **over
) -> tuple[float, float]:
    """(saved bytes per token per decoder layer, saved bytes per token outside the layers)."""
    totals = []
    for layers in (1, 3):
        c = _hf_config(arch, **({"num_hidden_layers": layers} if arch != "gpt2" else {}), **over)
        if arch == "gpt2":
            c.n_layer = layers
        c._attn_implementation = attn
        torch.manual_seed(0)
        m = transformers.AutoModelForCausalLM.from_config(c).to(dtype or torch.float32)
        if gc:
            m.gradient_checkpointing_enable()
        m.train()
        if method != "full":
            m = peft.get_peft_model(m, peft.LoraConfig(r=R, target_modules=targets, lora_dropout=dropout))
        ids = torch.randint(1, TINY["vocab_size"], (batch, seq))
        mask = None
        if batch > 1:
            mask = torch.ones(batch, seq, dtype=torch.long)
            mask[0, -5:] = 0  # padding: transformers passes a mask to SDPA
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is None):  # None = amp_bf16
            totals.append(_saved_bytes(m, ids, mask))
    per_layer = (totals[1] - totals[0]) / 2 / (batch * seq)
    return per_layer, totals[0] / (batch * seq) - per_layer


NAMES = {
    "llama": "llama-3.2-1b",
    "qwen2": "qwen2.5-0.5b",
    "qwen3": "qwen3-0.6b",
    "gemma2": "gemma-2-2b",
    "phi3": "phi-3-mini",
    "gpt2": "gpt2",
}
ACT_CASES = [  # arch, method, precision, attention, batch, dropout, targets, extra arch fields
    ("llama", "full", "bf16", "sdpa", 1, 0.0, "all-linear", {}),
    ("llama", "full", "fp32", "sdpa", 1, 0.0, "all-linear", {}),
    ("llama", "full", "bf16", "sdpa", 2, 0.0, "all-linear", {}),
    ("llama", "lora", "bf16", "sdpa", 1, 0.0, "all-linear", {}),
    ("llama", "lora", "bf16", "sdpa", 2, 0.1, "all-linear", {}),
    ("llama", "lora", "bf16", "sdpa", 1, 0.0, ("q_proj", "v_proj"), {}),
    ("llama", "lora", "bf16", "eager", 1, 0.0, "all-linear", {}),
    ("llama", "full", "amp_bf16", "sdpa", 1, 0.0, "all-linear", {}),
    ("llama", "lora", "amp_bf16", "sdpa", 1, 0.0, "all-linear", {}),
    ("qwen2", "lora", "bf16", "sdpa", 1, 0.0, "all-linear", {}),
    ("qwen3", "full", "bf16", "sdpa", 1, 0.0, "all-linear", {"head_dim": 64}),
    ("gemma2", "lora", "bf16", "eager", 1, 0.0, "all-linear", {"head_dim": 64}),
    ("phi3", "full", "bf16", "sdpa", 1, 0.0, "all-linear", {}),
    ("phi3", "lora", "bf16", "sdpa", 1, 0.1, "all-linear", {}),
    ("gpt2", "full", "bf16", "sdpa", 1, 0.0, "all-linear", {"num_key_value_heads": 4}),
]


@pytest.mark.parametrize("arch,method,precision,attn,batch,dropout,targets,over", ACT_CASES)
def test_saved_activations_per_layer(arch, method, precision, attn, batch, dropout, targets, over):
    seq = 64
    dtype = {"fp32": torch.float32, "amp_bf16": None}.get(precision, torch.bfloat16)
    hf_over = {k: v for k, v in over.items() if k != "num_key_value_heads" or arch != "gpt2"}
    w = _quiet()
    try:
        measured, outside = _measured_per_layer(
            arch,
            method,
            dtype,
            attn,
            batch,
            seq,
            dropout,
            list(targets) if not isinstance(targets, str) else targets,
            False,
            **hf_over,
        )
    finally:
        w.__exit__(None, None, None)
    cfg = from_names(
        NAMES[arch],
        method,
        "cpu",
        arch={**TINY, **over},
        train={"precision": precision, "micro_batch_size": batch, "attention": attn},
        lora={"r": R, "dropout": dropout, "target_modules": targets},
    )
    g = regime(cfg, Stack())
    pred = sum(layer_bytes_per_token(cfg.model, g, cfg.method.target_modules, R).values())
    pred += pos_bytes_per_token(cfg.model, g) * seq
    # Gemma's (1 + weight).float() is one h-sized fp32 tensor per norm call, not per token
    const = 4 * TINY["hidden_size"] * 4 / (batch * seq) if arch == "gemma2" else 0.0
    if precision == "amp_bf16":  # autocast's 16-bit copies of the layer's weights (per layer, not per token)
        weights = param_split(cfg.model).linear_weights / cfg.model.num_hidden_layers
        adapters = (
            trainable_params(cfg.model, cfg.method) / cfg.model.num_hidden_layers if method != "full" else 0
        )
        const += 2 * (weights + adapters) / (batch * seq)
    assert measured == pytest.approx(pred + const, abs=1e-6)
    if (
        method == "full" and arch != "gemma2" and precision != "amp_bf16"
    ):  # outside the layers: final norm, lm_head input, ids,
        # labels, RoPE cos/sin, the shared mask, and the loss's fp32 log-softmax output (4 × vocab)
        head = head_bytes_per_token(cfg.model, g, True) + position_bytes_per_pos(cfg.model, g) / batch
        assert outside == pytest.approx(head + 4 * TINY["vocab_size"], abs=0.5)  # + the loss scalars


def test_gradient_checkpointing_keeps_layer_inputs_only():
    w = _quiet()
    try:
        measured, _ = _measured_per_layer(
            "llama", "lora", torch.bfloat16, "sdpa", 1, 64, 0.0, "all-linear", True
        )
    finally:
        w.__exit__(None, None, None)
    assert measured == 2 * TINY["hidden_size"]  # one bf16 hidden state per token per layer


@pytest.mark.parametrize("method", ["full", "lora"])
def test_moe_saved_activations_per_token_and_per_layer(method):
    """Mixtral (transformers 5 fused experts): per routed token as for a gated MLP; with LoRA on the
    experts PEFT materializes W + B·A per layer and saves it — a per-layer constant, not per token."""
    moe = {"num_local_experts": 4, "num_experts_per_tok": 2}

    def saved(layers: int, seq: int) -> int:
        c = _hf_config("mixtral", **{**moe, "num_hidden_layers": layers})
        c._attn_implementation = "sdpa"
        torch.manual_seed(0)
        m = transformers.AutoModelForCausalLM.from_config(c).to(torch.bfloat16)
        m.train()
        if method == "lora":
            m = peft.get_peft_model(m, peft.LoraConfig(r=R, target_modules="all-linear"))
        return _saved_bytes(m, torch.randint(1, TINY["vocab_size"], (1, seq)))

    w = _quiet()
    try:
        a = (saved(3, 64) - saved(1, 64)) / 2  # one layer at 64 tokens
        b = (saved(3, 128) - saved(1, 128)) / 2  # one layer at 128 tokens
    finally:
        w.__exit__(None, None, None)
    per_token, const = (b - a) / 64, a - (b - a)
    cfg = from_names("mixtral-8x7b", method, "cpu", arch={**TINY, **moe}, lora={"r": R, "dropout": 0.0})
    g = regime(cfg, Stack())
    pred_token = sum(layer_bytes_per_token(cfg.model, g, "all-linear", R).values())
    pred_const = layer_constant_bytes(cfg.model, g, "all-linear")
    assert per_token == pytest.approx(pred_token, rel=0.06)  # routing details (gathers, weights) approximated
    assert const == pytest.approx(pred_const, rel=0.15) if method == "lora" else const < 1024

"""Build the real Hugging Face model of a RunConfig on fake tensors (no memory), method applied.

The model is constructed on the `meta` device, the method is applied there with the real libraries
(PEFT's `get_peft_model` and `prepare_model_for_kbit_training`), and then every parameter and buffer
is swapped for a `FakeTensor` of the same shape and dtype so one training step can run for real
(forward, loss, backward, optimizer step) without allocating anything.

QLoRA: bitsandbytes' `Params4bit` cannot wrap a FakeTensor, so each quantized linear is a
`Linear4bitStandIn`: it holds bitsandbytes' *real* packed weight and `QuantState` (made by
`bitsandbytes.functional.quantize_4bit` on a fake weight: same shapes and dtypes as a real load) and
its forward is `bnb.nn.Linear4bit.forward` (the real `bnb.matmul_4bit`). PEFT wraps it with its real
bitsandbytes LoRA layer (`peft.tuners.lora.bnb.Linear4bit`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from advisor.config.schema import RunConfig
from advisor.errors import ConfigError
from runners.model import compute_dtype, lora_config, weight_dtype

if TYPE_CHECKING:
    from bitsandbytes.functional import QuantState
    from peft import LoraConfig
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.pytorch_utils import Conv1D

BNB_BLOCKSIZE = 4 * 16  # bitsandbytes' 4-bit block (elements per absmax) on CUDA


def hf_config(cfg: RunConfig, layers: int) -> PretrainedConfig:
    """The transformers config of cfg.model with `layers` decoder layers."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    m = cfg.model
    if m.architecture not in CONFIG_MAPPING:
        raise ConfigError(
            f"model.architecture={m.architecture!r}: unknown to transformers (allowed: HF model_type names)"
        )
    attn = {"sdpa": "sdpa", "flash": "sdpa", "eager": "eager"}[cfg.train.attention]
    fields: dict[str, Any]
    if m.architecture == "gpt2":
        fields = {
            "n_embd": m.hidden_size,
            "n_layer": layers,
            "n_head": m.num_attention_heads,
            "n_inner": m.intermediate_size,
            "n_positions": m.max_position_embeddings,
            "vocab_size": m.vocab_size,
            "tie_word_embeddings": m.tie_word_embeddings,
        }
    else:
        fields = {
            "hidden_size": m.hidden_size,
            "num_hidden_layers": layers,
            "num_attention_heads": m.num_attention_heads,
            "num_key_value_heads": m.num_key_value_heads,
            "intermediate_size": m.intermediate_size,
            "vocab_size": m.vocab_size,
            "tie_word_embeddings": m.tie_word_embeddings,
            "max_position_embeddings": m.max_position_embeddings,
        }
        optional = {
            "head_dim": m.head_dim,
            "attention_bias": m.attention_bias,
            "mlp_bias": m.mlp_bias,
            "num_local_experts": m.num_local_experts,
            "num_experts_per_tok": m.num_experts_per_tok,
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
    if m.config_path:
        path = Path(m.config_path)
        hf = AutoConfig.from_pretrained(str(path if path.is_dir() else path.parent), trust_remote_code=False)
        for k, v in fields.items():
            setattr(hf, k, v)
        if hasattr(hf, "layer_types") and hf.layer_types is not None:
            hf.layer_types = (list(hf.layer_types) * layers)[:layers]
    else:
        hf = AutoConfig.for_model(m.architecture, **fields)
    hf.use_cache = False
    for k in ("pad_token_id", "bos_token_id", "eos_token_id"):  # ids outside a shrunk vocabulary
        token_id = getattr(hf, k, None)
        if isinstance(token_id, int) and token_id >= m.vocab_size:
            setattr(hf, k, None)
    hf._attn_implementation = attn
    return hf


class Linear4bitStandIn(nn.Linear):
    """bitsandbytes' Linear4bit with the packed weight as a plain frozen uint8 Parameter.

    Storage is bitsandbytes' own (`quantize_4bit` output: uint8 weight of ceil(n/2) bytes, absmax,
    code, offset and nested state); compute is `Linear4bit.forward`'s `bnb.matmul_4bit` call.
    """

    def __init__(self, base: nn.Linear | Conv1D, compute: torch.dtype, quant_type: str, double_quant: bool):
        nn.Module.__init__(self)
        if isinstance(base, nn.Linear):
            self.in_features, self.out_features = base.in_features, base.out_features
        else:  # transformers' Conv1D (GPT-2): weight is (in, out)
            self.in_features, self.out_features = base.weight.shape
        n = self.in_features * self.out_features
        self.weight = nn.Parameter(torch.empty(((n + 1) // 2, 1), dtype=torch.uint8, device="meta"), False)
        self.bias = base.bias
        self.compute_dtype, self.quant_type, self.double_quant = compute, quant_type, double_quant
        self.quant_state: QuantState | None = None  # set by quantize()

    def quantize(self) -> None:
        """Quantize a fake weight with bitsandbytes' real quantize_4bit (call under FakeTensorMode)."""
        import bitsandbytes.functional as bnbf

        w = torch.empty((self.out_features, self.in_features), dtype=self.compute_dtype)
        packed, self.quant_state = bnbf.quantize_4bit(
            w, blocksize=BNB_BLOCKSIZE, compress_statistics=self.double_quant, quant_type=self.quant_type
        )
        self.weight = nn.Parameter(packed, requires_grad=False)

    def _state(self) -> QuantState:
        if self.quant_state is None:
            raise RuntimeError("Linear4bitStandIn used before quantize()")
        return self.quant_state

    def quant_tensors(self) -> list[torch.Tensor]:
        qs = self._state()
        out = [qs.absmax, qs.code] + ([qs.offset, qs.state2.absmax, qs.state2.code] if qs.nested else [])
        return [t for t in out if isinstance(t, torch.Tensor)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # bnb.nn.Linear4bit.forward, training path
        import bitsandbytes as bnb

        inp_dtype = x.dtype
        x = x.to(self.compute_dtype)
        bias: torch.Tensor | None = self.bias
        if self.bias is not None:
            if self.bias.dtype != x.dtype:
                self.bias.data = self.bias.data.to(x.dtype)
            bias = self.bias.to(self.compute_dtype)
        return bnb.matmul_4bit(x, self.weight, bias=bias, quant_state=self._state()).to(inp_dtype)


def _quantize_body(model: PreTrainedModel, compute: torch.dtype, quant_type: str, double_quant: bool) -> None:
    """Replace every nn.Linear / Conv1D of the decoder (not the output layer) by a 4-bit stand-in,
    as transformers' bitsandbytes integration does when loading with load_in_4bit."""
    from transformers.pytorch_utils import Conv1D

    out_layer = model.get_output_embeddings()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if child is out_layer or not isinstance(child, (nn.Linear, Conv1D)):
                continue
            setattr(parent, name, Linear4bitStandIn(child, compute, quant_type, double_quant))


def _lora_config(cfg: RunConfig) -> LoraConfig:
    """runners.model.lora_config, with peft's bitsandbytes LoRA layer on the 4-bit stand-ins."""
    lc = lora_config(cfg)
    if cfg.method.name == "qlora":
        from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

        lc._register_custom_module({Linear4bitStandIn: LoraLinear4bit})
    return lc


@contextlib.contextmanager
def bnb_constants(mode: FakeTensorMode) -> Iterator[None]:
    """bitsandbytes builds its 8-bit code tables with `.tolist()`, which fake tensors refuse: hand it
    the real tables (computed outside fake mode) converted to fake tensors."""
    import bitsandbytes.functional as bnbf

    orig = bnbf.create_dynamic_map
    real: dict[tuple, torch.Tensor] = {}

    def dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> torch.Tensor:
        key = (signed, max_exponent_bits, total_bits)
        if key not in real:
            with torch._subclasses.fake_tensor.unset_fake_temporarily():
                real[key] = orig(signed, max_exponent_bits, total_bits)
        return mode.from_tensor(real[key])

    saved_qmap = dict(bnbf.name2qmap)
    bnbf.create_dynamic_map = dynamic_map
    bnbf.name2qmap.clear()
    try:
        yield
    finally:
        bnbf.create_dynamic_map = orig
        bnbf.name2qmap.clear()
        bnbf.name2qmap.update(saved_qmap)


def _to_fake(model: nn.Module) -> None:
    """Swap every meta parameter/buffer for a fake one (call under FakeTensorMode); ties are kept."""
    params: dict[int, nn.Parameter] = {}
    buffers: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                if id(p) not in params:
                    params[id(p)] = nn.Parameter(
                        torch.empty(p.shape, dtype=p.dtype), requires_grad=p.requires_grad
                    )
                module._parameters[name] = params[id(p)]
        for name, b in list(module._buffers.items()):
            if b is not None:
                if id(b) not in buffers:
                    buffers[id(b)] = torch.empty(b.shape, dtype=b.dtype)
                module._buffers[name] = buffers[id(b)]
        if isinstance(module, Linear4bitStandIn):
            module.quantize()


def build(cfg: RunConfig, layers: int, mode: FakeTensorMode) -> tuple[nn.Module, list[str]]:
    """The model of `cfg` with `layers` decoder layers, method applied, on fake tensors, and notes.

    Call with bnb_constants(mode) active for QLoRA. Gradient checkpointing follows
    cfg.train.gradient_checkpointing with transformers' defaults (non-reentrant).
    """
    from transformers import AutoModelForCausalLM

    method = cfg.method.name
    hf = hf_config(cfg, layers)
    wdtype = compute_dtype(cfg) if method == "qlora" else weight_dtype(cfg)
    notes = [] if cfg.train.attention != "flash" else ["flash attention traced as SDPA (same saved tensors)"]
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf, dtype=wdtype, trust_remote_code=False)
    except ValueError as e:  # architectures without SDPA in this transformers (Gemma-2): eager, as a load
        if "scaled_dot_product_attention" not in str(e):
            raise
        hf._attn_implementation = "eager"
        notes.append(
            f"{cfg.model.architecture} has no SDPA in this transformers: eager attention (O(s²) scores)"
        )
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf, dtype=wdtype, trust_remote_code=False)
    if method == "full":
        model.requires_grad_(True)
    else:
        if method == "qlora":
            from peft import prepare_model_for_kbit_training

            _quantize_body(model, compute_dtype(cfg), cfg.method.quant_type, cfg.method.double_quant)
            prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        from peft import get_peft_model

        model = get_peft_model(model, _lora_config(cfg))
    if cfg.train.gradient_checkpointing:  # transformers' default: non-reentrant, inputs require grad
        enable = (
            getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        )
        enable()
    with mode:
        _to_fake(model)
    model.train()
    return model, notes


def static_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every tensor the loaded model holds: parameters, buffers and 4-bit quantization state."""
    out = list(model.parameters()) + list(model.buffers())
    for m in model.modules():
        if isinstance(m, Linear4bitStandIn):
            out += m.quant_tensors()
    return out

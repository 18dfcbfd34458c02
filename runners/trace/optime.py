"""The op list of one training step: every aten op the real step runs, with what it moves and computes.

`OpRecorder` is a TorchDispatchMode run around the traced step (runners.trace.step). For every op it
records one `advisor.estimator.steptime.ops.Op`:

    term    which part of the step it belongs to (compute, attention, adapters, dequant, elementwise,
            loss, optimizer) — from the op and the module that ran it. Backward ops are attributed
            through the autograd node that runs them (`torch._C._current_autograd_node()`), mapped to
            the module whose forward created that node; recomputed forwards (gradient checkpointing)
            through the module stack as in the forward.
    kind    gemm (mm, addmm, bmm, baddbmm; bitsandbytes' 4-bit gemm: its dequantization + a GEMM),
            attn (the SDPA/flash kernels), fused (a fused optimizer kernel), rng (random numbers:
            dropout masks), view (no kernel: views, detach), mem (everything else: a kernel that
            streams its tensors)
    phase   fwd (issued from Python), bwd (issued by the autograd engine), rec (recompute), opt
    flops   torch.utils.flop_counter's formula (0 for ops it has none for)
    bytes   bytes read (each input's elements, a broadcast input at most its storage) + bytes written
            (outputs, and the arguments an in-place or foreach op writes)

Identical ops are counted, not listed: `OpRecorder.ops` maps Op → calls. The analytic
model (advisor.estimator.steptime.analytic) builds the same list in closed form; both are timed by
advisor.estimator.steptime.cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from advisor.estimator.steptime.ops import Op, OpList, add

GEMM = {"mm", "addmm", "bmm", "baddbmm", "gemm_4bit"}
ATTENTION = {
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_cudnn_attention_backward",
    "_flash_attention_forward",
    "_flash_attention_backward",
    "_efficient_attention_forward",
    "_efficient_attention_backward",
}
EAGER_ATTENTION = {"_softmax", "_softmax_backward_data"}  # eager attention's softmax (with its bmm)
DEQUANT = {"dequantize_4bit", "dequantize_blockwise", "dequantize_nf4", "dequantize_fp4"}
VIEWS = {
    "view",
    "_unsafe_view",
    "t",
    "transpose",
    "permute",
    "unsqueeze",
    "squeeze",
    "expand",
    "slice",
    "select",
    "alias",
    "detach",
    "as_strided",
    "_reshape_alias",
    "split",
    "split_with_sizes",
    "unbind",
    "narrow",
    "_local_scalar_dense",
    "lift_fresh",
    "empty",
    "empty_like",
    "empty_strided",
    "new_empty",
}
IGNORED = {"device", "_record_function_enter_new", "_record_function_exit", "sym_size", "sym_stride"}


def _tensors(x: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(x) if isinstance(t, torch.Tensor)]


def _read_bytes(t: torch.Tensor) -> int:
    """Bytes an op reads from `t`: its elements, at most its storage (broadcasts read once)."""
    n = t.numel() * t.element_size()
    try:
        return min(n, t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):  # tensors without a storage (wrappers)
        return n


def _written(func: Any, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The arguments an op writes in place (its schema's mutable arguments)."""
    out: list[torch.Tensor] = []
    schema = func._schema
    for i, a in enumerate(schema.arguments):
        if a.alias_info is None or not a.alias_info.is_write:
            continue
        val = args[i] if i < len(args) else kwargs.get(a.name)
        out += _tensors(val)
    return out


def _gemm_shape(name: str, args: tuple) -> tuple[int, int, int, int]:
    """(m, n, k, batch) of a GEMM op's inputs."""
    if name in ("mm", "addmm"):
        a, b = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
        return int(a.shape[0]), int(b.shape[1]), int(a.shape[1]), 1
    if name in ("bmm", "baddbmm"):
        a, b = (args[1], args[2]) if name == "baddbmm" else (args[0], args[1])
        return int(a.shape[1]), int(b.shape[2]), int(a.shape[2]), int(a.shape[0])
    # bitsandbytes gemm_4bit(A, B_packed, shapeB, absmax, blocksize, quant_type)
    a, shape_b = args[0], args[2]
    m = 1
    for d in a.shape[:-1]:
        m *= int(d)
    return m, int(shape_b[0]), int(shape_b[1]), 1


class OpRecorder(TorchDispatchMode):
    """Counts the ops of a step as advisor.estimator.steptime Ops (see the module docstring).

    `model` names the modules; `adapter_types` are the module classes whose own ops are the adapter's
    (PEFT's LoRA layers: the cast, scaling and add around their base layer); `loss_module` is the
    causal-LM module whose own ops (the logits' cast, log-softmax, NLL) are the loss."""

    def __init__(
        self,
        model: nn.Module,
        loss_module: nn.Module,
        adapter_types: tuple[type, ...] = (),
        cpu_casts: bool = False,
    ):
        super().__init__()
        self.cpu_casts = cpu_casts  # the step runs on a CPU: binary ops cast mixed inputs first
        self.names = {id(m): n for n, m in model.named_modules()}
        self.kinds = {id(m): _module_kind(n, m, loss_module, adapter_types) for n, m in model.named_modules()}
        self.stack: list[int] = []  # ids of the modules whose forward is running
        self.node_module: dict[int, tuple[Any, int]] = {}  # id(autograd node) -> (node, module id)
        self.phase = "step"  # step (forward/backward: told apart by the autograd engine) | opt
        self.ops: OpList = {}
        self._handles: list[Any] = []

    # -- module tracking -------------------------------------------------------------------------
    @contextlib.contextmanager
    def tracking(self) -> Iterator[OpRecorder]:
        """Global module hooks (forward stack; autograd nodes → the module that created them)."""
        from torch.nn.modules import module as module_mod

        def pre(mod: nn.Module, _inp: Any) -> None:
            self.stack.append(id(mod))

        def post(mod: nn.Module, _inp: Any, out: Any) -> None:
            if self.stack and self.stack[-1] == id(mod):
                self.stack.pop()
            self._claim(out, id(mod))

        # always_call: checkpointing's recompute stops early by raising once it has every tensor it
        # needs; the stack must unwind then too
        self._handles = [
            module_mod.register_module_forward_pre_hook(pre),
            module_mod.register_module_forward_hook(post, always_call=True),
        ]
        try:
            with self:
                yield self
        finally:
            for h in self._handles:
                h.remove()

    def _claim(self, out: Any, mod: int) -> None:
        """Map every autograd node behind `out` not claimed yet to `mod` (innermost module first)."""
        todo = [t.grad_fn for t in _tensors(out) if t.grad_fn is not None]
        while todo:
            node = todo.pop()
            if node is None or id(node) in self.node_module:
                continue
            self.node_module[id(node)] = (node, mod)
            todo.extend(nxt for nxt, _ in node.next_functions if nxt is not None)

    def _module(self) -> tuple[int | None, str]:
        """(module id, phase) of the op being dispatched."""
        if self.phase == "opt":
            return None, "opt"
        node = torch._C._current_autograd_node()
        if node is None:
            return (self.stack[-1] if self.stack else None), "fwd"
        if self.stack:  # a forward running inside backward: checkpointing's recompute
            return self.stack[-1], "rec"
        hit = self.node_module.get(id(node))
        return (hit[1] if hit is not None and hit[0] is node else None), "bwd"

    # -- ops ---------------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if name in IGNORED:
            return out
        mod, phase = self._module()
        kind = _kind(name)
        term = _term(name, kind, phase, self.kinds.get(mod, "") if mod is not None else "")
        ins = _tensors((args, kwargs))
        if name == "gemm_4bit":
            self._gemm_4bit(term, phase, args, kwargs)
            return out
        if kind == "view":  # host work only: one bucket
            add(self.ops, Op("elementwise", "view", phase))
            return out
        nbytes = _op_bytes(name, func, args, kwargs, ins, out)
        flops = _flops(func, args, kwargs, out)
        wide = any(t.dtype == torch.float32 for t in ins if t.is_floating_point())
        shape = (0, 0, 0, 0)
        masked = False
        if kind == "gemm":
            shape = _gemm_shape(name, args)
            wide = any(t.dtype == torch.float32 for t in ins[:2] if t.is_floating_point())
        elif kind == "fused":  # the parameters' dtype (the fp32 `step` counters do not count)
            wide = bool(ins) and ins[0].dtype == torch.float32
        elif kind == "attn":  # the kernel's dtype is q's (the backward also reads the fp32 log-sum-exp)
            masked = _attn_masked(name, args, kwargs)
            wide = bool(ins) and ins[0].dtype == torch.float32
        elif kind == "mem" and self.cpu_casts:
            for n_in, e_in, e_out in _cpu_promotions(name, ins, out):  # the input cast first (CPU)
                add(self.ops, Op(term, "mem", phase, 0.0, float(n_in * (e_in + e_out)), False))
                nbytes += n_in * (e_out - e_in)  # the op then reads the cast copy
        add(self.ops, Op(term, kind, phase, float(flops), float(nbytes), wide, shape, masked))
        return out

    def _gemm_4bit(self, term: str, phase: str, args: tuple, kwargs: dict) -> None:
        """bitsandbytes' gemm_4bit as it runs (its default kernel, CPU and CUDA alike): dequantize the
        nested absmax (8-bit → fp32 with a 256-entry code, + offset) when double-quantized, dequantize
        the NF4 weight to the input's dtype, then one GEMM."""
        m, n, k, _ = _gemm_shape("gemm_4bit", args)
        e = args[0].element_size()
        w = n * k
        absmax_8bit = kwargs.get("absmax_8bit", args[7] if len(args) > 7 else None)
        if isinstance(absmax_8bit, torch.Tensor):
            blocks = absmax_8bit.numel()
            outer = _read_bytes(args[3])
            add(self.ops, Op("dequant", "mem", phase, 0.0, float(blocks + outer + 1024 + 4 * blocks)))
            add(self.ops, Op("dequant", "mem", phase, 0.0, float(8 * blocks + 4)))
        else:
            blocks = args[3].numel()
        add(self.ops, Op("dequant", "mem", phase, 0.0, float(w // 2 + 4 * blocks + w * e)))
        flops, nbytes = 2.0 * m * n * k, float((m * k + w + m * n) * e)
        add(self.ops, Op(term, "gemm", phase, flops, nbytes, e == 4, (m, n, k, 1)))


FUSED = {"_fused_adamw_", "_fused_adam_", "_fused_sgd_"}
# ops that touch only part of an input: (what they read and write is counted from their outputs)
GATHERS = {"embedding", "nll_loss_forward", "nll_loss_backward", "index", "gather", "index_select"}


def _op_bytes(name: str, func: Any, args: tuple, kwargs: dict, ins: list, out: Any) -> int:
    """Bytes read + written (see the module docstring)."""
    written = sum(t.numel() * t.element_size() for t in _tensors(out))
    if name in GATHERS:  # a gather reads what it writes (+ the indices); a scatter writes its output
        small = sum(_read_bytes(t) for t in ins if t.dtype in (torch.int64, torch.int32, torch.bool))
        return small + (written if name == "nll_loss_backward" else 2 * written)
    nbytes = sum(_read_bytes(t) for t in ins) + written
    return nbytes + sum(t.numel() * t.element_size() for t in _written(func, args, kwargs))


# out-of-place binary ops: on CPU, TensorIterator casts an input of another floating dtype to the
# result's dtype before the loop (an `aten::to` → `copy_` inside the op, below the Python dispatcher:
# profiled as a child of e.g. aten::add); CUDA kernels cast on the fly
PROMOTING = {"add", "sub", "mul", "div", "where", "maximum", "minimum"}


def _cpu_promotions(name: str, ins: list, out: Any) -> list[tuple[int, int, int]]:
    """(elements, input element size, result element size) of each input a CPU binary op casts."""
    if name not in PROMOTING or not isinstance(out, torch.Tensor):
        return []
    return [
        (t.numel(), t.element_size(), out.element_size())
        for t in ins
        if t.is_floating_point() and t.dim() > 0 and t.dtype != out.dtype and t.numel() > 1
    ]


RNG = {"bernoulli_", "bernoulli", "native_dropout", "uniform_", "normal_", "rand", "rand_like"}


def _kind(name: str) -> str:
    if name in FUSED:
        return "fused"
    if name in RNG:
        return "rng"
    if name in VIEWS:
        return "view"
    if name in GEMM:
        return "gemm"
    if name in ATTENTION:
        return "attn"
    return "mem"


def _module_kind(name: str, mod: nn.Module, loss_module: nn.Module, adapter_types: tuple[type, ...]) -> str:
    """adapter | base | attention | loss | '' for a module (what its own ops count as)."""
    if mod is loss_module:
        return "loss"
    parts = name.split(".")
    if any(p.startswith(("lora_A", "lora_B", "lora_dropout", "lora_embedding")) for p in parts):
        return "adapter"
    if "base_layer" in parts:
        return "base"
    if adapter_types and isinstance(mod, adapter_types):
        return "adapter"
    if parts[-1] in ("self_attn", "attn", "attention"):
        return "attention"
    return ""


def _term(name: str, kind: str, phase: str, mod_kind: str) -> str:
    if phase == "opt":
        return "optimizer"
    if name in DEQUANT:
        return "dequant"
    if mod_kind == "adapter":
        return "adapters"
    if kind == "attn" or (mod_kind == "attention" and (name in EAGER_ATTENTION or kind == "gemm")):
        return "attention"
    if kind == "gemm":
        return "compute"
    if mod_kind == "loss":
        return "loss"
    return "elementwise"


def _flops(func: Any, args: tuple, kwargs: dict, out: Any) -> int:
    from torch.utils import flop_counter as fc

    formula = fc.flop_registry.get(func.overloadpacket)
    if formula is None:
        return 0
    try:
        return int(formula(*args, **kwargs, out_val=out))
    except (TypeError, ValueError, IndexError, RuntimeError):  # a formula that cannot read these args
        return 0


def _attn_masked(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether an attention kernel runs with an explicit mask (no causal block skipping): a 4-D
    tensor argument besides the kernel's q/k/v (forward) or grad/q/k/v/out (backward)."""
    tensors = _tensors((args, kwargs))
    skip = 5 if "backward" in name else 3
    return any(t.dim() == 4 for t in tensors[skip:])

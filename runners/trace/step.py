"""Run one training step on fake tensors and count exact bytes by category, and FLOPs.

`LiveBytes` is a TorchDispatchMode that sees every tensor an op returns, keeps the storages alive in
a table (a weakref finaliser removes them when freed) and tags each with a category:

    weights      parameters, buffers and 4-bit quantization state of the loaded model
    optimizer    optimizer state (initialised before the traced step, as in every step but the first)
    gradients    .grad tensors (tagged when accumulated; present from the start when grad_accum > 1)
    activations  allocated in the decoder's forward and still alive when the forward ends
    logits       allocated by the output layer and the loss, alive when the forward ends
    temporaries  everything else (freed forward intermediates, backward and optimizer workspaces)

The peak of live bytes over the step is what torch.cuda.max_memory_allocated reports for it.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from advisor.config.schema import RunConfig
from advisor.estimator.steptime.ops import ops_to_json

CATEGORIES = ("weights", "gradients", "optimizer", "activations", "logits", "temporaries")
PHASES = ("forward", "backward", "optimizer")


class LiveBytes(TorchDispatchMode):
    """Live tensor bytes by category, with the peak per phase (see module docstring)."""

    def __init__(self, skip: tuple[type, ...] = ()) -> None:
        super().__init__()
        self.skip = skip  # tensor subclasses whose outputs are not storages of their own (wrappers)
        self.live: dict[int, list] = {}  # id(storage) -> [nbytes, category, event serial]
        self.by_cat = dict.fromkeys(CATEGORIES, 0)
        self.total = 0
        self.untracked = 0  # bytes excluded from the peak (bitsandbytes paged optimizer state)
        self.phase = "forward"
        self.default = "activations"
        self.peak: dict[str, int] = dict.fromkeys(PHASES, 0)
        self.peak_cat: dict[str, dict[str, int]] = {ph: dict(self.by_cat) for ph in PHASES}
        self.events: list[tuple] = []  # ("alloc", n, nbytes) / ("free", n), in order: replayed through
        self._serial = 0  # advisor.estimator.allocator for reserved memory

    def _free(self, key: int) -> None:
        nbytes, cat, serial = self.live.pop(key)
        self.by_cat[cat] -= nbytes
        self.total -= nbytes
        self.events.append(("free", serial))

    def add(self, t: torch.Tensor, category: str | None = None) -> None:
        """Track t's storage (re-tag it if already tracked)."""
        st = t.untyped_storage()
        key = id(st)
        cat = category or self.default
        if key in self.live:
            if category is not None and self.live[key][1] != category:
                nbytes, old, _ = self.live[key]
                self.by_cat[old] -= nbytes
                self.by_cat[category] += nbytes
                self.live[key][1] = category
            return
        nbytes = st.nbytes()
        self.live[key] = [nbytes, cat, self._serial]
        self.events.append(("alloc", self._serial, nbytes))
        self._serial += 1
        self.by_cat[cat] += nbytes
        self.total += nbytes
        weakref.finalize(st, self._free, key)
        if self.total > self.peak[self.phase]:
            self.peak[self.phase] = self.total
            self.peak_cat[self.phase] = dict(self.by_cat)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and not isinstance(t, self.skip):
                self.add(t)
        return out

    @contextlib.contextmanager
    def region(self, phase: str, default: str) -> Iterator[None]:
        self.phase, self.default = phase, default
        if self.total > self.peak[phase]:
            self.peak[phase], self.peak_cat[phase] = self.total, dict(self.by_cat)
        yield


def _register_flop_formulas() -> None:
    """FLOP formulas FlopCounterMode lacks for ops a CPU trace runs: SDPA's CPU flash kernel (counted
    like CUDA's SDPA kernels) and bitsandbytes' 4-bit GEMM (2·M·N·K, as the dense matmul it replaces)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    if aten._scaled_dot_product_flash_attention_for_cpu in fc.flop_registry:
        return

    @fc.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ARG001 (torch passes out_shape)
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    @fc.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _sdpa_cpu_bw(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kw) -> int:  # noqa: ARG001 (torch passes out_shape)
        return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    import bitsandbytes  # noqa: F401  (registers torch.ops.bitsandbytes)

    @fc.register_flop_formula(torch.ops.bitsandbytes.gemm_4bit)
    def _gemm_4bit(a_shape, _b_shape, shape_b, *args, out_shape=None, **kwargs) -> int:  # noqa: ARG001 (torch passes out_shape)
        m = 1
        for n in a_shape[:-1]:
            m *= n
        return 2 * m * shape_b[0] * shape_b[1]


@contextlib.contextmanager
def cuda_kernels(on: bool) -> Iterator[None]:
    """Run the ops whose CPU and CUDA kernels save different tensors the CUDA way (fake tensors run
    any kernel's meta implementation): dropout as CUDA's fused native_dropout (a 1-byte mask, where
    the CPU path keeps a mask in the input dtype), and SDPA with attention dropout as CUDA's
    memory-efficient kernel (the CPU falls back to the O(s²) math path)."""
    if not on:
        yield
        return
    import torch.nn.functional as F

    aten = torch.ops.aten
    orig_dropout, orig_sdpa = F.dropout, F.scaled_dot_product_attention

    def dropout(input, p=0.5, training=True, inplace=False):  # noqa: ARG001 (F.dropout's signature)
        if not training or p == 0:
            return input
        return aten.native_dropout(input, p, True)[0]

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if dropout_p == 0 or enable_gqa:
            return orig_sdpa(q, k, v, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)
        bias = attn_mask
        if bias is not None:  # SDPA turns a boolean mask into an additive one, then broadcasts it
            if bias.dtype == torch.bool:
                bias = torch.zeros(bias.shape, dtype=q.dtype).masked_fill_(~bias, float("-inf"))
            bias = bias.to(q.dtype).expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        return aten._scaled_dot_product_efficient_attention(
            q, k, v, bias, True, dropout_p, is_causal, scale=scale
        )[0]

    F.dropout, F.scaled_dot_product_attention = dropout, sdpa
    try:
        yield
    finally:
        F.dropout, F.scaled_dot_product_attention = orig_dropout, orig_sdpa


def _optimizer(cfg: RunConfig, params: list[nn.Parameter]) -> tuple[torch.optim.Optimizer, bool]:
    """The configured optimizer and whether its state is paged (invisible to torch's allocator)."""
    from runners.optim import WEIGHT_DECAY

    name, lr = cfg.train.optimizer, cfg.lr
    if name == "adamw":  # as the runner (runners/optim.py): foreach on CUDA (one param-size of
        # temporaries, `step` counters on the host), fused on the CPU
        if cfg.gpu.is_cpu:
            return torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY, fused=True), False
        return torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY, foreach=True), False
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, foreach=not cfg.gpu.is_cpu), False
    import bitsandbytes as bnb

    if name in ("adamw_8bit", "paged_adamw_8bit"):  # paged = same state, in cudaMallocManaged memory
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=WEIGHT_DECAY), name.startswith("paged")
    return bnb.optim.AdamW32bit(params, lr=lr, weight_decay=WEIGHT_DECAY), True  # paged_adamw_32bit


def _state_tensors(opt: torch.optim.Optimizer) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for st in opt.state.values() for k, v in st.items() if isinstance(v, torch.Tensor)]


def run_step(cfg: RunConfig, model: nn.Module, static: list[torch.Tensor]) -> dict[str, Any]:
    """One micro-batch forward/backward and one optimizer step under a LiveBytes tracker (call under
    the FakeTensorMode the model was built in). Returns byte counts, per-phase peaks and FLOPs."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt, paged = _optimizer(cfg, params)
    for p in params:  # initialise the state: the traced step is a steady-state step
        p.grad = torch.zeros_like(p)
    opt.step()
    b, s = cfg.train.micro_batch_size, cfg.train.seq_len
    ids = torch.zeros((b, s), dtype=torch.long)
    # The runner's batches carry a padding mask; one unpadded sequence (micro-batch 1, no packing) lets
    # transformers drop it (is_causal). Fake tensors hide the mask's values, so give it only when a real
    # batch would need one.
    masked = b > 1 or cfg.train.packing
    mask = torch.ones((b, s), dtype=torch.long) if masked else None
    amp = cfg.precision.startswith("amp_")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16 if cfg.precision == "amp_bf16" else torch.float16)

    def forward() -> Any:  # as runners.train: the output (logits included) lives through backward
        with autocast if amp else contextlib.nullcontext():
            return model(
                input_ids=ids, attention_mask=mask, labels=ids, use_cache=False, num_items_in_batch=b * s
            )

    _register_flop_formulas()
    # FLOPs in a pass of their own: FlopCounterMode's module tracking keeps backward tensors alive.
    with cuda_kernels(not cfg.gpu.is_cpu):  # in backward too: checkpointing recomputes the forward
        return _traced_step(cfg, model, static, opt, paged, params, forward)


def _traced_step(cfg, model, static, opt, paged, params, forward) -> dict[str, Any]:
    flops = FlopCounterMode(display=False)
    recorder = _op_recorder(model, cpu=cfg.gpu.is_cpu)
    opt.zero_grad(set_to_none=cfg.train.grad_accum == 1)  # as the runner: no gradients yet, or kept
    with flops, recorder.tracking():
        forward().loss.backward()
        recorder.phase = "opt"  # as the runner: gradient norm (and clipping), optimizer step
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
    opt.zero_grad(set_to_none=cfg.train.grad_accum == 1)  # with accumulation, grads stay alive

    tracker = LiveBytes()
    for t in static:
        tracker.add(t, "weights")
    paged_seen: set[int] = set()
    for name, t in _state_tensors(opt):  # bitsandbytes pages state1/state2 (cudaMallocManaged) only
        if name == "step" and not cfg.gpu.is_cpu:  # torch keeps non-fused AdamW's counters on the host
            continue
        if paged and name in ("state1", "state2"):
            if id(t.untyped_storage()) not in paged_seen:
                paged_seen.add(id(t.untyped_storage()))
                tracker.untracked += t.untyped_storage().nbytes()
        else:
            tracker.add(t, "optimizer")
    for p in params:
        if p.grad is not None:
            tracker.add(p.grad, "gradients")
        p.register_post_accumulate_grad_hook(lambda p: tracker.add(p.grad, "gradients"))
    head = model.get_output_embeddings()
    hook = head.register_forward_pre_hook(lambda *_: setattr(tracker, "default", "logits"))
    n_static = len(tracker.events)
    with tracker:
        with tracker.region("forward", "activations"):
            out = forward()
        end_forward = dict(tracker.by_cat)
        with tracker.region("backward", "temporaries"):
            out.loss.backward()
        del out
        grads = tracker.by_cat["gradients"]
        with tracker.region("optimizer", "temporaries"):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
    hook.remove()
    return {
        "weights": end_forward["weights"],
        "gradients": grads,
        "optimizer": end_forward["optimizer"] + tracker.untracked,
        "optimizer_paged": paged,
        "activations": end_forward["activations"],
        "logits": end_forward["logits"],
        "peak": dict(tracker.peak),
        "peak_cat": {ph: dict(c) for ph, c in tracker.peak_cat.items()},
        "flops": int(flops.get_total_flops()),
        "ops": ops_to_json(recorder.ops),
        "trainable_params": sum(p.numel() for p in params),
        "reserved": replay_reserved(tracker.events[:n_static], tracker.events[n_static:]),
    }


def _op_recorder(model: nn.Module, cpu: bool = False) -> Any:
    """The op recorder for this model: PEFT's LoRA layers are the adapters, the causal LM's own ops
    (after its decoder and output layer) the loss."""
    from runners.trace.optime import OpRecorder

    adapters: tuple[type, ...] = ()
    try:
        from peft.tuners.lora.layer import LoraLayer

        adapters = (LoraLayer,)
    except ImportError:  # pragma: no cover - peft is a dependency
        pass
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    return OpRecorder(model, base, adapters, cpu_casts=cpu)


def replay_reserved(static: list[tuple], step: list[tuple], steps: int = 2) -> int:
    """Peak `max_memory_reserved` of the traced step, from a replay of its allocations through the
    caching-allocator model: the persistent tensors first (as loading leaves them), then the same
    step `steps` times (the second one starts from the cached blocks the first left behind)."""
    from advisor.estimator.allocator import Allocator

    a = Allocator().replay(static)
    persistent = {e[1] for e in static if e[0] == "alloc"}
    for i in range(steps):
        for e in step:
            if e[0] == "alloc":
                a.malloc((i, e[1]), e[2])
            elif e[1] not in persistent:
                a.free((i, e[1]))
            elif i == 0:  # a persistent tensor the step frees (accumulated gradients at zero_grad)
                a.free(e[1])
    return a.peak_reserved

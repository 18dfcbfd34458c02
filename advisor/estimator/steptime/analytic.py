"""The op list of one training step in closed form: what the trace records, without running torch.

Each decoder layer is walked as transformers 5 + PEFT + bitsandbytes run it (the same walk as the
activation-memory model, advisor/estimator/activations.py), emitting one Op per aten kernel with its
FLOPs and bytes, and per forward op the ops its backward runs. What follows the real code:

- Linear: `t`, `view`, `mm` (`addmm` with a bias), `_unsafe_view`; backward: the input gradient
  (only where the input needs one) and the weight gradient (only where the weight trains), each a
  GEMM with its views. A tensor read by k differentiable consumers gets k − 1 gradient adds.
- QLoRA's frozen 4-bit Linear (bitsandbytes' gemm_4bit, default kernel on CPU and CUDA): cast the
  input to the compute dtype, dequantize (nested absmax, + offset, NF4 weight → 16-bit), GEMM, cast
  the output back (`prepare_model_for_kbit_training` leaves the residual stream in fp32); the
  backward dequantizes again. PEFT clones the 4-bit layer's output before adding the adapter.
- LoRA (PEFT `lora.Linear`): the input cast to the adapter dtype (fp32), dropout (CUDA: one fused
  kernel with a 1-byte mask; CPU: bernoulli, scale, multiply), A and B (fp32 GEMMs), the scaling
  multiply, the add onto the base output and the cast back; the backward mirrors them.
- RMSNorm in fp32 (cast, pow, mean, add, rsqrt, mul, cast, weight mul) and its backward; LayerNorm
  as one fused kernel each way; RoPE (mul, slice, neg, cat, mul, add for q and k); with a padding
  mask transformers repeats k/v to all heads (a copy each) and hands SDPA a mask (no causal block
  skipping); SDPA/flash as one kernel each way; eager attention as bmm, scale, mask add, softmax,
  cast, bmm; gated MLP (SiLU, mul) or GELU MLP.
- Loss: lm_head, logits cast to fp32, log-softmax, NLL (and their backward).
- Gradient checkpointing (HF, non-reentrant, per decoder layer): the backward re-runs each layer's
  forward (phase `rec`); inputs then require grad (transformers' `enable_input_require_grads`).
- Optimizer step: gradient norm and clipping (foreach), then AdamW (CUDA: torch's foreach passes;
  CPU: the fused kernel, as the runner), SGD, or bitsandbytes' 8-bit/32-bit kernels.

`micro_batch_ops(cfg, b, s)` is one micro-batch of b sequences of s tokens; `optimizer_ops(cfg)` the
step's optimizer. tests/runners/test_steptime.py holds their time to the trace's within 5 %.
"""

from __future__ import annotations

from dataclasses import dataclass

from advisor.config.schema import RunConfig
from advisor.estimator.arch import by_identity, dims, traits
from advisor.estimator.params import linear_layers, n_trainable, param_split, targeted
from advisor.estimator.static import Stack
from advisor.estimator.steptime.ops import Op, OpList, add

# host-only ops the model-level code runs once per forward (causal-mask construction, RoPE tables,
# position ids), counted from transformers 5's Llama on the trace: (mem ops, views)
MODEL_PREAMBLE_MASKED = (14, 21)
MODEL_PREAMBLE_CAUSAL = (9, 12)
CHECKPOINT_VIEWS = (32, 16)  # per checkpointed layer: recompute, backward (counted on the trace)


@dataclass(frozen=True)
class Regime:
    """Element sizes (bytes) and switches of one configuration (see the module docstring)."""

    full: bool
    qlora: bool
    w: int  # weight element (fp32 master copy under amp)
    c: int  # matmul element (16-bit under amp)
    res: int  # residual stream / norm outputs
    lin_out: int  # what a base Linear hands on (QLoRA: cast back to the residual's fp32)
    a: int  # adapter element (0 = no adapters)
    dropout: bool
    amp: bool
    cpu: bool
    gc: bool
    masked: bool  # SDPA gets a padding mask (micro-batch > 1, or packing)
    eager: bool
    r: int
    lm_head_4bit: bool = False  # QLoRA quantizes the output layer too (Lightning Fabric)
    dequant_bytes: int = 2  # bytes per element a 4-bit weight is dequantized into (4: fp16, then cast)


def _regime(cfg: RunConfig, b: int, stack: Stack = Stack()) -> Regime:
    m, t = cfg.method, cfg.train
    prec = cfg.precision
    amp = prec.startswith("amp")
    w = 4 if prec == "fp32" or amp else 2
    c = 4 if prec == "fp32" else 2
    qlora = m.name == "qlora"
    # kbit preparation upcasts norms/embeddings to fp32 (PEFT's prepare_model_for_kbit_training)
    res = 4 if (qlora and stack.kbit_upcast) or prec == "fp32" or amp else 2
    a = (4 if prec == "fp32" or amp else stack.adapter_bytes) if m.is_adapter else 0
    eager = t.attention == "eager" or traits(cfg.model).attn_softcap
    return Regime(
        full=m.name == "full",
        qlora=qlora,
        w=w,
        c=c,
        res=res,
        lin_out=res if qlora else (c if amp else w),
        a=a,
        dropout=m.is_adapter and m.dropout > 0,
        amp=amp,
        cpu=cfg.gpu.is_cpu,
        gc=t.gradient_checkpointing,
        masked=b > 1 or t.packing,
        eager=eager,
        r=m.r or 0,
        lm_head_4bit=qlora and stack.lm_head_4bit and not dims(cfg.model).tied,
        dequant_bytes=stack.dequant_bytes,
    )


class Emit:
    """Collects ops: forward ones in `fwd`, the backward's in `bwd` (phase given per call)."""

    def __init__(self) -> None:
        self.ops: OpList = {}

    def mem(self, term: str, phase: str, nbytes: float, wide: bool = False, n: float = 1) -> None:
        add(self.ops, Op(term, "mem", phase, 0.0, float(nbytes), wide), n)

    def view(self, term: str, phase: str, n: float = 1) -> None:  # noqa: ARG002 (views: host work only)
        if n:
            add(self.ops, Op("elementwise", "view", phase), n)

    def gemm(
        self, term: str, phase: str, m: int, n: int, k: int, e: int, bias: int = 0, batch: int = 1
    ) -> None:
        nbytes = (m * k + k * n + m * n) * e * batch + bias
        op = Op(term, "gemm", phase, 2.0 * m * n * k * batch, float(nbytes), e == 4, (m, n, k, batch))
        add(self.ops, op)


class Walk:
    """One micro-batch's forward (and, op by op, its backward) — see the module docstring."""

    def __init__(
        self,
        cfg: RunConfig,
        b: int,
        s: int,
        rec: bool = False,
        backward: bool = True,
        stack: Stack = Stack(),
    ):
        self.cfg, self.b, self.s, self.T = cfg, b, s, b * s
        self.g = _regime(cfg, b, stack)
        self.t, self.d = traits(cfg.model), dims(cfg.model)
        self.e = Emit()
        self.fp = "rec" if rec else "fwd"  # phase of forward ops (recompute under checkpointing)
        self.bw = backward and not rec  # emit the backward too
        self.rec = rec
        hit = targeted(cfg.model, cfg.method.target_modules) if cfg.method.is_adapter else ()
        self.targets = {(lin.name, lin.part) for lin in hit}

    # -- building blocks --------------------------------------------------------------------------
    def _bwd(self, term: str, nbytes: float, wide: bool = False, n: float = 1) -> None:
        if self.bw:
            self.e.mem(term, "bwd", nbytes, wide, n)

    def _bview(self, term: str, n: float) -> None:
        if self.bw:
            self.e.view(term, "bwd", n)

    def grad_adds(self, width: int, e: int, consumers: int) -> None:
        """A tensor read by `consumers` differentiable ops: their gradients are summed."""
        if consumers > 1:
            self._bwd("elementwise", 3 * self.T * width * e, e == 4, consumers - 1)

    def norm(self, width: int, x_grad: bool, rows: float | None = None, x_e: int | None = None) -> None:
        """RMSNorm (fp32 math) or LayerNorm over `width` for `rows` rows (default: every token) of
        x_e-byte elements (default: the residual stream's)."""
        g, T = self.g, rows or self.T
        ew, fp = "elementwise", self.fp
        n = T * width
        res = x_e or g.res
        trainable = g.full
        if self.t.layernorm:  # native_layer_norm: one kernel each way
            self.e.mem(ew, fp, n * 2 * res + 8 * T)
            if x_grad or trainable:
                self._bwd(ew, n * 3 * res + 8 * T)
            return
        up = res != 4  # x.to(fp32) unless already fp32
        if up:
            self.e.mem(ew, fp, n * (res + 4))
        self.e.mem(ew, fp, n * 8, True)  # pow
        self.e.mem(ew, fp, n * 4 + 4 * T, True)  # mean
        self.e.mem(ew, fp, 8 * T, True, 2)  # + eps, rsqrt
        self.e.view(ew, fp, 1)  # detach (saved rsqrt)
        self.e.mem(ew, fp, n * 8 + 4 * T, True)  # x * rsqrt
        out = 4 if self.t.gemma_norm else res
        if self.t.gemma_norm:  # (1 + weight.float()) * x, then type_as
            nw = 4 if res == 4 or g.w == 4 else 2  # the norm's weight: fp32 when upcast or a master copy
            if nw != 4:  # weight.float() each forward (its gradient cast back when it trains)
                self.e.mem(ew, fp, width * (nw + 4))
                if trainable:
                    self._bwd(ew, width * (4 + nw), True)
            self.e.mem(ew, fp, 8 * width, True)
            self.e.mem(ew, fp, n * 8 + 4 * width, True)
            if res != 4:
                self.e.mem(ew, fp, n * (4 + res))
        else:
            if up:
                self.e.mem(ew, fp, n * (4 + res))  # .to(input dtype)
            self.e.mem(ew, fp, n * 2 * out + width * out, out == 4)  # weight * x
        if not self.bw or not (x_grad or trainable):
            return
        wide = True
        if trainable:  # weight grad: mul, sum over tokens, view, detach
            self._bwd(ew, n * 3 * out, out == 4)
            self._bwd(ew, n * out + width * out, out == 4)
            self._bview(ew, 2)
        if not x_grad:
            return
        self._bwd(ew, n * 2 * out + width * out, out == 4)  # grad * weight
        if up:
            self._bwd(ew, n * (res + 4))  # cast grad up
        self._bwd(ew, n * 12, wide)  # grad * rsqrt
        self._bwd(ew, n * 8 + 4 * T, wide)  # grad * x
        self._bwd(ew, n * 4 + 4 * T, wide)  # sum
        self._bview(ew, 2)  # detach, expand
        self._bwd(ew, 8 * T, wide, 2)  # per-token values: pow, mul, mul
        self._bwd(ew, 12 * T, wide)
        self._bwd(ew, n * 4 + 4 * T, wide)  # div (mean backward, reads the expanded per-token value)
        self._bwd(ew, n * 8, wide, 2)  # pow, mul
        self._bwd(ew, n * 12, wide, 2)  # mul, add
        if up:
            self._bwd(ew, n * (4 + res))  # cast grad down

    def linear(
        self,
        name: str,
        part: str,
        in_f: int,
        out_f: int,
        x_grad: bool,
        x_e: int,
        bias: bool,
        tail: bool = False,
    ) -> None:
        """One Linear (base, 4-bit or LoRA-wrapped) reading T × in_f elements of x_e bytes; `tail`: the
        layer's last Linear in a checkpointing recompute (it stops after the adapter's A)."""
        g, T, fp = self.g, self.T, self.fp
        lora = (name, part) in self.targets
        term = "compute"
        # -- base layer
        if g.qlora and part != "lm_head":
            if x_e != g.c:
                self.e.mem("elementwise", fp, T * in_f * (x_e + g.c))
            self.e.view("elementwise", fp, 1.5)
            self.dequant(in_f * out_f, [fp] + (["bwd"] if self.bw and x_grad else []))
            self.e.gemm(term, fp, T, out_f, in_f, g.c, out_f * g.c if bias else 0)
            if g.lin_out != g.c:
                self.e.mem("elementwise", fp, T * out_f * (g.c + g.lin_out))
            if self.bw and self._needs_dx(x_grad):
                if g.lin_out != g.c:
                    self._bwd("elementwise", T * out_f * (g.lin_out + g.c))
                self.e.gemm(term, "bwd", T, in_f, out_f, g.c)
                self._bview(term, 2)
                if x_e != g.c:
                    self._bwd("elementwise", T * in_f * (g.c + x_e))
        else:
            if g.amp:  # autocast: the input cast per call, the weight cast once per forward
                if x_e != 2:
                    self.e.mem("elementwise", fp, T * in_f * (x_e + 2))
                self.e.mem("elementwise", fp, in_f * out_f * 6)
            e = g.c
            self.e.view(term, fp, 3)
            self.e.gemm(term, fp, T, out_f, in_f, e, out_f * e if bias else 0)
            if self.bw:
                trains = g.full or (part == "lm_head" and False)
                if trains:  # weight gradient: (out × T)·(T × in)
                    self._bview(term, 2)
                    self.e.gemm(term, "bwd", out_f, in_f, T, e)
                    self._bview(term, 3)
                    if bias:
                        self._bwd(term, T * out_f * e + out_f * e)
                if self._needs_dx(x_grad):
                    self._bview(term, 1)
                    self.e.gemm(term, "bwd", T, in_f, out_f, e)
                    self._bview(term, 1)
                if trains:
                    self._bview(term, 2)  # t, detach (AccumulateGrad)
                if g.amp and x_e != 2 and self._needs_dx(x_grad):
                    self._bwd("elementwise", T * in_f * (2 + x_e))
        if lora:
            self.lora(in_f, out_f, x_grad, x_e, stop_after_a=tail)

    def dequant(self, w: int, phases: list[str]) -> None:
        """A 4-bit weight of w elements dequantized once per pass (bitsandbytes: nested absmax first
        under double quantization; a weight quantized from fp16 is dequantized to fp16 and cast)."""
        g = self.g
        blocks = w // 64
        outer = 4 * -(-blocks // 256)
        for phase in phases:
            if self.cfg.method.double_quant:  # nested absmax: 8-bit → fp32 (256-entry code), + offset
                self.e.mem("dequant", phase, 5 * blocks + outer + 1024)
                self.e.mem("dequant", phase, 8 * blocks + 4)
            self.e.mem("dequant", phase, w // 2 + 4 * blocks + w * g.c)  # NF4 → 16-bit
            if g.dequant_bytes > g.c:  # the dequantized weight cast to the compute dtype
                self.e.mem("dequant", phase, w * g.dequant_bytes)

    def _needs_dx(self, x_grad: bool) -> bool:
        return x_grad

    def lora(self, in_f: int, out_f: int, x_grad: bool, x_e: int, stop_after_a: bool = False) -> None:
        """PEFT's adapter around a Linear: cast, dropout, A, B, scale, add, cast back (a recompute
        that needs nothing beyond A's output stops there)."""
        g, T, fp, ad = self.g, self.T, self.fp, "adapters"
        a, r = g.a, g.r
        out_e = g.lin_out
        if g.qlora:  # bnb layers: result = result.clone()
            self.e.mem(ad, fp, 2 * T * out_f * out_e, out_e == 4)
        cast_in = x_e != a
        if cast_in:
            self.e.mem(ad, fp, T * in_f * (x_e + a))
        if g.dropout:
            if g.cpu:  # bernoulli_ (random numbers: bytes as the trace counts them), div_, mul
                self.e.view(ad, fp, 1)
                add(self.e.ops, Op(ad, "rng", fp, 0.0, float(3 * T * in_f * a), a == 4))
                self.e.mem(ad, fp, 2 * T * in_f * a, a == 4)
                self.e.mem(ad, fp, 3 * T * in_f * a, a == 4)
            else:  # native_dropout: output + 1-byte mask, one fused kernel
                add(self.e.ops, Op(ad, "rng", fp, 0.0, float(T * in_f * (2 * a + 1)), a == 4))
        self.e.view(ad, fp, 6)
        self.e.gemm(ad, fp, T, r, in_f, a)  # A
        if stop_after_a:
            return
        self.e.gemm(ad, fp, T, out_f, r, a)  # B
        self.e.mem(ad, fp, 2 * T * out_f * a, a == 4)  # * scaling
        sum_e = max(out_e, a)
        if g.cpu and out_e != a:  # CPU: the narrower operand is cast to the result's dtype first
            narrow = min(out_e, a)
            self.e.mem(ad, fp, T * out_f * (narrow + sum_e))
            self.e.mem(ad, fp, T * out_f * 3 * sum_e, sum_e == 4)  # result + lora
        else:
            self.e.mem(ad, fp, T * out_f * (out_e + a + sum_e), sum_e == 4)  # result + lora
        cast_out = sum_e != out_e  # result.to(result dtype)
        if cast_out:
            self.e.mem(ad, fp, T * out_f * (sum_e + out_e))
        if not self.bw:
            return
        if cast_out:
            self._bwd(ad, T * out_f * (out_e + sum_e))
        if out_e != sum_e:
            self._bwd(ad, T * out_f * (sum_e + out_e))  # grad to the base output, cast down
        self._bwd(ad, 2 * T * out_f * a, a == 4)  # scaling
        # B: weight grad + input grad; A: weight grad (+ input grad when x needs one)
        self._bview(ad, 9)
        self.e.gemm(ad, "bwd", out_f, r, T, a)
        self.e.gemm(ad, "bwd", T, r, out_f, a)
        self._bview(ad, 6 if x_grad else 4)
        self.e.gemm(ad, "bwd", r, in_f, T, a)
        if x_grad:
            self.e.gemm(ad, "bwd", T, in_f, r, a)
            if g.dropout:
                if g.cpu:
                    self._bwd(ad, 3 * T * in_f * a, a == 4)
                else:
                    self._bwd(ad, T * in_f * (2 * a + 1), a == 4)
            if cast_in:
                self._bwd(ad, T * in_f * (a + x_e))

    def attention_core(self, x_grad: bool) -> None:
        """RoPE, k/v repeat, the attention kernel(s) and the output layout, on q/k/v of dtype e."""
        g, T, fp, d, t = self.g, self.T, self.fp, self.d, self.t
        e = g.lin_out if not g.amp else 2
        ew = "elementwise"
        nq, nkv = T * d.q, T * d.kv
        self.e.view(ew, fp, 6)  # view + transpose of q, k, v
        if t.qk_norm:
            for width_total in (nq, nkv):
                self._qk_norm(width_total, x_grad)
        if not t.learned_positions:  # RoPE on q and k
            self.e.view(ew, fp, 2)
            for n in (nq, nkv):
                self.e.mem(ew, fp, 2 * n * e + self.s * d.head_dim * e, e == 4)  # * cos
                self.e.view(ew, fp, 2)
                self.e.mem(ew, fp, n * e, e == 4)  # neg (half)
                self.e.mem(ew, fp, 2 * n * e, e == 4)  # cat
                self.e.mem(ew, fp, 2 * n * e + self.s * d.head_dim * e, e == 4)  # * sin
                self.e.mem(ew, fp, 3 * n * e, e == 4)  # add
                if self.bw and x_grad:
                    self._bwd(ew, 2 * n * e + self.s * d.head_dim * e, e == 4, 2)  # grad * cos, * sin
                    self._bview(ew, 2)
                    self._bwd(ew, n * e, e == 4)  # neg
                    self._bwd(ew, 1.5 * n * e, e == 4, 2)  # slice_backward (half in, whole out)
                    self._bwd(ew, 3 * n * e, e == 4, 2)  # adds
        repeat = d.kv < d.q and (g.masked or g.eager)
        if repeat:  # repeat_kv: expand + copy, for k and v
            self.e.view(ew, fp, 6)
            self.e.mem(ew, fp, (nq + nkv) * e, e == 4, 2)
            if self.bw and x_grad:
                self._bview(ew, 4)
                self._bwd(ew, nq * e + nkv * e, e == 4, 2)  # sum over the repeats
        if g.masked:  # two scalars, then where → the additive mask
            self.e.mem(ew, fp, e, e == 4, 2)
            self.e.mem(ew, fp, self.b * self.s * self.s * (1 + e) + 2 * e, e == 4)
        if g.eager:
            self.eager_core(e, x_grad)
        else:
            kv_read = nq if repeat else nkv
            fl = 4.0 * self.b * d.heads * self.s * self.s * d.head_dim
            mask = self.b * self.s * self.s * e if g.masked else 0
            lse = 4 * T * d.heads
            fwd_io = (2 * nq + 2 * kv_read) * e + mask + lse  # q, k, v, mask → out, log-sum-exp
            bwd_io = (4 * nq + 4 * kv_read) * e + lse + mask  # dO, q, k, v, out, lse, mask → dq, dk, dv
            add(self.e.ops, Op("attention", "attn", fp, fl, float(fwd_io), e == 4, masked=g.masked))
            self.e.view(ew, fp, 1)
            if self.bw and x_grad:
                bwd = Op("attention", "attn", "bwd", 2.5 * fl, float(bwd_io), e == 4, masked=g.masked)
                add(self.e.ops, bwd)
                self._bview(ew, 4)
        self.e.view(ew, fp, 3)  # transpose/view into o_proj's layout
        if self.bw and x_grad:  # k, v (and q) gradients back to (b, s, heads·hd): copies
            self._bview(ew, 6)
            self._bwd(ew, 2 * nkv * e, e == 4, 2)
            self._bwd(ew, 2 * nq * e, e == 4)

    def _qk_norm(self, n: int, x_grad: bool) -> None:
        """Qwen3/Gemma-3 RMSNorm over head_dim on q or k (n elements of the projection's dtype)."""
        e = self.g.lin_out if not self.g.amp else 2
        self.norm(self.d.head_dim, x_grad, n / self.d.head_dim, e)

    def eager_core(self, e: int, x_grad: bool) -> None:
        fp, d, ew, at = self.fp, self.d, "elementwise", "attention"
        bh, s = self.b * d.heads, self.s
        scores = bh * s * s
        self.e.view(ew, fp, 4)
        self.e.gemm(at, fp, s, s, d.head_dim, e, batch=bh)  # q·kᵀ
        self.e.view(ew, fp, 1)
        self.e.mem(at, fp, 2 * scores * e, e == 4)  # * scaling
        if self.t.attn_softcap:  # / cap, tanh, * cap
            self.e.mem(at, fp, 2 * scores * e, e == 4, 3)
        self.e.mem(at, fp, 2 * scores * e + self.b * s * s * e, e == 4)  # + mask
        self.e.mem(at, fp, scores * (e + 4), True)  # softmax in fp32
        self.e.mem(at, fp, scores * (4 + e))  # cast back
        self.e.gemm(at, fp, s, d.head_dim, s, e, batch=bh)  # · v
        self.e.view(ew, fp, 3)
        if self.bw and x_grad:
            self.e.gemm(at, "bwd", s, s, d.head_dim, e, batch=bh)  # dP
            self.e.gemm(at, "bwd", s, d.head_dim, s, e, batch=bh)  # dV
            self._bwd(at, scores * (e + 4))  # cast
            self._bwd(at, 3 * scores * 4, True)  # softmax backward
            if self.t.attn_softcap:
                self._bwd(at, 3 * scores * e, e == 4, 3)
            self._bwd(at, 2 * scores * e, e == 4)  # scaling
            self.e.gemm(at, "bwd", s, d.head_dim, s, e, batch=bh)  # dQ
            self.e.gemm(at, "bwd", d.head_dim, s, s, e, batch=bh)  # dK
            self._bview(ew, 10)

    # -- the model --------------------------------------------------------------------------------
    def layer(self, x_grad: bool) -> None:
        """One decoder layer; x_grad: whether its input (the residual stream) needs a gradient."""
        g, d, t, T = self.g, self.d, self.t, self.T
        ew = "elementwise"
        self.norm(d.h, x_grad)
        normed_e = 4 if t.gemma_norm and g.res == 4 else g.res
        # projections: the norm output feeds them (and their adapters)
        inner_grad = x_grad or g.full or bool(self.targets)
        consumers = 0
        if t.fused_qkv:
            name = "c_attn" if t.conv1d else "qkv_proj"
            self.linear(name, "attn", d.h, d.q + 2 * d.kv, x_grad, normed_e, t.qkv_bias)
            consumers += 1 + (("qkv_proj", "attn") in self.targets or ("c_attn", "attn") in self.targets)
            self.e.view(ew, self.fp, 3)  # split
            if not t.conv1d:  # Phi-3: q, k, v sliced out of qkv are copied contiguous; their grads
                e = g.lin_out if not g.amp else 2  # are stitched back (counted on the trace)
                nq = T * d.q
                self.e.mem(ew, self.fp, 2 * nq * e, e == 4, 3)
                if self.bw:
                    self._bwd(ew, 9 * nq * e, e == 4, 2)
                    self._bwd(ew, 4 * nq * e, e == 4, 3)
                    self._bwd(ew, 3 * nq * e, e == 4, 2)
                    self._bwd(ew, nq * e, e == 4, 2)
        else:
            for name, width in (("q_proj", d.q), ("k_proj", d.kv), ("v_proj", d.kv)):
                self.linear(name, "attn", d.h, width, x_grad, normed_e, t.qkv_bias)
                consumers += 1 + ((name, "attn") in self.targets)
        if x_grad:
            self.grad_adds(d.h, normed_e, consumers)
        self.attention_core(inner_grad)
        o_name = "c_proj" if t.conv1d else "o_proj"
        self.linear(o_name, "attn", d.q, d.h, inner_grad, g.lin_out if not g.amp else 2, t.o_bias)
        if t.norms_per_layer == 4:
            self.norm(d.h, inner_grad)
        self.e.mem(ew, self.fp, 3 * T * d.h * g.res, g.res == 4)  # residual add
        if self.bw and inner_grad:
            self._bwd(ew, 3 * T * d.h * g.res, g.res == 4)  # the residual's two gradients summed
        self.norm(d.h, inner_grad)
        self.mlp(inner_grad, normed_e)
        if t.norms_per_layer == 4:
            self.norm(d.h, inner_grad)
        if self.rec:
            return  # the final residual add saves nothing: the recompute has stopped
        self.e.mem(ew, self.fp, 3 * T * d.h * g.res, g.res == 4)  # residual add
        if self.bw and inner_grad:
            self._bwd(ew, 3 * T * d.h * g.res, g.res == 4)

    def mlp(self, x_grad: bool, x_e: int) -> None:
        g, d, t, T, fp = self.g, self.d, self.t, self.T, self.fp
        ew = "elementwise"
        act_e = g.lin_out if not g.amp else 2
        n = T * d.i
        wide = act_e == 4
        if t.moe:  # router + top-k experts, counted as dense GEMMs over the routed tokens
            self.linear("gate", "router", d.h, d.experts, x_grad, x_e, False)
            self.e.mem(ew, fp, T * d.experts * 8, True, 6)
            k = d.active_experts
            for _ in range(3):
                self.e.gemm("compute", fp, T * k, d.i, d.h, g.c)
                if self.bw:
                    self.e.gemm("compute", "bwd", T * k, d.h, d.i, g.c)
                    if g.full:
                        self.e.gemm("compute", "bwd", d.i, d.h, T * k, g.c)
            self.e.mem(ew, fp, 3 * n * k * act_e, wide, 2)
            self._bwd(ew, 3 * n * k * act_e, wide, 3)
            return
        if t.gated_mlp:
            if t.fused_gate_up:
                self.linear("gate_up_proj", "mlp", d.h, 2 * d.i, x_grad, x_e, t.mlp_bias)
                self.e.view(ew, fp, 2)  # chunk
                if self.bw:
                    self._bwd(ew, 2 * n * act_e + 2 * n * act_e, wide)  # cat of the two halves' grads
                consumers = 1 + (("gate_up_proj", "mlp") in self.targets)
            else:
                self.linear("gate_proj", "mlp", d.h, d.i, x_grad, x_e, t.mlp_bias)
                self.linear("up_proj", "mlp", d.h, d.i, x_grad, x_e, t.mlp_bias)
                consumers = 2 + (("gate_proj", "mlp") in self.targets) + (("up_proj", "mlp") in self.targets)
            self.e.mem(ew, fp, 2 * n * act_e, wide)  # act(gate)
            down_needed = g.full or ("down_proj", "mlp") in self.targets or t.norms_per_layer == 4
            if not self.rec or down_needed:  # a recompute stops at the product's saved inputs
                self.e.mem(ew, fp, 3 * n * act_e, wide)  # * up
            if self.bw:
                self._bwd(ew, 3 * n * act_e, wide, 2)  # mul backward (both operands)
                self._bwd(ew, 3 * n * act_e, wide)  # act backward
        else:  # fc → GELU → proj
            self.linear("c_fc", "mlp", d.h, d.i, x_grad, x_e, t.mlp_bias)
            self.e.mem(ew, fp, 2 * n * act_e, wide)
            if self.bw:
                self._bwd(ew, 3 * n * act_e, wide)
            consumers = 1 + (("c_fc", "mlp") in self.targets)
        if x_grad:
            self.grad_adds(d.h, x_e, consumers)
        down = "c_proj" if t.conv1d else "down_proj"
        if self.rec and t.norms_per_layer != 4 and (down, "mlp") not in self.targets:
            return  # the recompute stops once the down projection's input exists
        self.linear(down, "mlp", d.i, d.h, True, act_e, t.mlp_bias, tail=self.rec and t.norms_per_layer != 4)

    def head(self) -> None:
        """Final norm, lm_head, loss (logits cast to fp32, log-softmax, NLL) and their backward."""
        g, d, T, fp = self.g, self.d, self.T, self.fp
        self.norm(d.h, True)
        x_e = 4 if self.t.gemma_norm and g.res == 4 else g.res
        self.e.view("loss", fp, 1)
        lm_e = 4 if g.qlora and g.res == 4 else g.w  # kbit preparation upcasts lm_head to fp32
        if g.lm_head_4bit:  # a 4-bit output layer: dequantized every pass, a 16-bit GEMM
            lm_e = g.c
            self.dequant(d.vocab * d.h, [fp] + (["bwd"] if self.bw else []))
        head_e = 2 if g.amp else lm_e
        if x_e != head_e:
            self.e.mem("elementwise", fp, T * d.h * (x_e + head_e))
        self.e.view("compute", fp, 3)
        self.e.gemm("compute", fp, T, d.vocab, d.h, head_e)
        V = T * d.vocab
        if self.t.final_softcap:
            self.e.mem("loss", fp, 2 * V * head_e, head_e == 4, 3)
        if head_e != 4:
            self.e.mem("loss", fp, V * (head_e + 4))  # logits.float()
        self.e.mem("loss", fp, 8 * self.b + 16 * self.b * self.s, False, 2)  # labels pad/shift, clone
        self.e.view("loss", fp, 4)
        self.e.mem("loss", fp, 8 * V, True)  # log_softmax
        self.e.view("loss", fp, 1)
        self.e.mem("loss", fp, 16 * T, True)  # nll (gathers one value per token)
        self.e.mem("loss", fp, 8, True)  # / num_items
        if not self.bw:
            return
        self._bwd("loss", 8, True)  # div
        self._bwd("loss", 4 * V + 8 * T, True)  # nll backward (writes the whole gradient)
        self._bview("loss", 2)
        self._bwd("loss", 12 * V, True)  # log_softmax backward
        if head_e != 4:
            self._bwd("loss", V * (4 + head_e))  # cast back
        if self.t.final_softcap:
            self._bwd("loss", 3 * V * head_e, head_e == 4, 3)
        trains_head = g.full or ("lm_head", "lm_head") in self.targets
        self._bview("compute", 2)
        if trains_head:
            self.e.gemm("compute", "bwd", d.vocab, d.h, T, head_e)
            self._bview("compute", 3)
        self.e.gemm("compute", "bwd", T, d.h, d.vocab, head_e)
        self._bview("compute", 2)
        if x_e != head_e:
            self._bwd("elementwise", T * d.h * (head_e + x_e))

    def preamble(self) -> None:
        """Embedding lookup, position ids, causal/padding mask, RoPE tables (once per forward)."""
        g, d, T, fp = self.g, self.d, self.T, self.fp
        emb_e = 4 if g.qlora and g.res == 4 else g.w
        self.e.mem("elementwise", fp, T * d.h * 2 * emb_e + 8 * T)  # gather of T rows
        if self.t.learned_positions:
            self.e.mem("elementwise", fp, T * d.h * 3 * emb_e)
        mem_n, views = MODEL_PREAMBLE_MASKED if g.masked else MODEL_PREAMBLE_CAUSAL
        mask_bytes = self.b * self.s * self.s if g.masked else 0
        self.e.mem("elementwise", fp, (mask_bytes + 16 * self.s * d.head_dim) / mem_n, True, mem_n)
        self.e.view("elementwise", fp, views)
        if self.bw and g.full:  # embedding backward: zeros + index_add, accumulate into the (tied) weight
            self._bwd("elementwise", d.vocab * d.h * g.w + T * d.h * g.w + 8 * T)
            if d.tied:
                self._bwd("elementwise", 3 * d.vocab * d.h * g.w)
            self._bview("elementwise", 1)

    def layers(self, first_grad: bool) -> None:
        """Every decoder layer: identical ones walked once and counted `layers` times (the first one
        separately when its input needs no gradient)."""
        n = self.d.layers
        if not first_grad:
            self.layer(False)
            n -= 1
        if n <= 0:
            return
        outer, self.e = self.e, Emit()
        self.layer(True)
        for op, c in self.e.ops.items():
            add(outer.ops, op, c * n)
        self.e = outer

    def forward_backward(self) -> OpList:
        g = self.g
        self.preamble()
        self.layers(g.full or g.gc)  # checkpointing makes the embedding output require grad
        self.head()
        return self.e.ops


@by_identity(maxsize=8192)
def _micro_batch_ops(cfg: RunConfig, b: int, s: int, stack: Stack) -> OpList:
    ops = Walk(cfg, b, s, stack=stack).forward_backward()
    if cfg.train.gradient_checkpointing:  # each decoder layer's forward again, in the backward
        rec = Walk(cfg, b, s, rec=True, stack=stack)
        rec.layers(True)
        for op, c in rec.e.ops.items():
            add(ops, op, c)
        layers = rec.d.layers  # checkpoint bookkeeping: detach/alias of every saved tensor, both ways
        add(ops, Op("elementwise", "view", "rec"), CHECKPOINT_VIEWS[0] * layers)
        add(ops, Op("elementwise", "view", "bwd"), CHECKPOINT_VIEWS[1] * layers)
    return ops


@by_identity(maxsize=8192)
def _forward_ops(cfg: RunConfig, b: int, s: int, stack: Stack) -> OpList:
    return Walk(cfg, b, s, backward=False, stack=stack).forward_backward()


def forward_ops(cfg: RunConfig, b: int, s: float, stack: Stack = Stack()) -> OpList:
    """Ops of a forward pass only (evaluation, generation): the micro-batch's forward ops."""
    return _forward_ops(cfg, int(b), max(1, int(round(s))), stack)


def micro_batch_ops(cfg: RunConfig, b: int, s: float, stack: Stack = Stack()) -> OpList:
    """Ops of one micro-batch (b sequences × s tokens): forward, backward, recompute; `stack`: what the
    training code does where stacks differ (advisor.estimator.static.Stack; default: our runner)."""
    return _micro_batch_ops(cfg, int(b), max(1, int(round(s))), stack)


@by_identity()
def optimizer_ops(cfg: RunConfig) -> OpList:
    """Ops of one optimizer step on this process's trainable parameters (see the module docstring)."""
    e = Emit()
    trainable = n_trainable(cfg)
    shard = cfg.gpu.count if cfg.gpu.count > 1 and cfg.parallel != "ddp" else 1
    p = trainable / shard
    tensors = _trainable_tensors(cfg)
    full = cfg.method.name == "full"
    pe = (4 if cfg.precision == "fp32" or cfg.precision.startswith("amp") else 2) if full else 4
    wide = pe == 4
    op = "opt"
    # gradient norm (foreach) and clipping: norm, stack, vector norm, add, reciprocal, mul, clamp, scale
    e.mem("optimizer", op, p * pe, wide)
    e.mem("optimizer", op, 64, True, 6)
    e.mem("optimizer", op, 2 * p * pe, wide)
    e.view("optimizer", op, 1)  # the norm read on the host
    name = cfg.train.optimizer
    if name == "adamw" and cfg.gpu.is_cpu:
        e.mem("optimizer", op, 4 * tensors, True)  # step counters
        # param, grad, both states read and written (torch's schema marks the grads mutable too)
        add(e.ops, Op("optimizer", "fused", op, 0.0, 8.0 * p * pe, wide))
        e.view("optimizer", op, 2)
    elif name == "adamw":  # foreach: lerp, mul, addcmul, sqrt, div, add, addcdiv (+ step counters)
        e.mem("optimizer", op, 4 * tensors, True)
        for passes in (3, 2, 4, 2, 2, 2, 4):
            e.mem("optimizer", op, passes * p * pe, wide)
        e.view("optimizer", op, 2 * tensors + 3)  # bias corrections read per tensor on the host
    elif name == "sgd":
        e.mem("optimizer", op, 3 * p * pe, wide)
    else:  # bitsandbytes: one kernel per tensor (param, grad, two states of 1 or 4 bytes)
        state = 2 if "8bit" in name else 8
        e.mem("optimizer", op, (p * (2 * pe + pe + 2 * state)) / max(1, tensors), wide, tensors)
    return e.ops


@by_identity()
def _trainable_tensors(cfg: RunConfig) -> int:
    if cfg.method.is_adapter:
        return 2 * sum(lin.count for lin in targeted(cfg.model, cfg.method.target_modules))
    t, d = traits(cfg.model), dims(cfg.model)
    lins = linear_layers(cfg.model)
    n = sum(lin.count * (1 + lin.bias) for lin in lins if lin.part != "lm_head")
    n += d.layers * t.norms_per_layer * (2 if t.layernorm else 1) + (2 if t.layernorm else 1)
    n += 1 + (0 if d.tied else 1) + (1 if t.learned_positions else 0)
    return n + (2 * d.layers if t.qk_norm else 0)


def step_ops(cfg: RunConfig, b: int, s: float, stack: Stack = Stack()) -> tuple[OpList, OpList]:
    """(one micro-batch's ops, the optimizer step's ops) at micro-batch b × s tokens."""
    return micro_batch_ops(cfg, b, s, stack), optimizer_ops(cfg)


__all__ = ["micro_batch_ops", "optimizer_ops", "param_split", "step_ops"]

"""Measure this CPU for the step-time model (advisor/estimator/steptime): what `gpu=cpu` runs at.

`ensure_cpu_throughput(path)` returns outputs/cpu-throughput.json, measuring it first when missing or
written by an older probe (no `version` ≥ PROBE_VERSION). What it measures, each a microbenchmark of
this machine and this software stack, never a training run:

- `bf16_tflops`, `fp32_tflops`: square matmuls of MATMUL_N (the headline numbers);
- `gemm`: GEMMs at the shapes training runs (tokens × width, width × width, rank-r adapters, the
  weight-gradient layout), per dtype class ("16": bf16, "32": fp32), fitted as
  t = FLOPs / rate + bytes / stream + fixed (least squares on relative error); the points are kept;
- `stream`: bytes/s of streaming ops (add, mul, casts) by bytes touched, 16 KiB … 64 MiB: the cache
  hierarchy as the ops see it, per dtype class;
- `host`: seconds of host work per op, from tiny real Hugging Face Llama models (full, LoRA and
  QLoRA: transformers' and PEFT's Python included) whose ops' own work is negligible: forward and
  backward time over the ops each runs, views (timed alone) taken out;
- `attention`: the SDPA CPU kernel, forward and backward, causal and masked, FLOPs executed / s and a
  fixed cost;
- `optimizer`: torch's fused AdamW (the runner's CPU optimizer) in bytes/s (8 × element size per
  parameter: parameter, gradient and both states, read and written), per dtype class;
- `dequant`: bitsandbytes' NF4 dequantization (what QLoRA runs per weight per pass) in bytes/s;
- `rng`: bernoulli_ (LoRA dropout's mask on the CPU) in bytes/s;
- `disk`: bytes/s writing a checkpoint-like file and reading weights (this machine's disk);
- `imports`: seconds a fresh process spends importing torch + transformers, and peft + bitsandbytes.

`python -m runners.cpu_probe [PATH] [--force]` runs it by hand (~20-30 s on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROBE_VERSION = 4  # 4: attention fitted with a term per byte (its per-row work)
MATMUL_N = 1024  # square matmul size (elements per side): big enough to reach the BLAS steady state
SECONDS_PER_DTYPE = 1.0  # measuring time per dtype for the headline matmul (s)
SECONDS_PER_POINT = 0.08  # measuring time per GEMM shape / stream size / attention shape (s)
DEFAULT_PATH = Path("outputs/cpu-throughput.json")
IMPORTS = (  # what every runner imports; then with what adapter runs add
    "torch, transformers, transformers.models.llama.modeling_llama",
    "torch, transformers, transformers.models.llama.modeling_llama, peft, bitsandbytes",
)
# (m, n, k): tokens 256/1024 × widths 256/768/2048, weight-gradient layouts (k = tokens) and rank-16
# adapters; enough spread in FLOPs per byte to separate the three fitted terms
GEMM_SHAPES = (
    (256, 256, 256),
    (1024, 256, 256),
    (1024, 768, 768),
    (1024, 2048, 768),
    (1024, 768, 2048),
    (768, 768, 1024),
    (2048, 768, 1024),
    (1024, 4096, 256),
    (1024, 16, 768),
    (1024, 768, 16),
    (16, 768, 1024),
    (768, 16, 1024),
    (256, 16, 256),
    (16, 256, 256),
)
STREAM_BYTES = tuple(2**p for p in range(14, 27, 2))  # 16 KiB … 64 MiB touched
ATTENTION_SHAPES = ((8, 4, 64, 64), (8, 4, 128, 64), (4, 12, 256, 64), (2, 8, 512, 64))  # b, heads, s, d


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


# The clock compute is timed by. With one torch thread (a cell of a sweep with several workers on
# this machine's cores) it is the thread's CPU time: what that single-threaded work costs on a core of
# its own, whatever else the machine runs meanwhile; with several threads the wall clock (their
# waits on each other are part of the cost).
_CLOCK: list[Callable[[], float]] = [time.perf_counter]


def _clock() -> float:
    return _CLOCK[0]()


def _timed(fn: Callable[[], Any], seconds: float, warmup: int = 2, rounds: int = 5) -> float:
    """Seconds per call of fn: the fastest of `rounds` windows of seconds/rounds (each ≥ 1 call),
    after `warmup` calls. The minimum keeps a measurement on a shared machine from recording
    someone else's load."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(rounds):
        calls, t0 = 0, _clock()
        while True:
            fn()
            calls += 1
            elapsed = _clock() - t0
            if elapsed >= seconds / rounds:
                break
        best = min(best, elapsed / calls)
    return best


def matmul_tflops(dtype, n: int, seconds: float) -> float:
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    return 2 * n**3 / _timed(lambda: torch.mm(a, b), seconds, warmup=1) / 1e12


def _fit_gemm(points: list[tuple[float, float, float]]) -> dict[str, float]:
    """t = flops/rate + bytes/stream + fixed, least squares on relative error, terms kept ≥ 0."""
    import torch

    a = torch.tensor([[f / t, b / t, 1 / t] for f, b, t in points], dtype=torch.float64)
    y = torch.ones(len(points), 1, dtype=torch.float64)
    cols = [0, 1, 2]
    while True:
        sol = torch.linalg.lstsq(a[:, cols], y).solution.flatten().tolist()
        if all(v >= 0 for v in sol) or len(cols) == 1:
            break
        cols.pop(min(range(len(cols)), key=lambda i: sol[i]))
    coef = dict.fromkeys((0, 1, 2), 0.0) | dict(zip(cols, sol, strict=True))
    return {
        "rate": 1 / coef[0] if coef[0] > 0 else 1e18,
        "stream": 1 / coef[1] if coef[1] > 0 else 1e18,
        "fixed_s": coef[2],
    }


COLD_BYTES = 48 << 20  # operands cycled through per GEMM shape: more than the caches hold


def _cold_gemm(m: int, n: int, k: int, dtype: Any) -> Callable[[], Any]:
    """A GEMM on operands not in cache (as in a training step, where each layer's inputs and weights
    were last touched long before): cycles through enough distinct buffers to exceed the caches."""
    import torch

    per = (m * k + k * n) * torch.tensor([], dtype=dtype).element_size()
    count = max(2, min(64, COLD_BYTES // max(per, 1)))
    xs = [torch.randn(m, k).to(dtype) for _ in range(count)]
    ws = [torch.randn(n, k).to(dtype) for _ in range(count)]  # Linear weights (out, in), used transposed
    state = [0]

    def call() -> Any:
        i = state[0] = (state[0] + 1) % count
        return torch.mm(xs[i], ws[i].t())

    return call


def measure_gemm(seconds: float) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"points": []}
    for key, dtype in (("16", torch.bfloat16), ("32", torch.float32)):
        size = 2 if key == "16" else 4
        pts = []
        for m, n, k in GEMM_SHAPES:
            t = _timed(_cold_gemm(m, n, k, dtype), seconds)
            pts.append((2.0 * m * n * k, float(size * (m * k + k * n + m * n)), t))
            out["points"].append([key, m, n, k, round(t, 9)])
        out[key] = {k: round(v, 9 if k == "fixed_s" else 1) for k, v in _fit_gemm(pts).items()}
    return out


def measure_stream(seconds: float, tiny_s: float) -> dict[str, list[list[float]]]:
    """bytes/s of add, mul and a cast by bytes touched (inputs + output), after the op's host cost."""
    import torch

    out: dict[str, list[list[float]]] = {}
    for key, dtype, other in (("16", torch.bfloat16, torch.float32), ("32", torch.float32, torch.bfloat16)):
        size = 2 if key == "16" else 4
        curve = []
        for nbytes in STREAM_BYTES:
            n = max(1, nbytes // (3 * size))
            a, b, c = torch.randn(n).to(dtype), torch.randn(n).to(dtype), torch.empty(n, dtype=dtype)
            t_add = _timed(functools.partial(torch.add, a, b, out=c), seconds)
            t_mul = _timed(functools.partial(torch.mul, a, b, out=c), seconds)
            t_cast = _timed(functools.partial(a.to, other), seconds)
            cast_bytes = n * (size + (6 - size))  # read this dtype, write the other
            # the op's own dispatch cost is the host term; what is left is streaming (at least 30 %
            # of the call: below that the difference is timing noise)
            rates = [
                3 * n * size / max(t_add - tiny_s, 0.3 * t_add),
                3 * n * size / max(t_mul - tiny_s, 0.3 * t_mul),
                cast_bytes / max(t_cast - tiny_s, 0.3 * t_cast),
            ]
            curve.append([float(3 * n * size), round(math.exp(sum(map(math.log, rates)) / 3), 1)])
        out[key] = curve
    return out


def _tiny_model(method: str):
    """A tiny real Llama (transformers + PEFT + bitsandbytes as the runner builds them)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=128,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)  # type: ignore[arg-type]  # (a dtype is valid)
    if method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    if method == "qlora":
        import bitsandbytes as bnb
        from peft import prepare_model_for_kbit_training

        for parent in list(model.model.layers.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    q = bnb.nn.Linear4bit(
                        child.in_features,
                        child.out_features,
                        bias=False,
                        compute_dtype=torch.bfloat16,
                        quant_type="nf4",
                        compress_statistics=True,
                    )
                    q.weight = bnb.nn.Params4bit(
                        child.weight.data.float(), requires_grad=False, quant_type="nf4"
                    ).to("cpu")  # type: ignore[misc]  # (bitsandbytes' override of .to)
                    setattr(parent, name, q)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lc = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lc)


def _count_ops(model, ids) -> dict[str, dict[str, int]]:
    """Ops a forward and a backward run, split into views and kernels (as the trace counts them)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from runners.trace.optime import IGNORED, VIEWS

    counts = {"fwd": {"view": 0, "op": 0}, "bwd": {"view": 0, "op": 0}}
    phase = ["fwd"]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name not in IGNORED:
                counts[phase[0]]["view" if name in VIEWS else "op"] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        phase[0] = "bwd"
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counts


def measure_host(seconds: float) -> dict[str, Any]:
    """Host seconds per op (forward, backward) for full, LoRA and QLoRA tiny models, and per view."""
    import torch

    x = torch.randn(4, 4)
    view_s = _timed(lambda: x.view(16), seconds / 2, warmup=10)
    out: dict[str, Any] = {"view": round(view_s, 9)}
    ids = torch.randint(0, 128, (1, 8))
    for method in ("full", "lora", "qlora"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _tiny_model(method)
        model.train()
        counts = _count_ops(model, ids)
        fwd = bwd = float("inf")
        t_end = _clock() + 4 * seconds
        reps = 0
        while _clock() < t_end or reps < 5:
            t0 = _clock()
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            t1 = _clock()
            loss.backward()
            t2 = _clock()
            model.zero_grad(set_to_none=True)
            if reps >= 2:  # first calls warm caches
                fwd, bwd = min(fwd, t1 - t0), min(bwd, t2 - t1)
            reps += 1
        host = {}
        for ph, t in (("fwd", fwd), ("bwd", bwd)):
            c = counts[ph]
            host[ph] = round(max(t - c["view"] * view_s, 0.0) / max(1, c["op"]), 9)
        out[method] = host
    return out


def measure_attention(seconds: float) -> dict[str, Any]:
    """The SDPA CPU kernel as transformers calls it: q a transposed (b, s, h, d) view, k/v contiguous,
    causal (is_causal) or with an additive mask (padded batches)."""
    import torch

    out: dict[str, Any] = {}
    for key, dtype in (("16", torch.bfloat16), ("32", torch.float32)):
        out[key] = _attention_fits(seconds, dtype)
    return out["16"] | out  # "fwd"/"bwd": the 16-bit kernel's (older readers); "16"/"32" by dtype


def _attention_fits(seconds: float, dtype: Any) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    e = torch.finfo(dtype).bits // 8
    pts: dict[str, list[tuple[float, float, float]]] = {"fwd": [], "bwd": []}
    for b, h, s, d in ATTENTION_SHAPES:
        flops = 4.0 * b * h * s * s * d  # QKᵀ and PV over the whole score matrix
        for masked in (False, True):
            q = torch.randn(b, s, h, d, dtype=dtype).transpose(1, 2).requires_grad_(True)
            k, v = (torch.randn(b, h, s, d, dtype=dtype, requires_grad=True) for _ in range(2))
            mask = None
            if masked:
                allowed = torch.ones(b, 1, s, s, dtype=torch.bool).tril()
                mask = torch.zeros(b, 1, s, s, dtype=dtype).masked_fill(~allowed, float("-inf"))

            def fwd(q=q, k=k, v=v, mask=mask):
                with torch.no_grad():
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)

            def both(q=q, k=k, v=v, mask=mask):
                F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, is_causal=mask is None
                ).sum().backward()

            t_f = _timed(fwd, seconds)
            t_b = max(_timed(both, seconds) - t_f, 1e-9)
            # the CPU kernel computes the whole score matrix, causal or masked (measured: equal times);
            # bytes as the step-time model counts them (q, k, v, out, log-sum-exp, mask; the backward
            # also dO, dq, dk, dv): its per-row work (softmax statistics, block buffers) scales with them
            n, lse, m = e * b * h * s * d, 4 * b * h * s, e * b * s * s if masked else 0
            pts["fwd"].append((flops, 4 * n + lse + m, t_f))
            pts["bwd"].append((2.5 * flops, 8 * n + lse + m, t_b))  # backward: 5 matmuls to the forward's 2
    out = {}
    for ph, p in pts.items():
        fit = _fit_gemm(p)
        out[ph] = {
            "rate": round(fit["rate"], 1),
            "stream": round(fit["stream"], 1),
            "fixed_s": round(fit["fixed_s"], 9),
        }
    return out


def measure_optimizer(seconds: float) -> dict[str, float]:
    import torch

    out = {}
    for key, dtype in (("16", torch.bfloat16), ("32", torch.float32)):
        n = 1 << 20
        params = [torch.nn.Parameter(torch.randn(n).to(dtype))]
        params[0].grad = torch.randn(n).to(dtype)
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=True)
        t = _timed(opt.step, seconds)
        out[key] = round(8 * n * params[0].element_size() / t, 1)
    return out


def measure_rng(seconds: float) -> float:
    """bytes/s of bernoulli_ on an fp32 tensor (CPU dropout's mask), its bytes counted as the trace
    counts an in-place op's: the tensor read, the result written and the argument it mutates."""
    import torch

    x = torch.empty(1 << 18)
    t = _timed(lambda: x.bernoulli_(0.95), seconds)
    return round(3 * x.numel() * 4 / t, 1)


def measure_dequant(seconds: float) -> float:
    import torch
    from bitsandbytes import functional as bnbf

    w = torch.randn(1024, 1024, dtype=torch.bfloat16)
    packed, qs = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    t = _timed(lambda: bnbf.dequantize_4bit(packed, qs), seconds)
    return round((packed.numel() + 2 * w.numel()) / t, 1)


def measure_imports() -> dict[str, float]:
    """Seconds a fresh Python process spends importing what a runner imports: torch + transformers
    (every run), and peft + bitsandbytes on top (adapter runs); fastest of two."""
    import subprocess
    import sys

    def run(mods: str) -> float:
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import {mods}"], check=True, capture_output=True)
            best = min(best, time.perf_counter() - t0)
        return best

    base, both = (run(mods) for mods in IMPORTS)
    return {"base": round(base, 3), "adapters": round(max(0.0, both - base), 3)}


def measure_disk(nbytes: int = 64 << 20) -> dict[str, float]:
    """bytes/s writing (torch.save, as checkpoints) and reading (safetensors, as model loading) a
    file of `nbytes` in outputs/ (the page cache included: what a run sees)."""
    import tempfile

    import torch
    from safetensors.torch import load_file, save_file

    t = {"w": torch.zeros(nbytes // 2, dtype=torch.bfloat16)}
    with tempfile.TemporaryDirectory(dir=DEFAULT_PATH.parent if DEFAULT_PATH.parent.is_dir() else None) as d:
        path = Path(d) / "probe.pt"
        t0 = time.perf_counter()
        torch.save(t, path)
        write = nbytes / (time.perf_counter() - t0)
        st = Path(d) / "probe.safetensors"
        save_file(t, str(st))
        t0 = time.perf_counter()
        load_file(str(st))
        read = nbytes / (time.perf_counter() - t0)
    return {"write": round(write, 1), "read": round(read, 1)}


def measure(n: int | None = None, seconds: float | None = None) -> dict:
    import torch

    n, seconds = n or MATMUL_N, seconds or SECONDS_PER_DTYPE
    point = min(SECONDS_PER_POINT, seconds / 4)
    _CLOCK[0] = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    t0 = time.perf_counter()
    # the import timings are fresh processes on a core of their own: beside the measurements when
    # these leave a core free (cells at one thread on 2 cores), after them otherwise
    imports: dict[str, dict[str, float]] = {}
    beside = torch.get_num_threads() < _cores()
    side = threading.Thread(target=lambda: imports.update(t=measure_imports()), daemon=True)
    if beside:
        side.start()
    tiny = torch.ones(4)
    tiny_s = _timed(lambda: torch.add(tiny, tiny), point, warmup=10)
    out = {
        "version": PROBE_VERSION,
        "bf16_tflops": round(matmul_tflops(torch.bfloat16, n, seconds), 5),
        "fp32_tflops": round(matmul_tflops(torch.float32, n, seconds), 5),
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cores": _cores(),
        "torch_threads": torch.get_num_threads(),
        "clock": "thread CPU time" if torch.get_num_threads() == 1 else "wall",
        "matmul_n": n,
        "gemm": measure_gemm(point),
        "stream": measure_stream(point, tiny_s),
        "host": measure_host(point),
        "attention": measure_attention(point),
        "optimizer": measure_optimizer(point),
        "dequant": measure_dequant(point),
        "rng": measure_rng(point),
        "disk": measure_disk(),
    }
    if beside:
        side.join()
    out["imports"] = imports.get("t") or measure_imports()  # (again here if the side thread failed)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def current(d: Any) -> bool:
    """Whether a cached measurement has everything this probe measures."""
    return (
        isinstance(d, dict)
        and d.get("version", 0) >= PROBE_VERSION
        and all(
            d.get(k) for k in ("bf16_tflops", "fp32_tflops", "gemm", "stream", "host", "attention", "rng")
        )
    )


def ensure_cpu_throughput(path: Path = DEFAULT_PATH, force: bool = False) -> dict:
    """The cached measurement at `path`, measured (and written atomically) when missing, unreadable
    or from an older probe."""
    path = Path(path)
    if not force:
        try:
            cached = json.loads(path.read_text())
            if current(cached):
                return cached
        except (OSError, ValueError):
            pass
    result = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.cpu_probe", description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH, help="where to write the JSON")
    ap.add_argument("--force", action="store_true", help="measure again even when the file exists")
    args = ap.parse_args(argv)
    print(json.dumps(ensure_cpu_throughput(args.path, args.force), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

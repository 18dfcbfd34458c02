"""CPU step time: the advisor's step-time model against real runner steps, profiled with torch.

Two models × three methods on this machine's CPU, each a real runner loop (runners.cell.prepare:
tokenizer, data, model, optimizer as `tunewise sweep` builds them):
- the demo base (3.5M Llama, outputs/demo/base) with the demo's settings (seq_len 128, micro-batch 8,
  padded batches of the demo task);
- a random-initialised ~100M Llama (16 layers, hidden 768, the demo tokenizer; built once into
  outputs/bench/llama-100m) on the demo task packed to 256 tokens, micro-batch 4.
For each: WARMUP steps, then STEPS optimizer steps timed one by one, repeated ROUNDS times round-robin
over the six loops (the same step indices every round: the same batches); a step's time is its
fastest round (the machine is shared), and the run's time is their sum. One extra round runs under
torch.profiler: per-op-class self times (GEMMs, attention, bitsandbytes, optimizer, everything else,
and the host time no op accounts for).
Predicted: advisor.estimator.steptime — the analytic op list at each timed step's exact batch shape
(micro-batch × padded length), timed with this CPU's probe (runners/cpu_probe.py), plus the
optimizer step; and the trace's op list (runners/trace) at the same shapes. No factor from these
measurements enters the model.

    .venv/bin/python bench/steptime_cpu.py --measure [--rounds 3] [--steps 12]   # time real steps (quiet lock!)
    .venv/bin/python bench/steptime_cpu.py [--write]   # the table from the recorded data; --write: the doc

The measurement (step times, batch shapes, profile) and the probe it was predicted with are kept in
docs/time-model-cpu.json, so the table in docs/time-model.md can be re-derived on any machine
(tests/advisor/test_time_model_doc.py checks it is current).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from advisor.config.catalog import repo_root
from advisor.config.schema import RunConfig, from_names
from advisor.estimator.steptime.ceilings import device
from advisor.estimator.steptime.cost import Timed, time_ops
from runners.cell import Learned, prepare
from runners.result import Progress

ROOT = repo_root()
BIG = ROOT / "outputs" / "bench" / "llama-100m"
BIG_ARCH: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 16,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "intermediate_size": 2048,
    "vocab_size": 2048,
    "max_position_embeddings": 512,
}
WARMUP = 3
_CLOCK = [time.perf_counter]  # what measure() times steps and the profiled round with
DOC = ROOT / "docs" / "time-model.md"
DATA = ROOT / "docs" / "time-model-cpu.json"
BEGIN, END = "<!-- cpu-table: bench/steptime_cpu.py --write -->", "<!-- /cpu-table -->"
CLASSES = {  # torch profiler op name → class
    "aten::mm": "gemm",
    "aten::addmm": "gemm",
    "aten::bmm": "gemm",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward": "attention",
    "aten::_fused_adamw_": "optimizer",
    "aten::_foreach_norm": "optimizer",
    "aten::_foreach_mul_": "optimizer",
    "bitsandbytes::dequantize_4bit": "dequant",
    "bitsandbytes::dequantize_blockwise": "dequant",
}


def build_big() -> Path:
    """The ~100M random Llama with the demo tokenizer (built once, bf16 safetensors)."""
    if (BIG / "config.json").is_file():
        return BIG
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**BIG_ARCH, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)  # type: ignore[arg-type]  # (a dtype is valid)
    tmp = BIG.with_name(BIG.name + ".tmp")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(ROOT / "outputs" / "demo" / "base").save_pretrained(tmp)
    tmp.rename(BIG)
    return BIG


def case_cfg(name: str, method: str) -> RunConfig:
    lora = {"r": 16} if method != "full" else {}
    data = {"path": str(ROOT / "outputs" / "demo" / "data" / "train.jsonl"), "rows": 600}
    if name == "demo-base":
        train = {"seq_len": 128, "micro_batch_size": 8, "grad_accum": 1, "gradient_checkpointing": False}
        cfg = from_names("demo-base", method, "cpu", data=data, train=train, lora=lora)
        return cfg.replace(model={"path": str(ROOT / "outputs" / "demo" / "base")})
    from advisor.estimator.params import total_params

    train = {
        "seq_len": 256,
        "micro_batch_size": 4,
        "grad_accum": 1,
        "packing": True,
        "gradient_checkpointing": False,
    }
    cfg = from_names("demo-base", method, "cpu", data=data, train=train, lora=lora, arch=BIG_ARCH)
    return cfg.replace(
        model={"path": str(BIG), "name": "llama-100m", "total_params": total_params(cfg.model)}
    )


def predicted(cfg: RunConfig, shapes: list[tuple[int, int]], trace: bool) -> Timed:
    """Predicted seconds of the steps with these (micro-batch, padded length) shapes: the step time
    `estimate` uses (advisor.estimator.timing.step_time: op list, optimizer, the loop's own work), or
    the same with the trace's op list in place of the analytic one."""
    from advisor.estimator.timing import optimizer_time, runner_ops, step_time

    dev = device(cfg)
    total = Timed()
    for b, s in shapes:
        if not trace:
            total.add(Timed(step_time(cfg, b, s).terms))
            continue
        from advisor.estimator.steptime.ops import ops_from_json
        from runners.trace.tracer import trace as run_trace

        row = run_trace(cfg.replace(train={"micro_batch_size": b, "seq_len": s}))
        ops = ops_from_json(row["time"]["ops"])
        micro = [(o, n) for o, n in ops.items() if o.phase != "opt"] + runner_ops(b, s)
        total.add(time_ops(micro, dev)).add(optimizer_time(cfg))
    return total


def measure(rounds: int, steps: int, threads: int) -> dict:
    """Time and profile the six real runner loops at `threads` torch threads (a sweep cell's share of
    the cores). Several threads: wall time (needs a quiet machine: /tmp/tw/quiet.lock). One thread:
    the thread's CPU time, as the probe then measures (runners/cpu_probe.py): a busy machine does not
    inflate it."""
    from runners.cpu_probe import ensure_cpu_throughput

    torch.set_num_threads(threads)
    clock = time.thread_time if threads == 1 else time.perf_counter
    _CLOCK[0] = clock
    # the probe measured here, now, with these threads (outputs/cpu-throughput.json is shared with
    # sweeps that re-measure it at their own thread count)
    probe = ensure_cpu_throughput(ROOT / "outputs" / "bench" / f"cpu-throughput-{threads}t.json", force=True)
    build_big()
    loops = {}
    for name in ("demo-base", "llama-100m"):
        for method in ("full", "lora", "qlora"):
            cfg = case_cfg(name, method)
            folder = ROOT / "outputs" / "bench" / f"steptime-{name}-{method}"
            loop, _, _ = prepare(
                cfg, folder, resume=False, baseline=False, progress=Progress(), learned=Learned()
            )
            loops[(name, method)] = loop
    n_steps = {"demo-base": steps, "llama-100m": max(2, steps // 2)}
    for loop in loops.values():
        for k in range(WARMUP):
            loop._step(k)
    times: dict = {key: [[] for _ in range(n_steps[key[0]])] for key in loops}
    load = []
    for _ in range(rounds):
        for key, loop in loops.items():
            load.append(os.getloadavg()[0])
            for i, k in enumerate(range(WARMUP, WARMUP + n_steps[key[0]])):
                t0 = clock()
                loop._step(k)
                times[key][i].append(clock() - t0)
    out: list[dict] = []
    for key, loop in loops.items():
        accum = loop.schedule.grad_accum
        shp = []
        for k in range(WARMUP, WARMUP + n_steps[key[0]]):
            for j in range(accum):
                rows = loop.batches.stream.micro_batch(k * accum + j)
                shp.append([len(rows), max(len(r.input_ids) for r in rows)])
        out.append(
            {
                "model": key[0],
                "method": key[1],
                "step_s": [min(t) for t in times[key]],
                "first_round_s": [t[0] for t in times[key]],
                "shapes": shp,
                "profile_s": profile(loop, WARMUP, WARMUP + n_steps[key[0]]),
            }
        )
    return {
        "probe_measured": probe.get("measured"),
        "threads": threads,
        "clock": "thread CPU time" if threads == 1 else "wall",
        "probe": probe,
        "load_avg": load,
        "cases": out,
    }


@contextlib.contextmanager
def recorded_probe(data: dict) -> Iterator[None]:
    """Predict with the probe the measurement was made with (not this machine's current one)."""
    from advisor.estimator import timing
    from advisor.estimator.steptime import cpu

    def clear() -> None:
        for fn in (timing.micro_time, timing.forward_time, timing.optimizer_time):
            fn.cache_clear()  # type: ignore[attr-defined]

    old = cpu.probe
    if data.get("probe"):
        cpu.probe = lambda: data["probe"]  # type: ignore[assignment]  # (the cached reader, replaced)
    clear()
    try:
        yield
    finally:
        cpu.probe = old  # type: ignore[assignment]
        clear()


def table_rows(data: dict, trace: bool = True) -> list[dict]:
    """Measured vs predicted per case (trace mode: the trace's op list, slow; else the stored one)."""
    stored = {(r["model"], r["method"]): r for r in data.get("rows", [])}
    rows = []
    with recorded_probe(data):
        for c in data["cases"]:
            rows.append(_row(c, stored, trace))
    return rows


def _row(c: dict, stored: dict, trace: bool) -> dict:
    cfg = case_cfg(c["model"], c["method"])
    n = len(c["step_s"])
    shapes = [tuple(x) for x in c["shapes"]]
    pred = predicted(cfg, shapes, trace=False)
    traced_ms = (
        1e3 * predicted(cfg, shapes, trace=True).seconds / n
        if trace
        else stored[(c["model"], c["method"])]["trace_ms"]
    )
    return {
        "model": c["model"],
        "method": c["method"],
        "steps": n,
        "tokens_per_step": sum(b * s for b, s in shapes) / n,
        "measured_ms": 1e3 * sum(c["step_s"]) / n,
        "first_round_ms": 1e3 * sum(c["first_round_s"]) / n,
        "predicted_ms": 1e3 * pred.seconds / n,
        "trace_ms": traced_ms,
        "predicted_terms_ms": {k: 1e3 * v / n for k, v in pred.terms.items()},
        "profile_ms": {k: 1e3 * v / n for k, v in c["profile_s"].items()},
    }


def doc_text(table: str) -> str:
    """docs/time-model.md with its CPU table section replaced by `table`."""
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + BEGIN + "\n" + table + END + tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measure", action="store_true", help="time real steps first (else: read --data)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: a demo cell's share)")
    ap.add_argument("--write", action="store_true", help="rewrite the CPU table in docs/time-model.md")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.measure:
        data = measure(args.rounds, args.steps, args.threads)
        args.data.parent.mkdir(parents=True, exist_ok=True)
        args.data.write_text(json.dumps(data, indent=1))
    data = json.loads(args.data.read_text())
    rows = table_rows(data)
    table = render({"probe_measured": data.get("probe_measured"), "rows": rows})
    print(table)
    if args.write:
        data["rows"] = rows
        DATA.write_text(json.dumps(data, indent=1) + "\n")
        DOC.write_text(doc_text(table))
    return 0


def profile(loop, first: int, last: int) -> dict[str, float]:
    """Self CPU seconds per op class over steps first..last under torch.profiler (+ host: the wall
    time no op accounts for)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    t0 = _CLOCK[0]()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for k in range(first, last):
            loop._step(k)
    wall = _CLOCK[0]() - t0
    out: dict[str, float] = {}
    for ev in prof.key_averages():
        if ev.key.startswith(("aten::", "bitsandbytes::")):
            cls = CLASSES.get(ev.key, "other ops")
            out[cls] = out.get(cls, 0.0) + ev.self_cpu_time_total / 1e6
    out["host (no op)"] = max(0.0, wall - sum(out.values()))
    out["wall (profiled)"] = wall
    return out


def render(doc: dict) -> str:
    lines = [
        f"Probe and measurement of {doc.get('probe_measured')}; ms per optimizer step, mean over the timed steps.",
        "",
        "| model | method | tokens/step | measured ms/step | predicted (analytic) | error | trace mode | error |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        e1 = r["predicted_ms"] / r["measured_ms"] - 1
        e2 = r["trace_ms"] / r["measured_ms"] - 1
        lines.append(
            f"| {r['model']} | {r['method']} | {r['tokens_per_step']:.0f} | {r['measured_ms']:.1f} | "
            f"{r['predicted_ms']:.1f} | {e1:+.1%} | {r['trace_ms']:.1f} | {e2:+.1%} |"
        )
    lines += ["", "Predicted terms and profiled op classes (ms per step):", ""]
    lines.append("| model | method | predicted terms | profiled (self CPU time by op class) |")
    lines.append("|---|---|---|---|")
    for r in doc["rows"]:
        pt = ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(r["predicted_terms_ms"].items(), key=lambda kv: -kv[1])
        )
        pf = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["profile_ms"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r['model']} | {r['method']} | {pt} | {pf} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

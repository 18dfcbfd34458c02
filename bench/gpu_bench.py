"""Measure real training-step memory and speed of catalog architectures on this machine's GPU.

For the GPU issue: random-initialised real architectures built from the catalog config (advisor.config.catalog
→ transformers `from_config`; no Hub), each method applied with the real libraries (peft LoRA;
bitsandbytes 4-bit `Linear4bit` layers quantized on the device, non-4-bit parameters upcast to fp32 as
`prepare_model_for_kbit_training` does), two sequence lengths, with and without gradient checkpointing.
Each config runs WARMUP_STEPS + TIMED_STEPS optimizer steps (AdamW, bf16, micro-batch
MICRO_BATCH_SIZE of random tokens, no padding) and records torch's max_memory_allocated /
max_memory_reserved, the NVML device peak (runners.measure.Sampler), tokens/s over the timed steps, the
static bytes (weights, gradients, optimizer state) and the advisor's prediction for the same config
(advisor.estimator.memory.memory at that sequence length) side by side; then replicas of the published runs
P1–P3 at their batch shape (REPLICA). About 5–6 minutes on an H200.

    python bench/gpu_bench.py [--out outputs/gpu-bench.json]
    python bench/gpu_bench.py --tiny      # tiny versions of the same architectures on CPU (CI)

N-process mode (`--procs N`, with `--parallel fsdp|ddp`, default fsdp): the script starts itself N
times under torch.distributed.run (NCCL on GPUs — one H200 runs it with N=1 through the same path —
gloo on CPU); each rank builds the model as the runner does for a cell with gpu.count=N (FSDP2
`fully_shard` per decoder layer then the root, or DDP: runners.parallel.group.wrap; QLoRA stores its
4-bit weights in the compute dtype and is not upcast when sharded), trains on its own random tokens, and
measures itself. Each row then holds `ranks` (every rank's peaks and static bytes) beside the advisor's
per-GPU prediction for gpu.count=N and that parallelism (`advisor`, and `advisor_static`: static.per_rank_static).
The plan is the first catalog model's methods, no replicas:

    python bench/gpu_bench.py --procs 8 --parallel fsdp --out outputs/gpu-bench-8xfsdp.json
    python bench/gpu_bench.py --tiny --procs 2          # 2 processes on CPU (the test)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from advisor.config.schema import from_names
from advisor.estimator.memory import memory
from runners import measure
from runners.provenance import provenance

WARMUP_STEPS = 2  # untimed steps per config (allocator, kernel selection)
TIMED_STEPS = 3  # timed steps per config
MICRO_BATCH_SIZE = 2  # sequences per step
GPU_PLAN = [  # (catalog model, methods)
    ("llama-3.2-1b", ("full", "lora", "qlora")),
    ("qwen2.5-1.5b", ("full", "lora", "qlora")),
    ("llama-3.1-8b", ("lora", "qlora")),
]
GPU_SEQ_LENS = (512, 2048)
# The published runs P1–P3 (shared/reference/ground-truth.md) at their 4 × 768 bound, as the source ran
# them (pure bf16, torch AdamW, no checkpointing): what our runner's stack holds there settles whether
# the source's 99th-percentile steps were shorter (docs/ground-truth.md; trace predicts 34.60, 21.42,
# 23.99 GiB reserved). (id, catalog model, method, lora, micro-batch, seq_len)
REPLICA = [
    ("P1", "llama-3.2-3b", "full", {}, 4, 768),
    ("P2", "llama-3.2-3b", "lora", {"r": 32, "alpha": 64, "target_modules": ["q_proj", "v_proj"]}, 4, 768),
    (
        "P3",
        "llama-3.2-3b",
        "lora",
        {"r": 10, "alpha": 20, "target_modules": ["gate_proj", "up_proj", "down_proj"]},
        4,
        768,
    ),
]
TINY_REPLICA_SEQ = 32
TINY_ARCH = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 512,
    "head_dim": None,
    "total_params": None,
}
TINY_PLAN = [("llama-3.2-1b", ("full", "lora", "qlora")), ("qwen2.5-1.5b", ("lora", "qlora"))]
TINY_SEQ_LENS = (32, 64)
GIB = 2**30


def _cfg(
    name: str,
    method: str,
    seq_len: int,
    gc_on: bool,
    tiny: bool,
    mb: int | None = None,
    lora: dict | None = None,
):
    gpu = "cpu" if tiny else "h200"
    arch = dict(TINY_ARCH) if tiny else {}
    train = {
        "seq_len": seq_len,
        "micro_batch_size": mb or MICRO_BATCH_SIZE,
        "grad_accum": 1,
        "gradient_checkpointing": gc_on,
        "precision": "bf16",
        "optimizer": "adamw",
    }
    return from_names(
        name, method, gpu, arch=arch, train=train, lora={"r": 16, "alpha": 32, "dropout": 0.0, **(lora or {})}
    )


def _quantize(model, cfg, dev, sharded: bool = False) -> None:
    """Swap decoder nn.Linear layers for bitsandbytes Linear4bit (quantized on `dev`); upcast the rest to fp32
    (`prepare_model_for_kbit_training`). Sharded (FSDP2): the 4-bit storage in the compute dtype, no upcast,
    as the runner builds QLoRA for FSDP (runners.model)."""
    import bitsandbytes as bnb

    storage = {"quant_storage": torch.bfloat16} if sharded else {}

    body = model.model
    for parent in list(body.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                q = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=torch.bfloat16,
                    compress_statistics=cfg.method.double_quant,
                    quant_type=cfg.method.quant_type,
                    device="meta",
                    **storage,
                )
                q.weight = bnb.nn.Params4bit(
                    child.weight.data.to("cpu"),
                    requires_grad=False,
                    compress_statistics=cfg.method.double_quant,
                    quant_type=cfg.method.quant_type,
                    module=q,  # the layer keeps the quant_state too (FSDP2 replaces the parameter)
                    **storage,
                ).to(dev)
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, child_name, q)
    if sharded:
        return
    for p in model.parameters():
        if p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.float()


def build(cfg, dev, sharded: bool = False):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from runners.model import lora_config
    from runners.trace.model import hf_config

    hf = hf_config(cfg, cfg.model.num_hidden_layers)
    torch.manual_seed(0)  # every rank of a group builds the same weights and adapters
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(hf, dtype=torch.bfloat16)
    if cfg.method.name == "qlora":
        _quantize(model, cfg, dev, sharded)
    if cfg.method.is_adapter:
        for p in model.parameters():
            p.requires_grad_(False)
        model = get_peft_model(model, lora_config(cfg))  # the runner's (every config has dropout 0.0)
    model.config.use_cache = False
    return model


def run_config(model, cfg, dev, masked: bool = False) -> dict:
    """masked: pass a padding mask (all ones) as padded batches do, which sends transformers' SDPA down
    its masked path (k/v repeated for GQA) instead of the causal one."""
    from runners.parallel.group import unwrap

    inner = unwrap(model)  # DDP's wrapper: the model it holds
    hf_model = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    if cfg.train.gradient_checkpointing:
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        hf_model.gradient_checkpointing_disable()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    mb = cfg.train.micro_batch_size
    tokens = mb * cfg.train.seq_len
    cuda = dev.type == "cuda"
    live = None if cuda else measure.LiveBytes()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    static = None
    timed_s = 0.0
    with measure.Sampler() as sampler:
        if live is not None:
            live.register(measure.model_tensors(model, opt))
            live.__enter__()
        try:
            for step in range(WARMUP_STEPS + TIMED_STEPS):
                ids = torch.randint(0, cfg.model.vocab_size, (mb, cfg.train.seq_len), device=dev)
                t0 = time.perf_counter()
                mask = torch.ones_like(ids) if masked else None
                model(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False).loss.backward()
                opt.step()
                if static is None:
                    static = measure.static_bytes(model, opt)
                opt.zero_grad(set_to_none=True)
                if cuda:
                    torch.cuda.synchronize()
                if step >= WARMUP_STEPS:
                    timed_s += time.perf_counter() - t0
        finally:
            if live is not None:
                live.__exit__(None, None, None)
    alloc = torch.cuda.max_memory_allocated() if cuda else live.peak
    out = {
        "allocated_gib": round(alloc / GIB, 4),
        "reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 4) if cuda else None,
        "device_gib": round(sampler.device_peak / GIB, 4) if sampler.device_peak else None,
        "rss_gib": round(sampler.rss_peak_bytes() / GIB, 4),
        "tokens_per_s": round(tokens * TIMED_STEPS / timed_s, 1),
        "static_bytes": static,
    }
    del opt
    return out


def _advisor(cfg, seq_len: int) -> dict:
    """The advisor's memory prediction for this config: GiB as advise prints it, plus exact bytes."""
    mem = memory(cfg, seq_len)
    keys = ("weights", "gradients", "optimizer", "activations", "logits", "allocated", "reserved", "device")
    return {**mem.gib(), "bytes": {k: int(getattr(mem, k)) for k in keys}, "peak_phase": mem.peak_phase}


def _group_cfg(cfg, nproc: int, parallel: str):
    """The config of a cell on `nproc` processes (what the advisor prices per GPU)."""
    return dataclasses.replace(cfg, gpu=dataclasses.replace(cfg.gpu, count=nproc), parallel=parallel)


def _launch(argv: list[str], nproc: int) -> int:
    """This script again, as `nproc` ranks under torch.distributed.run (the engine behind torchrun)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["--max-restarts=0", str(Path(__file__).resolve()), *argv]
    return subprocess.run(cmd, check=False).returncode


def main_ranks(args, dev) -> int:
    """One rank of the N-process mode (see the module docstring): rank 0 writes the results."""
    import torch.distributed as dist

    from advisor.estimator.static import per_rank_static
    from runners.parallel.group import join, leave, wrap

    plan, seqs = (TINY_PLAN, TINY_SEQ_LENS) if args.tiny else (GPU_PLAN, GPU_SEQ_LENS)
    name, methods = plan[0]
    first = _group_cfg(_cfg(name, methods[0], seqs[0], False, args.tiny), args.procs, args.parallel)
    group = join(first)
    if dev.type == "cuda":
        dev = torch.device("cuda", group.local_rank)
    prov = provenance(0)
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": prov.device,
        "driver": _driver(),
        "provenance": dataclasses.asdict(prov),
        "world_size": group.world,
        "parallel": args.parallel,
        "micro_batch_size": MICRO_BATCH_SIZE,
        "warmup_steps": WARMUP_STEPS,
        "timed_steps": TIMED_STEPS,
        "configs": [],
    }
    t_start = time.perf_counter()
    for method in methods:
        for seq in seqs[:1] if args.tiny else seqs:
            cfg = _group_cfg(_cfg(name, method, seq, False, args.tiny), args.procs, args.parallel)
            row = {"model": name, "method": method, "seq_len": seq, "gradient_checkpointing": False}
            row.update(parallel=args.parallel, world_size=group.world, advisor=_advisor(cfg, seq))
            row["advisor_static"] = {k: int(v) for k, v in per_rank_static(cfg).items()}
            try:
                model = wrap(build(cfg, dev, sharded=group.sharded), cfg, group)
                torch.manual_seed(1000 + group.rank)  # each rank its own tokens
                mine = {"rank": group.rank, "status": "ok", **run_config(model, cfg, dev)}
                del model
            except torch.OutOfMemoryError as e:
                mine = {"rank": group.rank, "status": "oom", "reason": str(e).splitlines()[0][:200]}
            ranks: list = [None] * group.world
            dist.all_gather_object(ranks, mine)
            row["status"] = "ok" if all(r["status"] == "ok" for r in ranks) else "oom"
            row["ranks"] = ranks
            doc["configs"].append(row)
            if group.main:
                print(
                    json.dumps({"method": method, "seq_len": seq, "status": row["status"]}), file=sys.stderr
                )
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    doc["wall_s"] = round(time.perf_counter() - t_start, 1)
    if group.main:
        _write(doc, args.out or Path("outputs") / f"gpu-bench-{args.procs}x{args.parallel}.json")
    leave()
    return 0


def _write(doc: dict, out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, out_path)
    print(out_path)


def _driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny versions of the architectures, on CPU")
    ap.add_argument(
        "--out", type=Path, default=None, help="results JSON (default outputs/gpu-bench[-tiny].json)"
    )
    ap.add_argument("--procs", type=int, default=0, help="N-process mode: this many ranks (see above)")
    ap.add_argument(
        "--parallel", choices=("fsdp", "ddp"), default="fsdp", help="N-process mode's parallelism"
    )
    args = ap.parse_args(argv)
    dev = torch.device("cpu") if args.tiny or not torch.cuda.is_available() else torch.device("cuda")
    if not args.tiny and dev.type != "cuda":
        print("no CUDA device: run with --tiny for the CPU smoke version", file=sys.stderr)
        return 2
    if args.procs:
        if "RANK" not in os.environ:  # start the ranks
            return _launch(list(sys.argv[1:] if argv is None else argv), args.procs)
        return main_ranks(args, dev)
    plan, seqs = (TINY_PLAN, TINY_SEQ_LENS) if args.tiny else (GPU_PLAN, GPU_SEQ_LENS)
    out_path = args.out or Path("outputs") / ("gpu-bench-tiny.json" if args.tiny else "gpu-bench.json")
    prov = provenance(0)
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": prov.device,
        "driver": _driver(),
        "provenance": dataclasses.asdict(prov),
        "micro_batch_size": MICRO_BATCH_SIZE,
        "warmup_steps": WARMUP_STEPS,
        "timed_steps": TIMED_STEPS,
        "configs": [],
    }
    t_start = time.perf_counter()
    for name, methods in plan:
        for method in methods:
            base_cfg = _cfg(name, method, seqs[0], False, args.tiny)
            t0 = time.perf_counter()
            model = build(base_cfg, dev)
            build_s = time.perf_counter() - t0
            for seq in seqs:
                for gc_on in (False, True):
                    cfg = _cfg(name, method, seq, gc_on, args.tiny)
                    row = {
                        "model": name,
                        "method": method,
                        "seq_len": seq,
                        "gradient_checkpointing": gc_on,
                        "build_s": round(build_s, 1),
                        "advisor": _advisor(cfg, seq),
                    }
                    try:
                        row.update(status="ok", **run_config(model, cfg, dev))
                    except torch.OutOfMemoryError as e:
                        row.update(status="oom", reason=str(e).splitlines()[0][:200])
                    doc["configs"].append(row)
                    print(
                        json.dumps(
                            {
                                k: row.get(k)
                                for k in (
                                    "model",
                                    "method",
                                    "seq_len",
                                    "gradient_checkpointing",
                                    "status",
                                    "allocated_gib",
                                    "tokens_per_s",
                                )
                            }
                        ),
                        file=sys.stderr,
                    )
                    gc.collect()
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
            del model
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    for gt_id, name, method, lora, mb, seq in REPLICA:
        seq = TINY_REPLICA_SEQ if args.tiny else seq
        cfg = _cfg(name, method, seq, False, args.tiny, mb=mb, lora=lora)
        row = {"replica_of": gt_id, "model": name, "method": method, "micro_batch_size": mb, "seq_len": seq}
        row.update(gradient_checkpointing=False, lora=lora, advisor=_advisor(cfg, seq))
        try:
            model = build(cfg, dev)
            row.update(status="ok", **run_config(model, cfg, dev, masked=True))  # the source's padded batches
            del model
        except torch.OutOfMemoryError as e:
            row.update(status="oom", reason=str(e).splitlines()[0][:200])
        doc["configs"].append(row)
        print(json.dumps({k: row.get(k) for k in ("replica_of", "status", "reserved_gib")}), file=sys.stderr)
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    doc["wall_s"] = round(time.perf_counter() - t_start, 1)
    _write(doc, out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

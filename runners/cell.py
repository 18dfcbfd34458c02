"""One cell: a real fine-tuning run (or the untrained baseline), measured, written to OUT_DIR/result.json.

In process: `run_cell(cfg, out_dir, control=None, resume=True) -> result`.
Subprocess (docs/internals.md): `python -m runners.protocol CONFIG_JSON OUT_DIR [--baseline] [--control]`;
stdout carries only `@@tunewise {json}` protocol lines (runners.protocol), everything else goes to
stderr. Exit code 0 whenever result.json was written (also for oom/failed).

Order of work: the dataset is validated before anything loads (bad data → `failed` with file:line);
then tokenizer, data, model (`wall_s.load`), training with evals (`wall_s.train`, `wall_s.eval`),
the task metric, the adapter (and merged weights on train.merge). An out-of-memory anywhere ends
`oom` with the step reached and the peaks so far; any other error ends `failed` with a one-line
reason (traceback to stderr and OUT_DIR/error.log). Neither raises to the caller.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from advisor.config.schema import RunConfig
from advisor.data import dataset
from advisor.errors import ConfigError
from runners import checkpoint, measure
from runners import data as data_mod
from runners import model as model_mod
from runners.metric import task_metric
from runners.optim import make_optimizer, make_scheduler
from runners.provenance import provenance
from runners.train import Loop, Progress, eval_schedule

GIB = 2**30


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _short(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:400]}"


def _prepare(
    cfg: RunConfig, out_dir: Path, resume: bool, baseline: bool, progress: Progress, info: dict, emit
):
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    split = dataset.split(cfg.data, cfg.seed)
    tok = model_mod.load_tokenizer(cfg)
    seq = cfg.train.seq_len
    enc_train = [data_mod.encode(tok, e, seq) for e in split.train]
    enc_val = [data_mod.encode(tok, e, seq) for e in split.val]
    info["truncated_examples"] = sum(e.truncated for e in enc_train)
    rows = data_mod.build_rows(enc_train, seq, cfg.train.packing, cfg.seed)
    val_rows = data_mod.build_rows(enc_val, seq, False, cfg.seed)
    t = cfg.train
    steps = (
        0
        if baseline
        else data_mod.planned_steps(len(rows), t.micro_batch_size, t.grad_accum, t.epochs, t.max_steps)
    )
    eval_steps = [] if baseline else eval_schedule(steps, t.eval_every_steps, t.eval_points)
    info["planned_steps"] = steps
    model = model_mod.load_model(cfg)
    _keep_alive_on_forward(model, info.get("keepalive"))
    dev = model_mod.device()
    info["trainable_params"] = model_mod.trainable_params(model)
    optimizer = make_optimizer(t.optimizer, model.parameters(), cfg.lr)
    scheduler = make_scheduler(optimizer, max(1, steps), t.warmup_ratio)
    scaler = torch.amp.GradScaler(dev.type) if cfg.precision == "amp_fp16" else None
    key = checkpoint.config_key(cfg.to_dict())
    blob = checkpoint.load(out_dir / "checkpoint", key) if resume and not baseline else None
    if blob is not None:
        restored = Progress.from_state(blob["state"])
        progress.__dict__.update(restored.__dict__)
        progress.static_bytes = None  # re-measured after this process's first step
        checkpoint.restore(blob, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        info["resumed_from_step"] = progress.step
        del blob
    progress.wall_s["load"] += time.perf_counter() - t0
    emit({"type": "start", "planned_steps": steps, "eval_steps": eval_steps, "resumed_from": progress.step})
    every = t.checkpoint_every_steps or max(1, round(0.1 * steps))
    loop = Loop(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        stream=data_mod.Stream(rows, t.micro_batch_size, cfg.seed),
        val_rows=val_rows,
        steps=steps,
        grad_accum=t.grad_accum,
        micro_batch_size=t.micro_batch_size,
        pad_id=tok.pad_token_id,
        packed=t.packing,
        device=dev,
        autocast_dtype=model_mod.autocast_dtype(cfg),
        scaler=scaler,
        eval_steps=eval_steps,
        checkpoint_every=every,
        checkpoint_dir=out_dir / "checkpoint",
        config_key=key,
        progress=progress,
        emit=emit,
        on_step=info.pop("on_step", None),
    )
    return loop, tok, split


def _keep_alive_on_forward(model, keepalive) -> None:
    """`keepalive()` on every forward pass (training micro-batches, eval batches, generated tokens): a
    hook on the input embeddings, which every forward of the base model runs, PEFT-wrapped or not."""
    if keepalive is None:
        return
    try:
        module = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        module = model
    module.register_forward_hook(lambda *_: keepalive())


def _train(cfg, out_dir, resume, baseline, progress, info, live, emit) -> str:
    phase = info.get("keepalive") or (lambda _phase: None)
    loop, tok, split = _prepare(cfg, out_dir, resume, baseline, progress, info, emit)
    phase("eval" if baseline else "train")
    info["cuda"] = loop.device.type == "cuda"
    if info["cuda"]:
        import torch

        torch.cuda.reset_peak_memory_stats()
    loop.live = live
    if baseline:
        t1 = time.perf_counter()
        with loop.tracking():
            progress.eval_curve = [[0, 0.0, loop.evaluate()]]
        progress.wall_s["eval"] += time.perf_counter() - t1
        status = "complete"
    else:
        status = loop.run()
    if status == "complete":
        phase("metric")
        t1 = time.perf_counter()
        # Generation runs thousands of tiny ops per row: under the CPU live-bytes counter (one Python
        # call per op) it took ~25x longer on the demo. On CUDA the allocator counts it for free; on
        # CPU the RSS sampler still sees it.
        with loop.tracking() if info["cuda"] else contextlib.nullcontext():
            info["metric"] = task_metric(
                cfg.train.metric,
                loop.model,
                tok,
                split.val,
                cfg.train.max_new_tokens,
                cfg.train.metric_rows,
                loop.device,
            )
        progress.wall_s["eval"] += time.perf_counter() - t1
    if not baseline:
        phase("save")
        info["adapter_bytes"] = model_mod.save_adapter(loop.model, out_dir / "adapter")
        if cfg.train.merge and status == "complete":
            model_mod.save_merged(loop.model, tok, out_dir / "merged")
    return status


def _gib(b: int | None) -> float | None:
    return None if b is None else round(b / GIB, 4)


def _measured(cfg: RunConfig, progress: Progress, info: dict, live, sampler) -> dict:
    p = progress
    allocated = reserved = None
    if info.get("cuda"):
        import torch

        allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    elif live is not None and live.peak:
        allocated = live.peak
    wall_s = {k: round(v, 3) for k, v in p.wall_s.items()}
    hours = sum(p.wall_s.values()) / 3600
    return {
        "allocated_gib": _gib(allocated),
        "reserved_gib": _gib(reserved),
        "device_gib": _gib(sampler.device_peak),
        "rss_gib": _gib(sampler.rss_peak_bytes()),
        "tokens_per_s": round(p.timed_tokens / p.timed_s, 2)
        if p.timed_s
        else (round(p.train_tokens / p.wall_s["train"], 2) if p.wall_s["train"] else None),
        "train_tokens": p.train_tokens,
        "padding_fraction": round(1 - p.train_tokens / p.batch_tokens, 4) if p.batch_tokens else None,
        "wall_s": wall_s,
        "usd": round(hours * cfg.price.usd_per_gpu_hour * cfg.gpu.count, 6),
        "eval_loss": p.eval_curve[-1][2] if p.eval_curve else None,
        "eval_curve": p.eval_curve,
        "metric": (info.get("metric") or {}).get(
            "value"
        ),  # the task metric's value (fraction for exact_match)
        "metric_name": (info.get("metric") or {}).get("name"),
        "metric_rows": (info.get("metric") or {}).get("rows"),
        "trainable_params": info.get("trainable_params"),
        "adapter_bytes": info.get("adapter_bytes"),
        "steps": p.step,
        "planned_steps": info.get("planned_steps"),
        "static_bytes": p.static_bytes,
        "truncated_examples": info.get("truncated_examples"),
        "resumed_from_step": info.get("resumed_from_step"),
    }


def run_cell(
    cfg: RunConfig,
    out_dir: Path,
    control=None,
    resume: bool = True,
    *,
    baseline: bool = False,
    emit=None,
    on_step=None,
    keepalive=None,
) -> dict:
    """Run one cell and write OUT_DIR/result.json; never raises for oom or a failed run.

    `control(event) -> bool` is called after every eval (False = prune); `emit(event)` receives every
    protocol event (start, eval, end); `on_step(progress)` runs after every optimizer step;
    `keepalive(phase=None)` runs on every forward pass of the model and with the phase's name as each
    phase begins (load, train or eval, metric, save) — the protocol's proof that the run moves;
    `baseline` evaluates the untrained model instead of training."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress, info = Progress(), {}

    def on_event(event: dict) -> bool:
        if emit is not None:
            emit(event)
        if event["type"] == "eval" and control is not None:
            return control(event) is not False
        return True

    import torch

    live = measure.LiveBytes() if not torch.cuda.is_available() else None
    sampler = measure.Sampler()
    cap = measure.MemoryCap(cfg.train.memory_cap_gib)
    status, reason = "failed", None
    try:
        dataset.validate(cfg.data)  # bad data fails here, before any model loads
        model_mod.check(cfg)
        with sampler, cap:
            info["on_step"] = on_step
            info["keepalive"] = keepalive
            if keepalive is not None:
                keepalive("load")
            status = _train(cfg, out_dir, resume, baseline, progress, info, live, on_event)
    except ConfigError as e:
        reason = "; ".join(e.problems)
    except Exception as e:
        cap.release()
        if measure.is_oom(e):
            status = "oom"
            reason = f"out of memory at step {progress.step}: {_short(e)}"
        else:
            reason = _short(e)
        tb = traceback.format_exc()
        print(tb, file=sys.stderr)
        with contextlib.suppress(OSError):
            (out_dir / "error.log").write_text(tb)
    if reason and status == "failed":
        print(f"tunewise cell failed: {reason}", file=sys.stderr)
    result = {
        "status": status,
        "reason": reason,
        "measured": _measured(cfg, progress, info, live, sampler),
        "provenance": provenance(cfg.seed),
    }
    write_json(out_dir / "result.json", result)
    on_event({"type": "end", "status": status, "reason": reason})
    return result

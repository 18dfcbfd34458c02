"""One cell: a real fine-tuning run (or the untrained baseline), measured, written to OUT_DIR/result.json.

In process: `run_cell(cfg, out_dir, hooks=Hooks(...), resume=True, baseline=False) -> CellResult`
(runners.hooks: control, emit, on_step, keepalive; runners.result: the typed result, whose
`to_dict()` is result.json). Subprocess (docs/internals.md):
`python -m runners.protocol CONFIG_JSON OUT_DIR [--baseline] [--control]`; stdout carries only
`@@tunewise {json}` protocol lines (runners.protocol), everything else goes to stderr. Exit code 0
whenever result.json was written (also for oom/failed).

Order of work: the dataset is validated before anything loads (bad data → `failed` with file:line);
then tokenizer, data, model (`wall_s.load`; the process's start and imports before it: `wall_s.start`),
training with evals and checkpoints (`wall_s.train`, `.eval`, `.checkpoint`), the task metric
(`wall_s.metric`), the adapter (and merged weights on train.merge: `wall_s.save`). An out-of-memory anywhere ends
`oom` with the step reached and the peaks so far; any other error ends `failed` with a one-line
reason (traceback to stderr and OUT_DIR/error.log). Neither raises to the caller.

`gpu.count` = N > 1: `run_cell` leads a group of N processes (runners.parallel.launch), each of which
runs this same code as one rank (`Group` from runners.parallel.group): the data, the step and the
evals split across ranks (runners.train), rank 0 reports, each rank writes OUT_DIR/ranks/rank<r>.json,
and the leader combines them into result.json (per-rank memory in `measured.ranks`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from advisor.config.schema import RunConfig
from advisor.data import dataset
from advisor.errors import ConfigError
from runners import checkpoint, measure, tracking
from runners import data as data_mod
from runners import model as model_mod
from runners.checkpoint import Checkpoints, Trainables
from runners.hooks import NO_HOOKS, Hooks
from runners.metric import task_metric
from runners.optim import make_optimizer, make_scheduler
from runners.parallel import files as rank_files
from runners.parallel.group import SINGLE, Group, gathered_state, join, leave, unwrap, wrap
from runners.parallel.group import check as parallel_check
from runners.provenance import provenance
from runners.result import CellResult, Measured, Metric, Progress, RankMemory, Status
from runners.train import Batches, Loop, Schedule, eval_schedule

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from runners.model import Model

GIB = 2**30


@dataclass
class Learned:
    """What a run learns on its way besides Progress; kept when it ends early (oom, failure)."""

    planned_steps: int | None = None
    truncated_examples: int | None = None
    trainable_params: int | None = None
    resumed_from_step: int | None = None
    metric: Metric | None = None
    adapter_bytes: int | None = None
    cuda_peaks: bool = False  # torch.cuda's peak counters were reset as training began


def _short(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:400]}"


def prepare(
    cfg: RunConfig,
    out_dir: Path,
    *,
    resume: bool,
    baseline: bool,
    progress: Progress,
    learned: Learned,
    hooks: Hooks = NO_HOOKS,
    group: Group = SINGLE,
) -> tuple[Loop, PreTrainedTokenizerBase, dataset.Split]:
    """Tokenizer, data, model, optimizer, the checkpoint to resume: the loop of one run, ready.
    Every rank seeds alike before the adapters are created: fully_shard shards each rank's own copy
    and broadcasts nothing, so the ranks must build the same one."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    split = dataset.split(cfg.data, cfg.seed)
    tok = model_mod.load_tokenizer(cfg)
    t = cfg.train
    seq = t.seq_len
    enc_train = [data_mod.encode(tok, e, seq) for e in split.train]
    enc_val = [data_mod.encode(tok, e, seq) for e in split.val]
    learned.truncated_examples = sum(e.truncated for e in enc_train)
    rows = data_mod.build_rows(enc_train, seq, t.packing, cfg.seed)
    val_rows = data_mod.build_rows(enc_val, seq, False, cfg.seed)
    steps = (
        0
        if baseline
        else data_mod.planned_steps(
            len(rows), t.micro_batch_size, t.grad_accum * group.world, t.epochs, t.max_steps
        )
    )
    eval_steps = [] if baseline else eval_schedule(steps, t.eval_every_steps, t.eval_points)
    learned.planned_steps = steps
    model = model_mod.load_model(cfg, sharded=group.sharded)
    _keep_alive_on_forward(model, hooks)
    dev = model_mod.device()
    learned.trainable_params = model_mod.trainable_params(model)
    model = wrap(model, cfg, group)  # before the optimizer: FSDP replaces the parameters by shards
    if group.world > 1:  # the model is built alike on every rank; from here each draws its own dropout masks
        torch.manual_seed(cfg.seed + 1_000_003 * (group.rank + 1))
    optimizer = make_optimizer(t.optimizer, model.parameters(), cfg.lr)
    parts = Trainables(
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, max(1, steps), t.warmup_ratio),
        scaler=torch.amp.GradScaler(dev.type) if cfg.precision == "amp_fp16" else None,
    )
    where = Checkpoints(
        folder=out_dir / "checkpoint",
        key=checkpoint.config_key(cfg.to_dict()),
        every_steps=t.checkpoint_every_steps or max(1, round(0.1 * steps)),
    )
    state = checkpoint.resume(where, parts, group) if resume and not baseline else None
    if state is not None:
        restored = Progress.from_state(state)
        progress.__dict__.update(restored.__dict__)
        progress.static_bytes = None  # re-measured after this process's first step
        learned.resumed_from_step = progress.step
    progress.wall_s["load"] += time.perf_counter() - t0
    hooks.send(
        {"type": "start", "planned_steps": steps, "eval_steps": eval_steps, "resumed_from": progress.step}
    )
    loop = Loop(
        parts=parts,
        batches=Batches(
            stream=data_mod.Stream(rows, t.micro_batch_size, cfg.seed),
            val_rows=val_rows,
            pad_id=model_mod.pad_id(tok),
            packed=t.packing,
        ),
        schedule=Schedule(steps=steps, grad_accum=t.grad_accum, eval_steps=eval_steps),
        checkpoints=where,
        device=dev,
        autocast_dtype=model_mod.autocast_dtype(cfg),
        progress=progress,
        hooks=hooks,
        group=group,
    )
    return loop, tok, split


def _keep_alive_on_forward(model: Model, hooks: Hooks) -> None:
    """`keepalive(None)` on every forward pass (training micro-batches, eval batches, generated
    tokens): a hook on the input embeddings, which every forward of the base model runs, PEFT-wrapped
    or not."""
    keepalive = hooks.keepalive
    if keepalive is None:
        return
    module: torch.nn.Module
    try:
        module = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        module = model
    module.register_forward_hook(lambda *_: keepalive(None))


def _train(
    cfg: RunConfig,
    out_dir: Path,
    *,
    resume: bool,
    baseline: bool,
    progress: Progress,
    learned: Learned,
    live: measure.LiveBytes | None,
    hooks: Hooks,
    group: Group,
) -> Status:
    loop, tok, split = prepare(
        cfg,
        out_dir,
        resume=resume,
        baseline=baseline,
        progress=progress,
        learned=learned,
        hooks=hooks,
        group=group,
    )
    hooks.phase("eval" if baseline else "train")
    if loop.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        learned.cuda_peaks = True
    loop.live = live
    status: Status
    if baseline:
        t1 = time.perf_counter()
        with loop.tracking():
            progress.eval_curve = [[0, 0.0, loop.evaluate()]]
        progress.wall_s["eval"] += time.perf_counter() - t1
        status = "complete"
    else:
        status = loop.run()
    model = unwrap(loop.parts.model)
    if status == "complete":  # every rank scores the same rows alike: FSDP's forwards need them all
        hooks.phase("metric")
        t1 = time.perf_counter()
        # Not under the CPU live-bytes counter: generation runs thousands of tiny ops per row, and the
        # counter's Python call per op made it ~25x slower on the demo. On CUDA the allocator counts
        # it for free; on CPU the RSS sampler still sees it.
        learned.metric = task_metric(
            cfg.train.metric,
            model,
            tok,
            split.val,
            cfg.train.max_new_tokens,
            cfg.train.metric_rows,
            loop.device,
        )
        progress.wall_s["metric"] = progress.wall_s.get("metric", 0.0) + time.perf_counter() - t1
    if not baseline:
        hooks.phase("save")
        t1 = time.perf_counter()
        merge = cfg.train.merge and status == "complete"
        if group.world == 1:
            learned.adapter_bytes = model_mod.save_adapter(model, out_dir / "adapter")
            if merge:
                model_mod.save_merged(model, tok, out_dir / "merged")
        else:
            learned.adapter_bytes = _save_gathered(cfg, loop.parts.model, tok, out_dir, group, merge)
        progress.wall_s["save"] = progress.wall_s.get("save", 0.0) + time.perf_counter() - t1
    return status


def _process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere): its start-up and imports."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time after boot
        return max(0.0, float(Path("/proc/uptime").read_text().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return 0.0


def _save_gathered(
    cfg: RunConfig,
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    out_dir: Path,
    group: Group,
    merge: bool,
) -> int | None:
    """The adapter (and merged weights on request) of a cell on N processes: the trained parameters
    gathered whole on rank 0, saved once. The merged weights are a fresh 1-process model with them."""
    state = gathered_state(model)
    size = None
    if group.main and state is not None:
        if cfg.method.is_adapter:
            size = model_mod.save_adapter(unwrap(model), out_dir / "adapter", state)  # type: ignore[arg-type]
        if merge:
            fresh = model_mod.load_model(cfg)
            fresh.load_state_dict(state, strict=False)
            model_mod.save_merged(fresh, tok, out_dir / "merged")
    group.barrier()
    return size


def _gib(b: int | None) -> float | None:
    return None if b is None else round(b / GIB, 4)


def _devices() -> list[str] | None:
    """The device slots the sweep's worker gave this cell (TUNEWISE_DEVICES, else CUDA_VISIBLE_DEVICES)."""
    import os

    slots = os.environ.get("TUNEWISE_DEVICES") or os.environ.get("CUDA_VISIBLE_DEVICES")
    return [d for d in slots.split(",") if d] if slots else None


def _rank_memory(
    group: Group, p: Progress, learned: Learned, live: measure.LiveBytes | None, sampler: measure.Sampler
) -> RankMemory:
    allocated = reserved = None
    if learned.cuda_peaks:
        allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    elif live is not None and live.peak:
        allocated = live.peak
    return RankMemory(
        rank=group.rank,
        allocated_gib=_gib(allocated),
        reserved_gib=_gib(reserved),
        device_gib=_gib(sampler.device_peak),
        rss_gib=_gib(sampler.rss_peak_bytes()),
        static_bytes=p.static_bytes,
        live_bytes=dict(live.at_peak) if live is not None and live.peak else None,
    )


def _measured(
    cfg: RunConfig,
    p: Progress,
    learned: Learned,
    live: measure.LiveBytes | None,
    sampler: measure.Sampler,
    group: Group = SINGLE,
) -> Measured:
    allocated = reserved = None
    if learned.cuda_peaks:
        allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    elif live is not None and live.peak:
        allocated = live.peak
    hours = sum(p.wall_s.values()) / 3600
    tokens_per_s: float | None = None
    if p.timed_s:
        tokens_per_s = round(p.timed_tokens / p.timed_s, 2)
    elif p.wall_s["train"]:  # every step was tracked or untimed: all steps
        tokens_per_s = round(p.train_tokens / p.wall_s["train"], 2)
    metric = learned.metric
    return Measured(
        allocated_gib=_gib(allocated),
        reserved_gib=_gib(reserved),
        device_gib=_gib(sampler.device_peak),
        rss_gib=_gib(sampler.rss_peak_bytes()),
        tokens_per_s=tokens_per_s,
        train_tokens=p.train_tokens,
        padding_fraction=round(1 - p.train_tokens / p.batch_tokens, 4) if p.batch_tokens else None,
        wall_s={k: round(v, 3) for k, v in p.wall_s.items()},
        usd=round(hours * cfg.price.usd_per_gpu_hour * cfg.gpu.count, 6),
        eval_loss=p.eval_curve[-1][2] if p.eval_curve else None,
        eval_curve=p.eval_curve,
        metric=metric.value if metric else None,
        metric_name=metric.name if metric else None,
        metric_rows=metric.rows if metric else None,
        trainable_params=learned.trainable_params,
        adapter_bytes=learned.adapter_bytes,
        steps=p.step,
        planned_steps=learned.planned_steps,
        static_bytes=p.static_bytes,
        truncated_examples=learned.truncated_examples,
        resumed_from_step=learned.resumed_from_step,
        world_size=group.world,
        ranks=[_rank_memory(group, p, learned, live, sampler).to_dict()],
        devices=_devices(),
        metric_fields=metric.fields if metric else None,
    )


def run_cell(
    cfg: RunConfig,
    out_dir: Path,
    hooks: Hooks = NO_HOOKS,
    *,
    resume: bool = True,
    baseline: bool = False,
) -> CellResult:
    """Run one cell and write OUT_DIR/result.json; never raises for oom or a failed run.

    `hooks` (runners.hooks.Hooks): `control(eval_event) -> bool` after every eval (False = prune),
    `emit(event)` for every protocol event (start, eval, end), `on_step(progress)` after every
    optimizer step, `keepalive(phase)` on every forward pass (None) and as each phase begins (load,
    train or eval, metric, save). `resume` continues OUT_DIR/checkpoint when it holds this config's;
    `baseline` evaluates the untrained model instead of training. With gpu.count = N > 1 it starts N
    processes and returns their combined result (runners.parallel.launch)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ranked = rank_files.in_group()
    if not ranked:  # the cell's curves where people look (TensorBoard, MLflow): runners.tracking
        hooks = tracking.attach(cfg, out_dir, hooks)
    group = SINGLE
    progress, learned = Progress(), Learned()
    progress.wall_s["start"] = _process_age_s()
    live = measure.LiveBytes() if not torch.cuda.is_available() else None
    sampler = measure.Sampler()
    cap = measure.MemoryCap(cfg.train.memory_cap_gib)
    status: Status = "failed"
    reason = None
    try:
        dataset.validate(cfg.data)  # bad data fails here, before any model loads
        model_mod.check(cfg)
        parallel_check(cfg)
        if cfg.gpu.count > 1 and not ranked:  # checked here, before N processes start
            from runners.parallel.launch import launch

            return launch(cfg, out_dir, hooks, resume=resume, baseline=baseline)
        with sampler, cap:
            hooks.phase("load")
            if ranked:
                group = join(cfg)
            status = _train(
                cfg,
                out_dir,
                resume=resume,
                baseline=baseline,
                progress=progress,
                learned=learned,
                live=live,
                hooks=hooks,
                group=group,
            )
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
            (out_dir / (rank_files.error_log() if ranked else "error.log")).write_text(tb)
    if reason and status == "failed":
        print(f"tunewise cell failed: {reason}", file=sys.stderr)
    result = CellResult(
        status=status,
        reason=reason,
        measured=_measured(cfg, progress, learned, live, sampler, group),
        provenance=provenance(cfg.seed),
    )
    if ranked:  # the group's leader combines the ranks' results and reports the end
        rank_files.write_result(out_dir, result)
        if status in ("complete", "pruned"):
            leave()  # an orderly exit; a failing rank leaves the group to the launcher's teardown
        return result
    result.write(out_dir)
    hooks.send({"type": "end", "status": status, "reason": reason})
    return result

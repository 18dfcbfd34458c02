"""The training loop: our own, not transformers' Trainer.

Why our own loop: it is one readable page that owns what the measurements need — which steps are
timed (warm-up excluded), where the memory counters are reset, exactly when evals happen and how the
sweep's pruning answer stops the run, the deterministic data position a checkpoint resumes from — and
it runs the packed batches transformers understands without a custom collator/Trainer subclass
(bench/bench_runner_vs_trainer.py compares its speed with Trainer side by side).

One optimizer step = `grad_accum` micro-batches; the loss is the mean over the step's target tokens
(HF loss with `num_items_in_batch`), gradients clipped to norm MAX_GRAD_NORM, then optimizer and
scheduler step. Evals (loss on the validation split, token-weighted) run at the planned eval steps.

On N processes (runners.parallel; `group`) an optimizer step covers N × grad_accum micro-batches of the
same deterministic stream — rank r takes the r-th run of grad_accum of them — so the global batch is
micro × accum × N and step k trains on what a 1-process run with grad_accum × N trains on. Each rank
divides its summed token losses by the whole step's target count (every rank knows it: the stream is
deterministic) and scales by N, which DDP's and FSDP's gradient averaging undo: the same gradients as
1 process. Reported losses are sums over the ranks; evals split the validation batches across ranks and
sum; clipping reads the norm of the sharded gradients (a DTensor under FSDP) whole; rank 0's prune
answer is every rank's.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from runners import checkpoint, measure
from runners.checkpoint import Checkpoints, Trainables
from runners.data import IGNORE, Row, Stream, collate, real_tokens
from runners.hooks import NO_HOOKS, EvalEvent, Hooks
from runners.parallel.group import SINGLE, Group, unwrap
from runners.result import Progress

MAX_GRAD_NORM = 1.0
WARMUP_STEPS_UNTIMED = 2  # first optimizer steps of a process excluded from tokens/s (allocator, kernels)
# tokens/s also excludes the steps run under the CPU live-bytes counter (its per-op Python cost; see
# runners.measure); when every step was tracked or untimed, tokens/s falls back to all steps.


@contextlib.contextmanager
def collector_between_steps() -> Any:
    """Python's cyclic garbage collector off inside steps, run between them (torchtitan's GC handling).

    Left automatic, it runs whenever enough objects were allocated: in the middle of some backward pass
    and not others, and the tensors that reference cycles hold (FSDP2 leaves thousands of cyclic
    objects per step) are freed at that moment or not — so the same run peaked at different bytes, and
    a collection of the whole heap (~450,000 objects once torch, transformers and a model are loaded)
    costs ~0.25 s where it lands. Here: one full collection, then everything alive is frozen (moved out
    of the collector's view, so later collections only walk what the loop made: ~0.1 ms), automatic
    collection off, and `collect()` after every optimizer step and eval frees what the step's cycles
    held, at the same point of every step."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def clip_gradients(params: list[torch.Tensor], max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_ without its pass multiplying every gradient by 1.0 when the norm
    is already within max_norm (most steps): the same gradients either way, one read-and-write of all
    gradients fewer. Reading the norm syncs once per step on CUDA (the loss read already does)."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads)
    whole = getattr(total, "full_tensor", None)  # FSDP2: a DTensor of the shards' partial norms
    norm = whole() if callable(whole) else total
    if not float(norm) <= max_norm:  # above the limit, or not finite (torch scales by nan/0 alike)
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)


def targets(rows: list[Row]) -> int:
    """Tokens a micro-batch of `rows` is scored on (labels after each row's first position)."""
    return sum(sum(1 for x in r.labels[1:] if x != IGNORE) for r in rows)


def rank_micro_batches(stream: Stream, step: int, rank: int, world: int, accum: int) -> list[list[Row]]:
    """Rank `rank`'s micro-batches of optimizer step `step`: the stream's micro-batches are dealt out
    step by step, rank by rank, `accum` consecutive ones to each."""
    first = (step * world + rank) * accum
    return [stream.micro_batch(first + k) for k in range(accum)]


def padded_tokens(rows: list[Row]) -> int:
    """Tokens of the padded micro-batch (rows × the longest row)."""
    return len(rows) * max(len(r.input_ids) for r in rows)


def eval_schedule(steps: int, eval_every_steps: int | None, eval_points: int) -> list[int]:
    """Optimizer steps after which eval runs: every N steps, or eval_points evenly spaced; always the last."""
    if eval_every_steps:
        at = set(range(eval_every_steps, steps + 1, eval_every_steps))
    else:
        at = {max(1, round(k * steps / eval_points)) for k in range(1, eval_points + 1)}
    at.add(steps)
    return sorted(at)


def _agree_on_overflow(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer, group: Group) -> None:
    """amp_fp16 under FSDP: each rank checked only its gradient shards for inf/nan; when any rank found
    one, every rank skips the step (what FSDP's ShardedGradScaler does, which fails on CPU tensors)."""
    found = scaler._found_inf_per_device(optimizer)  # GradScaler's record of this step's unscale_
    (total,) = group.sum([float(sum(float(v) for v in found.values()))])
    if total > 0:
        for v in found.values():
            v.fill_(1.0)


def _sync(model: nn.Module, last: bool) -> AbstractContextManager[Any]:
    """DDP all-reduces gradients on the step's last micro-batch only (`no_sync` before); FSDP
    reduce-scatters every micro-batch into its sharded gradients; one process does neither."""
    no_sync = getattr(model, "no_sync", None)
    if last or not callable(no_sync) or not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return no_sync()


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[None]:
    """torch.autocast to `dtype` (the amp_* precisions), or nothing."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def eval_loss(
    model: nn.Module,
    rows: list[Row],
    micro_batch_size: int,
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    group: Group = SINGLE,
) -> float:
    """Token-weighted mean loss over `rows` (padded batches, eval mode: no dropout). On N ranks each
    takes every N-th batch and the sums are added up; under FSDP every rank runs as many forwards (a
    rank short of a batch repeats one, uncounted), since each forward gathers parameters from all."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    starts = list(range(0, len(rows), micro_batch_size))
    mine = starts[group.rank :: group.world]
    rounds = -(-len(starts) // group.world) if group.sharded else len(mine)
    with torch.no_grad():
        for j in range(rounds):
            i = mine[j] if j < len(mine) else starts[0]
            batch = {
                k: v.to(device) for k, v in collate(rows[i : i + micro_batch_size], pad_id, False).items()
            }
            n = int((batch["labels"][:, 1:] != -100).sum()) if j < len(mine) else 0
            if not n and not group.sharded:
                continue
            with autocast(device, autocast_dtype):
                out = model(**batch, use_cache=False, num_items_in_batch=1)  # the summed loss
            if n:
                total += float(out.loss)
                count += n
    model.train(was_training)
    total, n_all = group.sum([total, float(count)])
    return total / max(1, n_all)


@dataclass
class Batches:
    """The data side of a run: the training stream, the validation rows, how rows become tensors."""

    stream: Stream  # step k's micro-batches, deterministically (what resuming relies on)
    val_rows: list[Row]
    pad_id: int
    packed: bool  # packed rows (restarting position_ids) rather than padded ones (attention mask)


@dataclass(frozen=True)
class Schedule:
    """Which optimizer steps run, and after which of them eval runs."""

    steps: int  # planned optimizer steps
    grad_accum: int  # micro-batches per optimizer step
    eval_steps: list[int]  # eval_schedule(...)


@dataclass
class Loop:
    """Everything one training run needs; `run()` trains from `progress.step` to `schedule.steps`."""

    parts: Trainables
    batches: Batches
    schedule: Schedule
    checkpoints: Checkpoints
    device: torch.device
    autocast_dtype: torch.dtype | None  # amp_bf16/amp_fp16; None = no autocast
    progress: Progress
    hooks: Hooks = NO_HOOKS  # on_step after each optimizer step; evaluated() after each eval
    live: measure.LiveBytes | None = None  # CPU live-bytes counter (None on CUDA)
    group: Group = SINGLE  # the cell's process group (one process: SINGLE)

    def _batch(self, rows: list[Row]) -> dict[str, torch.Tensor]:
        b = self.batches
        return {k: v.to(self.device) for k, v in collate(rows, b.pad_id, b.packed).items()}

    def evaluate(self) -> float:
        b = self.batches
        self._phase("eval")
        return eval_loss(
            unwrap(self.parts.model),  # DDP's wrapper would broadcast buffers on every forward
            b.val_rows,
            b.stream.micro_batch_size,
            b.pad_id,
            self.device,
            self.autocast_dtype,
            self.group,
        )

    def _phase(self, name: str) -> None:
        if self.live is not None:
            self.live.phase(name)

    def micro_batches(self, step: int, rank: int) -> list[list[Row]]:
        """Rank `rank`'s micro-batches of optimizer step `step` (see the module docstring)."""
        return rank_micro_batches(self.batches.stream, step, rank, self.group.world, self.schedule.grad_accum)

    def _step(self, step: int) -> None:
        model, optimizer, scaler = self.parts.model, self.parts.optimizer, self.parts.scaler
        group = self.group
        every = [self.micro_batches(step, r) for r in range(group.world)]  # the whole step, every rank's
        micro = every[group.rank]
        batches = [self._batch(rows) for rows in micro]
        step_targets = sum(targets(rows) for share in every for rows in share)
        loss_sum = 0.0
        for k, b in enumerate(batches):
            with _sync(model, last=k == len(batches) - 1):
                self._phase("forward")
                with autocast(self.device, self.autocast_dtype):
                    out = model(**b, use_cache=False, num_items_in_batch=max(1, step_targets))
                loss = out.loss
                self._phase("backward")
                scaled = loss * group.world if group.world > 1 else loss  # undone by gradient averaging
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
                loss_sum += float(loss.detach())
                del out, loss, scaled
        self._phase("optimizer")
        trainable = [p for g in optimizer.param_groups for p in g["params"]]
        if scaler is not None:
            scaler.unscale_(optimizer)
            if group.sharded:
                _agree_on_overflow(scaler, optimizer, group)
        clip_gradients(trainable, MAX_GRAD_NORM)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if self.progress.static_bytes is None:
            self.progress.static_bytes = measure.static_bytes(model, optimizer)
        # DDP: gradients are views of its buckets, which live on either way; zeroed, they stay countable
        optimizer.zero_grad(set_to_none=not (group.world > 1 and group.parallel == "ddp"))
        self.parts.scheduler.step()
        (loss_sum,) = group.sum([loss_sum])
        if not math.isfinite(loss_sum):
            raise FloatingPointError(
                f"training loss is {loss_sum} at step {step + 1}: the run diverged or overflowed "
                "(pure fp16 commonly does; try train.precision=bf16 or amp_fp16, or a lower train.lr)"
            )
        p = self.progress
        p.loss = loss_sum
        p.train_tokens += sum(real_tokens(rows) for share in every for rows in share)
        p.batch_tokens += sum(padded_tokens(rows) for share in every for rows in share)

    def tracking(self) -> AbstractContextManager[Any]:
        """The CPU live-bytes counter as a context (a no-op on CUDA, where the allocator counts)."""
        if self.live is None:
            return contextlib.nullcontext()
        self.live.register(measure.model_tensors(self.parts.model, self.parts.optimizer))
        return self.live

    def tracked_steps(self) -> set[int]:
        """Steps run under the CPU live-bytes counter: the first untimed ones (the optimizer state is
        created there) and the step holding the largest padded micro-batch (where activations peak) —
        each rank's: every rank counts the same steps, so none waits on another's slower step."""
        if self.live is None:
            return set()
        first = self.progress.step
        tracked = set(range(first, first + WARMUP_STEPS_UNTIMED + 1))
        for rank in range(self.group.world):
            heaviest, size = first, -1
            for step in range(first, self.schedule.steps):
                for rows in self.micro_batches(step, rank):
                    n = padded_tokens(rows)
                    if n > size:
                        heaviest, size = step, n
            tracked.add(heaviest)
        return tracked

    def run(self) -> Literal["complete", "pruned"]:
        """Train to the end ('complete') or until the control prunes ('pruned')."""
        first = self.progress.step
        tracked = self.tracked_steps()
        with collector_between_steps():
            return self._run(first, tracked)

    def _run(self, first: int, tracked: set[int]) -> Literal["complete", "pruned"]:
        p, steps, eval_steps = self.progress, self.schedule.steps, self.schedule.eval_steps
        on_step, every = self.hooks.on_step, self.checkpoints.every_steps
        while p.step < steps:
            t0 = time.perf_counter()
            tokens0 = p.train_tokens
            with self.tracking() if p.step in tracked else contextlib.nullcontext():
                self._step(p.step)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            gc.collect()  # what this step's reference cycles held (see collector_between_steps)
            dt = time.perf_counter() - t0
            p.wall_s["train"] += dt
            if p.step - first >= WARMUP_STEPS_UNTIMED and p.step not in tracked:
                p.timed_tokens += p.train_tokens - tokens0
                p.timed_s += dt
            p.step += 1
            if on_step is not None:
                on_step(p)
            if p.step in eval_steps:
                t1 = time.perf_counter()
                with self.tracking():
                    loss = self.evaluate()
                gc.collect()
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"eval loss is {loss} at step {p.step}: the model diverged or overflowed"
                    )
                p.wall_s["eval"] += time.perf_counter() - t1
                frac = p.step / steps
                p.eval_curve.append([p.step, frac, loss])
                index = eval_steps.index(p.step)
                event: EvalEvent = {
                    "type": "eval",
                    "step": p.step,
                    "fraction": frac,
                    "eval_loss": loss,
                    "index": index,
                }
                keep = self.group.decide(self.hooks.evaluated(event) if self.group.main else True)
                if not keep and p.step < steps:
                    return "pruned"
            if p.step % every == 0 and p.step < steps:
                t2 = time.perf_counter()
                checkpoint.save(self.checkpoints, self.parts, p.step, p.to_state(), self.group)
                p.wall_s["checkpoint"] = p.wall_s.get("checkpoint", 0.0) + time.perf_counter() - t2
        return "complete"

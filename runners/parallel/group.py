"""A rank's process group, and the model wrapped for it.

`parallel` (the config's top-level key) names what one cell on N processes runs:
- `ddp`: DistributedDataParallel — every rank holds the whole model; gradients are all-reduced
  (averaged) in buckets that the gradients themselves view (`gradient_as_bucket_view`: no second copy);
- `fsdp` / `zero3`: FSDP2 — `fully_shard` on every decoder layer, then on the root; parameters,
  gradients and optimizer state sharded 1/N per rank; each layer's parameters are gathered for its
  forward and freed after it (`reshard_after_forward=True`), gathered again for its backward;
- `zero2`: FSDP2 keeping each layer's gathered parameters from its forward to its backward
  (`reshard_after_forward=False`): parameters sharded at rest, whole during the step.
Mixed precision follows `train.precision` (`MixedPrecisionPolicy`): amp_bf16/amp_fp16 gather the fp32
parameters as bf16/fp16 (one layer at a time) and reduce gradients in fp32; pure bf16/fp16 and
QLoRA gather in the compute dtype (PEFT's fp32 adapters with the 16-bit base: one gather dtype).

`Group` is what the training loop asks of the group: sums over ranks, rank 0's decision, a barrier.
`SINGLE` (one process) answers them without a collective, so the single-process path is the same code.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from advisor.config.checks import parallel_problems
from advisor.config.schema import RunConfig
from advisor.errors import ConfigError

if TYPE_CHECKING:
    from runners.model import Model

PARALLELS = ("ddp", "fsdp", "zero2", "zero3")  # advisor.config.checks.PARALLELS; each honoured here
RESHARD_AFTER_FORWARD = {"fsdp": True, "zero3": True, "zero2": False}
# A collective waiting longer than this for a rank fails (a hung rank must not hold the group for
# gloo's default 30 minutes); the sweep's stall watchdog usually acts first. Seconds; the environment
# variable TUNEWISE_COLLECTIVE_TIMEOUT_S overrides it.
COLLECTIVE_TIMEOUT_S = 600.0


class PeerFailed(RuntimeError):
    """This rank stopped because another one failed (the leader names that one)."""


PEER_FAILED = "failed on another rank"  # in every PeerFailed message (the leader tells them apart)


@dataclass(frozen=True)
class Group:
    """This process's place in the cell's process group."""

    rank: int = 0
    world: int = 1
    parallel: str = "ddp"
    local_rank: int = 0  # the device index on this node (CUDA_VISIBLE_DEVICES slice)

    @property
    def main(self) -> bool:
        """Rank 0: the rank that reports events, decides pruning and saves the adapter."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world > 1 and self.parallel != "ddp"

    def _device(self) -> torch.device:
        backend = dist.get_backend() if dist.is_initialized() else "gloo"
        return torch.device("cuda", self.local_rank) if backend == "nccl" else torch.device("cpu")

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks (float64)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return [float(v) for v in t.tolist()]

    def decide(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every rank (a prune answer only rank 0 received)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._device())
        dist.broadcast(t, 0)
        return bool(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


SINGLE = Group()


def timeout_s() -> float:
    return float(os.environ.get("TUNEWISE_COLLECTIVE_TIMEOUT_S") or COLLECTIVE_TIMEOUT_S)


def check(cfg: RunConfig) -> None:
    """Refuse a parallelism this runner cannot honour (never run something else silently)."""
    if cfg.gpu.count > 1 and cfg.parallel not in PARALLELS:
        raise ConfigError(
            f"parallel={cfg.parallel!r}: not a parallelism the runner runs (allowed: {PARALLELS})"
        )
    problems = parallel_problems(cfg)
    if problems:
        raise ConfigError(problems)


def join(cfg: RunConfig) -> Group:
    """Join the process group torch.distributed.run set up (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
    environment): NCCL on GPUs, gloo on CPU, with a bounded collective timeout."""
    check(cfg)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    timeout = timedelta(seconds=timeout_s())
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", local))
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return Group(rank=rank, world=world, parallel=cfg.parallel, local_rank=local)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mixed_precision(cfg: RunConfig):
    """FSDP2's MixedPrecisionPolicy for train.precision (see the module docstring)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from runners.model import compute_dtype

    if cfg.precision.startswith("amp"):
        return MixedPrecisionPolicy(param_dtype=compute_dtype(cfg), reduce_dtype=torch.float32)
    if cfg.precision in ("bf16", "fp16") and (cfg.method.is_adapter):
        return MixedPrecisionPolicy(param_dtype=compute_dtype(cfg))
    return MixedPrecisionPolicy()


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks (transformers' `_no_split_modules` classes, e.g. LlamaDecoderLayer)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(
            f"parallel=fsdp: found no decoder layers to shard in {type(model).__name__} "
            "(its _no_split_modules are empty); use parallel=ddp"
        )
    return layers


def wrap(model: Model, cfg: RunConfig, group: Group) -> Model:
    """The model as this group trains it (unchanged for one process)."""
    if group.world == 1:
        return model
    if group.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [group.local_rank] if torch.cuda.is_available() else None
        return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)  # type: ignore[return-value]
    from torch.distributed.fsdp import fully_shard

    from runners.model import is_peft

    base = model.get_base_model() if is_peft(model) else model
    reshard, mp = RESHARD_AFTER_FORWARD[group.parallel], mixed_precision(cfg)
    comms = _gloo_comms() if group._device().type == "cpu" else None
    for module in [*decoder_layers(base), base]:
        # the root last: it is the module whose forward runs (generate calls it; PEFT's wrapper
        # forwards to it)
        fully_shard(module, reshard_after_forward=reshard, mp_policy=mp)
        if comms is not None:
            module.set_custom_all_gather(comms[0])  # type: ignore[operator]
            module.set_custom_reduce_scatter(comms[1])  # type: ignore[operator]
    return model


RELEASE_WAIT_S = 0.5  # longest wait for gloo's worker thread to let go of a finished collective's tensors


def _refs(t: torch.Tensor) -> tuple[int, int]:
    """C++ references to a tensor and to its storage (what a collective's views and copies hold)."""
    return t._use_count(), torch._C._storage_Use_Count(t.untyped_storage()._cdata)  # type: ignore[attr-defined]


def _released(tensors: tuple[torch.Tensor, ...], before: list[tuple[int, int]]) -> bool:
    """Return once gloo's worker thread holds no reference to `tensors` any more (their references are
    back to `before`), yielding the GIL meanwhile: True; False when it still did after RELEASE_WAIT_S."""
    deadline = time.perf_counter() + RELEASE_WAIT_S
    while any(
        now > then
        for t, n in zip(tensors, before, strict=True)
        for now, then in zip(_refs(t), n, strict=True)
    ):
        if time.perf_counter() > deadline:
            return False
        time.sleep(0)  # releases the GIL, which the worker may need to free what it held
    return True


def _gloo_comms() -> tuple[object, object]:
    """FSDP2's all-gather and reduce-scatter on gloo, each returning only once gloo's worker thread has
    let go of the collective's tensors.

    gloo runs a collective on its own thread, which keeps its references to the tensors (views of
    FSDP's flat buffers) a moment after the caller's wait has returned, and then needs the GIL to drop
    them. When FSDP frees a buffer in that moment (the all-gather output, right after copying the
    layer's parameters out of it), the buffer lives on for as long as the main thread keeps the GIL —
    into the next layer's ops: the same run peaked one layer's parameters higher some times and not
    others (18.13 vs 16.72 MiB for a rank of the same LoRA cell). Waiting here makes FSDP's frees happen
    where it makes them, as on CUDA, where memory follows the program order. The collectives were
    synchronous on CPU already (FSDP2's default unshard); the wait is microseconds, rarely ~10 ms."""
    from torch.distributed.fsdp._fully_shard._fsdp_collectives import DefaultAllGather, DefaultReduceScatter

    class Settled:
        waiting = True  # both comms': once gloo held a tensor past RELEASE_WAIT_S, neither waits again

        def settle(self, tensors: tuple[torch.Tensor, ...], before: list[tuple[int, int]]) -> None:
            if Settled.waiting:
                Settled.waiting = _released(tensors, before)

    class AllGather(Settled, DefaultAllGather):
        def __call__(self, output_tensor, input_tensor, group, async_op=False):  # noqa: ARG002
            before = [_refs(output_tensor), _refs(input_tensor)]
            super().__call__(output_tensor, input_tensor, group, async_op=False)
            self.settle((output_tensor, input_tensor), before)

    class ReduceScatter(Settled, DefaultReduceScatter):
        """gloo's reduce-scatter is an all-reduce of its own copy of the input, then a copy of this
        rank's chunk: here the all-reduce runs in place on FSDP's input (a scratch buffer FSDP only
        keeps alive, never reads again) — the same sums, without a copy that gloo's thread frees."""

        def __call__(self, output_tensor, input_tensor, group, op, async_op=False):  # noqa: ARG002
            before = [_refs(input_tensor)]
            dist.all_reduce(input_tensor, op=op, group=group)
            self.settle((input_tensor,), before)
            n = output_tensor.numel()
            output_tensor.view(-1).copy_(input_tensor.view(-1).narrow(0, dist.get_rank(group) * n, n))

    return AllGather(), ReduceScatter()


def unwrap(model: Model) -> Model:
    """The model under DDP's wrapper (FSDP2 changes the modules in place: the same object)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model  # type: ignore[return-value]


def gathered_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The trained parameters gathered whole, on the CPU of rank 0 (None on the other ranks; every rank
    must call it: it is a collective). Keys are the unwrapped model's parameter names."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    state = get_model_state_dict(model, options=options)
    if dist.get_rank() != 0:
        return None
    names = {n for n, p in unwrap(model).named_parameters() if p.requires_grad}  # type: ignore[arg-type]
    return {k: v for k, v in state.items() if k in names and isinstance(v, torch.Tensor)}

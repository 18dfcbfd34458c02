"""Memory measured from real allocations (never computed from shapes), and the memory cap.

- CUDA: `torch.cuda.max_memory_allocated/_reserved`, plus the device peak from NVML (pynvml when
  importable, else `nvidia-smi`) sampled by a thread — what "does it fit on the card" is judged on.
- CPU: `LiveBytes`, a TorchDispatchMode that sees every tensor an op creates and tracks the bytes of
  live storages (a weakref finalizer per storage subtracts them when the storage is freed). Storages
  that exist before it starts (weights, gradients, optimizer state) are registered up front, so the
  peak it reports means what `max_memory_allocated` means on CUDA: the peak of live tensor bytes.
  Its cost is one Python call per op: 7.8 % of a small model's step (154 → 166 ms; hidden 256, 4 layers,
  8×160 tokens, 2 idle cores; bench/bench_runner_vs_trainer.py), so the runner turns it on only for the first
  steps (optimizer state is created there), the step holding the largest padded micro-batch, evals
  and the task metric — and leaves those steps out of tokens/s.
- Process RSS peak: a thread sampling /proc/self/statm every 20 ms, and `getrusage` maxrss when it grew
  during the run (exact even between samples).
- Memory cap (train.memory_cap_gib) = the memory the cell adds to its process: on CPU, RLIMIT_DATA
  (private writable memory: heap and anonymous mappings) set to the process's usage once the
  runner's libraries are loaded (Python, torch, transformers, peft, bitsandbytes: ~0.4 GiB, not
  counted) plus the cap, so an allocation past it fails for real inside torch ("can't allocate
  memory") and the run ends `oom`; the previous limit is restored afterwards.
  On CUDA: `torch.cuda.set_per_process_memory_fraction`.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

GIB = 2**30


class LiveBytes(TorchDispatchMode):
    """Peak bytes of live tensor storages while active (CPU), and what they were at the peak.

    Each storage is counted under the category current when it appeared (`phase(name)`): `weights`,
    `gradients`, `optimizer` for what exists when counting starts (`register`), then the loop's phases —
    `forward` (activations, logits, parameters FSDP gathered), `backward` (activation and parameter
    gradients), `optimizer` (states created by the first step, the step's temporaries), `eval`.
    FSDP2 frees a gathered parameter by resizing its storage to 0 and later back (no dispatched op
    shows either): while counting, its alloc_storage/free_storage report each resize here."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.category = "forward"
        self.by_category: dict[str, int] = {}  # live bytes per category now
        self.at_peak: dict[str, int] = {}  # by_category when the peak was reached
        self._sizes: dict[int, tuple[int, str]] = {}  # storage id -> (bytes counted, category)
        self._unpatch: Callable[[], None] = _nothing

    def phase(self, name: str) -> None:
        self.category = name

    def _add(self, key: int, n: int, category: str) -> None:
        self._sizes[key] = (n, category)
        self.live += n
        self.by_category[category] = self.by_category.get(category, 0) + n
        if self.live > self.peak:
            self.peak = self.live
            self.at_peak = {k: v for k, v in self.by_category.items() if v}

    def _track(self, t: torch.Tensor, category: str | None = None) -> None:
        try:
            s = local(t).untyped_storage()  # a DTensor's own storage is a size-only stand-in
        except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
            return
        key = id(s)
        if key in self._sizes:
            return
        self._add(key, s.nbytes(), category or self.category)
        weakref.finalize(s, self._free, key)

    def _free(self, key: int) -> None:
        n, category = self._sizes.pop(key, (0, ""))
        self.live -= n
        if category:
            self.by_category[category] -= n

    def resized(self, storage: torch.UntypedStorage) -> None:
        """A storage resized in place (FSDP2's alloc_storage/free_storage)."""
        key = id(storage)
        if key not in self._sizes:
            self._add(key, storage.nbytes(), self.category)
            weakref.finalize(storage, self._free, key)
            return
        old, category = self._sizes[key]
        self._free(key)
        self._add(key, storage.nbytes(), category)

    def register(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Count storages that already exist, by category (model_tensors: parameters, gradients,
        optimizer state, buffers)."""
        for category, t in tensors:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                self._track(t, category)

    def __enter__(self) -> LiveBytes:
        self._unpatch = _watch_fsdp_resizes(self)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._unpatch()
            self._unpatch = _nothing

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            if out.device.type == "cpu":
                self._track(out)
        elif isinstance(out, (tuple, list)):
            for o in out:
                if isinstance(o, torch.Tensor) and o.device.type == "cpu":
                    self._track(o)
        return out


def _nothing() -> None:
    return None


def _watch_fsdp_resizes(live: LiveBytes) -> Callable[[], None]:
    """Report FSDP2's in-place storage resizes to `live` while it counts; returns the undo."""
    if "torch.distributed.fsdp" not in sys.modules:  # FSDP never ran in this process
        return _nothing
    try:
        from torch.distributed.fsdp._fully_shard import _fsdp_param, _fsdp_param_group
    except ImportError:  # a torch without FSDP2's module layout: its resizes go uncounted
        return _nothing
    alloc0, free0 = _fsdp_param.alloc_storage, _fsdp_param.free_storage

    def alloc(tensor: torch.Tensor) -> None:
        alloc0(tensor)
        live.resized(tensor.untyped_storage())

    def free(tensor: torch.Tensor) -> None:
        free0(tensor)
        live.resized(tensor.untyped_storage())

    modules = [m for m in (_fsdp_param, _fsdp_param_group) if getattr(m, "alloc_storage", None) is alloc0]
    for m in modules:
        m.alloc_storage = alloc  # type: ignore[attr-defined]
    _fsdp_param.free_storage = free  # type: ignore[attr-defined]

    def undo() -> None:
        for m in modules:
            m.alloc_storage = alloc0  # type: ignore[attr-defined]
        _fsdp_param.free_storage = free0  # type: ignore[attr-defined]

    return undo


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor (a DTensor's local shard under FSDP2; any other tensor itself)."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def _quant_states(model: torch.nn.Module) -> Iterator[Any]:
    """bitsandbytes quant_states: on each 4-bit parameter, and on its Linear4bit module (where it
    survives FSDP2 replacing the parameter by a sharded DTensor)."""
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            yield qs
    for m in model.modules():
        qs = getattr(m, "quant_state", None)
        if qs is not None and not isinstance(qs, torch.Tensor):
            yield qs


def model_tensors(model: torch.nn.Module, optimizer: Any = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(category, tensor) of every tensor a training step keeps: parameters (with bitsandbytes
    quant_state) and buffers as weights, their gradients, optimizer state; this rank's shards."""
    for p in model.parameters():
        yield "weights", local(p)
        if p.grad is not None:
            yield "gradients", local(p.grad)
    for qs in _quant_states(model):
        for t in _quant_tensors(qs):
            yield "weights", t
    for b in model.buffers():
        yield "weights", local(b)
    if optimizer is not None:
        for st in optimizer.state.values():
            for v in st.values():
                if isinstance(v, torch.Tensor):
                    yield "optimizer", local(v)


def _quant_tensors(qs: Any) -> Iterator[torch.Tensor]:
    for name in ("absmax", "code", "offset"):
        v = getattr(qs, name, None)
        if isinstance(v, torch.Tensor):
            yield v
    if getattr(qs, "state2", None) is not None:
        yield from _quant_tensors(qs.state2)


def _unique_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen, total = set(), 0
    for t in tensors:
        s = t.untyped_storage()
        key = (s.data_ptr(), s.device)
        if key not in seen:
            seen.add(key)
            total += s.nbytes()
    return total


def static_bytes(model: torch.nn.Module, optimizer: Any) -> dict[str, int]:
    """Bytes of weights (bitsandbytes quant_state included; tied weights once), gradients and optimizer
    state, read from the real tensors (call after an optimizer step, before gradients are cleared).
    Under FSDP2 this rank's shards (their padded storage); under DDP the gradient buckets.

    Only the run device's memory counts: on CUDA, torch AdamW's per-tensor `step` counters live on the
    host (not fused/capturable; advisor.estimator.static.step_counter_bytes) and are left out; bitsandbytes' paged
    states (CPU tensors over cudaMallocManaged memory, `is_paged`) stay in. On CPU everything counts."""
    params = [local(p) for p in model.parameters()]
    dev = params[0].device.type if params else "cpu"
    weights = list(params)
    for qs in _quant_states(model):
        weights.extend(_quant_tensors(qs))
    grads = [local(p.grad) for p in model.parameters() if p.grad is not None]
    states = [
        local(v)
        for st in optimizer.state.values()
        for v in st.values()
        if isinstance(v, torch.Tensor) and (v.device.type == dev or getattr(v, "is_paged", False))
    ]
    return {
        "weights": _unique_bytes(weights),
        "gradients": _unique_bytes(grads),
        "optimizer": _unique_bytes(states),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class Sampler:
    """Thread sampling process RSS (and the NVML device memory on CUDA) every `interval_s`."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.rss_peak = 0
        self.device_peak: int | None = None
        self._stop = threading.Event()
        self._maxrss0 = _maxrss_bytes()
        self._nvml = _nvml_reader() if torch.cuda.is_available() else None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        self.rss_peak = max(self.rss_peak, _rss_bytes())
        if self._nvml is not None:
            used = self._nvml()
            if used is not None:
                self.device_peak = max(self.device_peak or 0, used)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def rss_peak_bytes(self) -> int:
        m = _maxrss_bytes()
        return max(self.rss_peak, m) if m > self._maxrss0 else self.rss_peak


def _nvml_reader():
    """A function returning this process's GPU's used memory in bytes (NVML, else nvidia-smi)."""
    idx = torch.cuda.current_device()
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(idx)
        return lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used
    except Exception:
        import subprocess

        def smi() -> int | None:
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", f"--id={idx}"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                return int(out.stdout.strip().splitlines()[0]) * 2**20
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return None

        return smi


def _data_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def _load_libraries() -> None:
    """Import what every run loads (transformers, peft; bitsandbytes when installed) so that the memory
    cap's starting point includes them (~0.2 GiB of private memory on CPU)."""
    import importlib
    import importlib.util

    for name in ("transformers", "peft", "bitsandbytes"):
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


class MemoryCap:
    """Enforce train.memory_cap_gib for this process while active (see module docstring)."""

    def __init__(self, cap_gib: float | None):
        self.cap_gib = cap_gib
        self._old: tuple[int, int] | None = None

    def __enter__(self) -> MemoryCap:
        if self.cap_gib is None:
            return self
        if torch.cuda.is_available():
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, self.cap_gib * GIB / total))
            return self
        self._old = resource.getrlimit(resource.RLIMIT_DATA)
        _load_libraries()  # counted before the cap starts: the cap is the cell's memory, not theirs
        limit = _data_bytes() + int(self.cap_gib * GIB)
        hard = self._old[1]
        resource.setrlimit(
            resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard)
        )
        return self

    def release(self) -> None:
        if self._old is not None:
            resource.setrlimit(resource.RLIMIT_DATA, self._old)
            self._old = None
        elif self.cap_gib is not None and torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(1.0)

    def __exit__(self, *exc) -> None:
        self.release()


def is_oom(e: BaseException) -> bool:
    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and (
        "can't allocate memory" in msg or "out of memory" in msg.lower() or "Cannot allocate memory" in msg
    )


def now() -> float:
    return time.perf_counter()

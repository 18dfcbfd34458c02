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
- Memory cap on CPU: RLIMIT_DATA (private writable memory: heap and anonymous mappings) set to the
  process's usage at start plus the cap, so an allocation past it fails for real inside torch
  ("can't allocate memory") and the run ends `oom`; the previous limit is restored afterwards.
  On CUDA: `torch.cuda.set_per_process_memory_fraction`.
"""

from __future__ import annotations

import os
import resource
import threading
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

GIB = 2**30


class LiveBytes(TorchDispatchMode):
    """Peak bytes of live tensor storages while active (CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _track(self, t: torch.Tensor) -> None:
        try:
            s = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
            return
        key = id(s)
        if key in self._seen:
            return
        n = s.nbytes()
        self._seen.add(key)
        self.live += n
        if self.live > self.peak:
            self.peak = self.live
        weakref.finalize(s, self._free, key, n)

    def _free(self, key: int, n: int) -> None:
        self._seen.discard(key)
        self.live -= n

    def register(self, tensors) -> None:
        """Count storages that already exist (parameters, gradients, optimizer state, batches)."""
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                self._track(t)

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


def model_tensors(model, optimizer=None):
    """Every tensor a training step keeps: parameters, their gradients, buffers, optimizer state."""
    for p in model.parameters():
        yield p
        if p.grad is not None:
            yield p.grad
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            yield from _quant_tensors(qs)
    yield from model.buffers()
    if optimizer is not None:
        for st in optimizer.state.values():
            yield from (v for v in st.values() if isinstance(v, torch.Tensor))


def _quant_tensors(qs):
    for name in ("absmax", "code", "offset"):
        v = getattr(qs, name, None)
        if isinstance(v, torch.Tensor):
            yield v
    if getattr(qs, "state2", None) is not None:
        yield from _quant_tensors(qs.state2)


def _unique_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        s = t.untyped_storage()
        key = (s.data_ptr(), s.device)
        if key not in seen:
            seen.add(key)
            total += s.nbytes()
    return total


def static_bytes(model, optimizer) -> dict[str, int]:
    """Bytes of weights (bitsandbytes quant_state included; tied weights once), gradients and optimizer
    state, read from the real tensors (call after an optimizer step, before gradients are cleared).

    Only the run device's memory counts: on CUDA, torch AdamW's per-tensor `step` counters live on the
    host (not fused/capturable; advisor.estimator.static.step_counter_bytes) and are left out; bitsandbytes' paged
    states (CPU tensors over cudaMallocManaged memory, `is_paged`) stay in. On CPU everything counts."""
    params = list(model.parameters())
    dev = params[0].device.type if params else "cpu"
    weights = list(params)
    for p in params:
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            weights.extend(_quant_tensors(qs))
    grads = [p.grad for p in params if p.grad is not None]
    states = [
        v
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

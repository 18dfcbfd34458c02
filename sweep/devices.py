"""Device slots: the devices of this machine that the sweep's workers hand out to cells.

`sweep.devices` names them: null = every GPU this process sees (CUDA_VISIBLE_DEVICES when set — a
SLURM job's allocation — else what `nvidia-smi -L` lists), and on a machine without GPUs as many
simulated slots as the largest planned cell needs (cells then run one at a time, as before); N = the
first N of them (N simulated slots on CPU); [0, 2, 5] = these GPUs (nvidia-smi's numbering, each one
this process sees). With `sweep.workers` = W the slots are split into W contiguous shares, one per local
worker process. A worker starts a cell with `gpu.count` = N when N of its slots are free, gives the
runner those (CUDA_VISIBLE_DEVICES on GPUs, TUNEWISE_DEVICES always, which the record keeps as
`measured.devices`), and frees them when the cell ends: cells of 1, 2, 4 and 8 devices share a node and
no slot is ever given to two cells at once. Every take and give is logged to sweep.dir/logs/devices.jsonl
(unix time, host, worker pid, cell, slots), the ledger the scheduling test reads.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from advisor.errors import ConfigError

ENV_WORKER = "TUNEWISE_WORKER_DEVICES"  # the share of the slots a spawned local worker owns
ENV_CELL = "TUNEWISE_DEVICES"  # the slots a cell's runner got (runners.cell records them)
LEDGER = Path("logs") / "devices.jsonl"


def visible_gpus() -> list[str]:
    """The GPUs this process sees, as CUDA_VISIBLE_DEVICES names them (indices on the machine)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return [d.strip() for d in cvd.split(",") if d.strip() and d.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(x for x in out.splitlines() if x.startswith("GPU "))]


def machine_slots(devices: int | Sequence[int] | None, largest_cell: int) -> list[str]:
    """The slots `sweep.devices` names on this machine (see the module docstring)."""
    gpus = visible_gpus()
    where = (
        f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}"
        if "CUDA_VISIBLE_DEVICES" in os.environ
        else "nvidia-smi"
    )
    if devices is None:
        return gpus or [str(i) for i in range(max(1, largest_cell))]
    if isinstance(devices, int):
        if devices < 1:
            raise ConfigError(
                f"sweep.devices={devices}: must be null, a positive number of slots or a list of GPU indices"
            )
        if gpus and devices > len(gpus):
            raise ConfigError(
                f"sweep.devices={devices}: this machine shows {len(gpus)} GPU(s) ({where}: {', '.join(gpus)})"
            )
        return gpus[:devices] if gpus else [str(i) for i in range(devices)]
    names = [str(d) for d in devices]
    bad = [d for d in devices if not isinstance(d, int) or isinstance(d, bool) or d < 0]
    if not names or bad or len(set(names)) != len(names):
        raise ConfigError(
            f"sweep.devices={list(devices)}: must be a non-empty list of distinct GPU indices (integers ≥ 0)"
        )
    if gpus:
        unseen = [d for d in names if d not in gpus]
        if unseen:
            raise ConfigError(
                f"sweep.devices={list(devices)}: GPU {', '.join(unseen)} not visible here ({where}: {', '.join(gpus)})"
            )
    return names


def share(slots: list[str], workers: int, i: int) -> list[str]:
    """Worker i's contiguous share of the slots when `workers` local workers split them."""
    q, r = divmod(len(slots), workers)
    start = i * q + min(i, r)
    return slots[start : start + q + (1 if i < r else 0)]


def cell_env(slots: list[str]) -> dict[str, str]:
    """What a runner on these slots inherits."""
    env = {ENV_CELL: ",".join(slots)}
    if visible_gpus():
        env["CUDA_VISIBLE_DEVICES"] = ",".join(slots)
    return env


class Slots:
    """A worker's device slots: `take(n)` the lowest n free ones (None when fewer are free), `give`
    them back. Thread-safe; every change goes to the ledger."""

    def __init__(self, names: list[str], ledger: Path | None = None):
        self.names = list(names)
        self._free = list(names)
        self._lock = threading.Lock()
        self.ledger = ledger

    @property
    def free(self) -> int:
        return len(self._free)

    def take(self, n: int, cell_id: str) -> list[str] | None:
        with self._lock:
            if n > len(self._free):
                return None
            got, self._free = self._free[:n], self._free[n:]
            self._log("take", cell_id, got)
            return got

    def give(self, slots: list[str], cell_id: str) -> None:
        with self._lock:
            self._log("give", cell_id, slots)
            self._free = [s for s in self.names if s in self._free or s in slots]

    def _log(self, event: str, cell_id: str, slots: list[str]) -> None:
        if self.ledger is None:
            return
        self.ledger.parent.mkdir(parents=True, exist_ok=True)
        line = {
            "event": event,
            "t": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "cell_id": cell_id,
            "devices": slots,
        }
        with open(self.ledger, "a") as f:
            f.write(json.dumps(line) + "\n")

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

Cells larger than a node (`gpu.count` > `sweep.gpus_per_node` = P) span K = gpu.count / P whole nodes,
one torch.distributed.run agent of P processes per node (runners.parallel.nodes). `sweep.node_launcher`
says where those agents run: `srun` (default) = on the K nodes of the SLURM job the worker runs in (the
worker takes its own node's P slots; the other nodes belong to the job), `local` = all K on this machine,
each over P of the cell's slots (to try multi-node on one machine; what the tests run). `layout` is that
decision, `local_slots` the slots a cell takes here, `cell_env` hands the layout to the cell's runner.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from advisor.errors import ConfigError

if TYPE_CHECKING:
    from sweep.settings import SweepSettings

ENV_WORKER = "TUNEWISE_WORKER_DEVICES"  # the share of the slots a spawned local worker owns
ENV_CELL = "TUNEWISE_DEVICES"  # the slots a cell's runner got (runners.cell records them)
LEDGER = Path("logs") / "devices.jsonl"


@dataclass(frozen=True)
class Layout:
    """How a cell of `nodes` × `per_node` devices runs: its agents' node count, the processes of each,
    and where the agents of a multi-node cell start (`srun` | `local`)."""

    nodes: int
    per_node: int
    launcher: str = "local"


def layout(count: int, settings: SweepSettings) -> Layout | None:
    """The layout of a cell with gpu.count = `count` (None when it does not split into whole nodes)."""
    per = settings.gpus_per_node
    if count <= per:
        return Layout(1, count)
    nodes, rest = divmod(count, per)
    return Layout(nodes, per, settings.node_launcher) if rest == 0 else None


def local_slots(count: int, settings: SweepSettings) -> int:
    """The slots of this machine a cell takes: all of them, except under srun only its first node's."""
    lay = layout(count, settings)
    return lay.per_node if lay is not None and lay.nodes > 1 and lay.launcher == "srun" else count


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


def cell_env(slots: list[str], lay: Layout | None = None) -> dict[str, str]:
    """What a runner on these slots inherits (and, for a cell spanning nodes, its layout)."""
    from runners.parallel.files import ENV_NODE_LAUNCHER, ENV_NODES

    env = {ENV_CELL: ",".join(slots)}
    if visible_gpus():
        env["CUDA_VISIBLE_DEVICES"] = ",".join(slots)
    if lay is not None and lay.nodes > 1:
        env[ENV_NODES], env[ENV_NODE_LAUNCHER] = str(lay.nodes), lay.launcher
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

"""Where a rank of a group keeps its files and how it knows it is one: the facts the leader
(runners.parallel.launch), the rank process (runners.parallel.rank) and the runner (runners.cell) share."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path

from runners.result import CellResult, write_json

ENV_LINK = "TUNEWISE_LINK"  # host:port of the leader's event link (rank 0 connects)
ENV_LEADER = "TUNEWISE_LEADER_PID"  # the leader's pid: a rank whose parent is gone exits
RANKS = "ranks"  # OUT_DIR/ranks/: rank results, progress files, error logs, the config the ranks read
# a cell spanning nodes (sweep/devices.py sets them for its runner): how many, and how their agents start
ENV_NODES = "TUNEWISE_NODES"
ENV_NODE_LAUNCHER = "TUNEWISE_NODE_LAUNCHER"  # srun | local
NODE_LAUNCHERS = ("srun", "local")  # how the agents of a cell spanning nodes start (runners.parallel.nodes)


def in_group() -> bool:
    """Whether this process is a rank its leader started (not a user's own torchrun)."""
    return ENV_LINK in os.environ and "RANK" in os.environ


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def error_log() -> str:
    """The traceback file of this rank, relative to OUT_DIR."""
    return f"{RANKS}/error-rank{env_rank()}.log"


def result_path(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / RANKS / f"rank{rank}.json"


def beat_path(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / RANKS / f"beat-{rank}.json"


def write_result(out_dir: Path, result: CellResult) -> None:
    """This rank's result for the leader to combine (with the time it ended: the first failure wins)."""
    path = result_path(out_dir, env_rank())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"rank": env_rank(), "t": time.time(), **result.to_dict()})


def node_path(out_dir: Path, node: int) -> Path:
    """What node `node`'s agent reports when its ranks end (runners.parallel.agent)."""
    return Path(out_dir) / RANKS / f"node-{node}.json"


def die_with(leader: int | None) -> None:
    """SIGKILL this process when the one that started it dies (PR_SET_PDEATHSIG, Linux); exit at once
    when `leader`, that process's pid, is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    if leader is not None and os.getppid() != leader:  # the leader died before the line above
        os._exit(1)


def slurm_nodes() -> int:
    """The nodes of the SLURM job this process runs in (0 outside SLURM)."""
    if not os.environ.get("SLURM_JOB_ID"):
        return 0
    n = os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES") or "1"
    return int(n) if n.isdigit() else 1

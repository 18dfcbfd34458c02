"""A node's share of a cell: torch.distributed.run's elastic agent, starting this node's ranks.

- `run_group` runs the agent in this process: `--nproc-per-node P --max-restarts 0`, and either a
  rendezvous on a free local port (one node, what `--standalone` does) or, for a cell spanning K nodes,
  `--nnodes K --rdzv-backend c10d --rdzv-endpoint HOST:PORT --rdzv-id ID` against the store the
  cell's leader hosts (runners.parallel.launch; no agent hosts it, `is_host=false`). The rendezvous
  waits at most JOIN_TIMEOUT_S for every node's agent (TUNEWISE_JOIN_TIMEOUT_S overrides it).
- `python -m runners.parallel.agent OUT_DIR --nodes K --nproc-per-node P --endpoint HOST:PORT --id ID
  [--node k] -- RANK_ARGS…` is one node's agent of a multi-node cell, started by the leader (on this
  machine with `sweep.node_launcher=local`, or on every node of the SLURM job by `srun`). It reports
  to OUT_DIR/ranks/node-<k>.json (k = --node, else SLURM_PROCID): its host, devices, the global ranks
  that failed (exit code, signal) and its own error (e.g. a rendezvous that timed out). OUT_DIR must
  be on a file system every node sees: the ranks read their config there and write their results
  there. Its ranks take this process as their leader (they die with it); it dies with the cell's
  leader when that started it here. Exit code 0 when every rank of this node ended well, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from runners.parallel.files import ENV_LEADER, die_with, node_path
from runners.result import write_json

JOIN_TIMEOUT_S = 300.0  # every node's agent must join the rendezvous within this (seconds)


@dataclass(frozen=True)
class Failure:
    """How a rank process ended, as the elastic agent saw it."""

    exitcode: int
    signal: str | None  # e.g. SIGKILL when a signal ended it


@dataclass(frozen=True)
class Rendezvous:
    """Where the agents of a multi-node cell meet: the leader's store."""

    nodes: int
    endpoint: str  # HOST:PORT
    run_id: str


def join_timeout_s() -> float:
    return float(os.environ.get("TUNEWISE_JOIN_TIMEOUT_S") or JOIN_TIMEOUT_S)


def run_group(nproc: int, args: list[str], rdzv: Rendezvous | None = None) -> dict[int, Failure]:
    """torch.distributed.run on this node: `nproc` ranks of `python <args>`; the (global) ranks that
    failed. Raises what the agent raises besides a rank's failure (a rendezvous that timed out)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    flags = [f"--nproc-per-node={nproc}", "--max-restarts=0", "--monitor-interval=0.1"]
    if rdzv is not None:
        flags += [
            f"--nnodes={rdzv.nodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rdzv.endpoint}",
            f"--rdzv-id={rdzv.run_id}",
            f"--rdzv-conf=is_host=false,join_timeout={int(join_timeout_s())}",
        ]
    parsed = get_args_parser().parse_args([*flags, *args])
    if rdzv is None:  # what torch.distributed.run.run does for --standalone: a free local port
        parsed.rdzv_backend, parsed.rdzv_endpoint, parsed.rdzv_id = "c10d", "localhost:0", str(uuid.uuid4())
    config, cmd, cmd_args = config_from_args(parsed)
    try:
        elastic_launch(config, cmd)(*cmd_args)
    except ChildFailedError as e:
        return {
            rank: Failure(f.exitcode, f.signal_name() if f.exitcode < 0 else None)
            for rank, f in e.failures.items()
        }
    return {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.parallel.agent", description="One node of a cell.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--nodes", type=int, required=True)
    ap.add_argument("--nproc-per-node", type=int, required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--node", type=int, default=None, help="this node's index (default: SLURM_PROCID)")
    ap.add_argument("--leader-pid", type=int, default=None, help="die with this parent")
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    a, rank_args = ap.parse_args(argv[:cut]), argv[cut + 1 :]
    if a.leader_pid is not None and sys.platform.startswith("linux"):
        die_with(a.leader_pid)  # (its ranks then die with it)
    node = a.node if a.node is not None else int(os.environ.get("SLURM_PROCID") or 0)
    os.environ[ENV_LEADER] = str(os.getpid())  # the ranks' parent
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and a.leader_pid is None:  # under srun: this node's devices, for the record
        os.environ["TUNEWISE_DEVICES"] = cvd
    devices = [d for d in (os.environ.get("TUNEWISE_DEVICES") or "").split(",") if d]
    failures: dict[int, Failure] = {}
    error = None
    try:
        failures = run_group(a.nproc_per_node, rank_args, Rendezvous(a.nodes, a.endpoint, a.id))
    except BaseException as e:  # reported, whatever it was (a signal from the leader too)
        error = f"{type(e).__name__}: {e}".strip().rstrip(":")
    report = {
        "node": node,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "devices": devices,
        "failures": {str(r): [f.exitcode, f.signal] for r, f in failures.items()},
        "error": error,
        "t": time.time(),
    }
    path = node_path(a.out_dir, node)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, report)
    if error:
        print(f"tunewise node {node}: {error}", file=sys.stderr)
    return 0 if not failures and error is None else 1


if __name__ == "__main__":
    sys.exit(main())

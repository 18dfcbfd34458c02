"""The leader's side of a cell spanning K nodes of P devices (sweep.gpus_per_node = P < gpu.count).

The leader hosts the rendezvous store (a TCPStore on a free port of its host) and starts one agent per
node (runners.parallel.agent: torch.distributed.run's elastic agent, `--nnodes K --nproc-per-node P
--rdzv-backend c10d --rdzv-endpoint HOST:PORT --rdzv-id <uuid of this attempt>`):
- `local` (sweep.node_launcher=local): K agent processes on this machine, agent k over the cell's
  slots k·P … k·P+P−1 (CUDA_VISIBLE_DEVICES on GPUs, TUNEWISE_DEVICES always); the store on 127.0.0.1;
- `srun` (the default): `srun --overlap --nodes K --ntasks K --ntasks-per-node 1 --kill-on-bad-exit=1
  [--gpus-per-task P] python -m runners.parallel.agent …` inside the SLURM job the leader runs in
  (`--overlap`: the worker job's own step holds every node); the store on this node's hostname.
When one agent fails, the others get GRACE_S to end on their own (their ranks lose their peers within
seconds), then SIGTERM, then SIGKILL: the cell ends in bounded time. Each agent reports to
OUT_DIR/ranks/node-<k>.json; a node without a report is named in the cell's reason (its agent never
ran, or OUT_DIR is not on a file system the nodes share).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from runners.parallel.agent import Failure, join_timeout_s
from runners.parallel.files import NODE_LAUNCHERS, RANKS, node_path, slurm_nodes

GRACE_S = 15.0  # after an agent fails, how long the other agents get to end on their own


@dataclass
class NodesRun:
    """What the agents of a multi-node cell reported."""

    nodes: int
    failures: dict[int, Failure] = field(default_factory=dict)  # global rank → how it ended
    reports: dict[int, dict[str, Any]] = field(default_factory=dict)  # node → its agent's report
    problem: str | None = None  # nodes that left no report, agents that failed on their own

    def node_of(self, rank: int) -> str | None:
        """`node k of K (host)` for a rank an agent reported failed."""
        for k, rep in sorted(self.reports.items()):
            if str(rank) in (rep.get("failures") or {}):
                return f"node {k} of {self.nodes} ({rep.get('host')})"
        return None

    def devices(self) -> list[str] | None:
        """Every node's devices, named `host:device` when the nodes are different hosts."""
        hosts = {rep.get("host") for rep in self.reports.values()}
        out = [
            f"{rep.get('host')}:{d}" if len(hosts) > 1 else str(d)
            for _, rep in sorted(self.reports.items())
            for d in rep.get("devices") or []
        ]
        return out or None


def link_host(launcher: str) -> tuple[str, str]:
    """(address to bind, address the other nodes reach) for this leader's servers."""
    return ("127.0.0.1", "127.0.0.1") if launcher == "local" else ("", socket.gethostname())


def slurm_problem(nodes: int) -> str | None:
    """Why srun cannot start `nodes` agents from here (None when it can)."""
    from shutil import which

    job = os.environ.get("SLURM_JOB_ID")
    have = slurm_nodes()
    if not job or which("srun") is None:
        return (
            f"sweep.node_launcher=srun: this cell spans {nodes} nodes, but this runner is not inside a "
            "SLURM job (run the sweep with python -m sweep.slurm hydra/launcher=submitit_slurm …)"
        )
    if have < nodes:
        return f"sweep.node_launcher=srun: this cell spans {nodes} nodes; SLURM job {job} has {have}"
    return None


def run_nodes(nodes: int, per_node: int, launcher: str, args: list[str], out_dir: Path) -> NodesRun:
    """Start the K agents of this cell, wait for all of them (see the module docstring)."""
    from torch.distributed import TCPStore

    run = NodesRun(nodes)
    if launcher not in NODE_LAUNCHERS:
        run.problem = f"sweep.node_launcher={launcher!r}: unknown (allowed: {NODE_LAUNCHERS})"
        return run
    if launcher == "srun":
        run.problem = slurm_problem(nodes)
        if run.problem:
            return run
    bind, host = link_host(launcher)
    store = TCPStore(
        bind or "0.0.0.0",
        0,
        is_master=True,
        wait_for_workers=False,
        timeout=timedelta(seconds=join_timeout_s() + 60),
    )
    endpoint, run_id = f"{host}:{store.port}", str(uuid.uuid4())
    agent = [sys.executable, "-m", "runners.parallel.agent", str(out_dir), f"--nodes={nodes}"]
    agent += [f"--nproc-per-node={per_node}", f"--endpoint={endpoint}", f"--id={run_id}"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if launcher == "local":
            slots = [d for d in (os.environ.get("TUNEWISE_DEVICES") or "").split(",") if d]
            for k in range(nodes):
                env = dict(os.environ)
                mine = slots[k * per_node : (k + 1) * per_node]
                if mine:
                    env["TUNEWISE_DEVICES"] = ",".join(mine)
                    if "CUDA_VISIBLE_DEVICES" in env:
                        env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
                cmd = [*agent, f"--node={k}", f"--leader-pid={os.getpid()}", "--", *args]
                procs.append(subprocess.Popen(cmd, env=env))
        else:
            srun = ["srun", "--overlap", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1"]
            srun += ["--kill-on-bad-exit=1"]
            srun += [f"--gpus-per-task={per_node}"] if os.environ.get("CUDA_VISIBLE_DEVICES") else []
            print(f"tunewise: {' '.join(srun)} {' '.join(agent)} …", file=sys.stderr)
            procs.append(subprocess.Popen([*srun, *agent, "--", *args]))
        _wait(procs)
    finally:
        _stop(procs, 0)
        del store
    _read_reports(run, out_dir, endpoint)
    return run


def _wait(procs: list[subprocess.Popen[bytes]]) -> None:
    """Until every agent ended; once one failed, the rest get GRACE_S, then are stopped."""
    failed_at = None
    while any(p.poll() is None for p in procs):
        if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
            _stop(procs, 5.0)
            return
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen[bytes]], grace_s: float) -> None:
    """SIGTERM the agents still running (they stop their ranks), SIGKILL after grace_s."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(OSError):
                p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        if p.poll() is None:
            p.kill()
            p.wait()


def _read_reports(run: NodesRun, out_dir: Path, endpoint: str) -> None:
    for k in range(run.nodes):
        with contextlib.suppress(OSError, ValueError):
            run.reports[k] = json.loads(node_path(out_dir, k).read_text())
    for rep in run.reports.values():
        for r, (code, sig) in (rep.get("failures") or {}).items():
            run.failures[int(r)] = Failure(int(code), sig)
    problems = []
    missing = [str(k) for k in range(run.nodes) if k not in run.reports]
    if missing:
        problems.append(
            f"node{'s' if len(missing) > 1 else ''} {', '.join(missing)} of {run.nodes} left no report in {Path(out_dir) / RANKS}: its agent "
            "never ran, or the nodes do not share the cell's folder (sweep.dir must be on a file system "
            "every node sees)"
        )
    for k, rep in sorted(run.reports.items()):
        err = rep.get("error")
        if err and not err.startswith("SignalException"):  # not the leader stopping it
            hint = (
                f" (the agents did not all join the rendezvous at {endpoint} within {join_timeout_s():.0f} s)"
                if "Rendezvous" in err
                else ""
            )
            problems.append(f"node {k} of {run.nodes} ({rep.get('host')}): {err}{hint}")
    run.problem = "; ".join(problems) or None

"""The leader of a cell on N processes: starts the ranks with torch.distributed.run, relays them to the
caller's hooks, and turns their results into the cell's one result.json.

- Start: torch.distributed.run's own argument parser and elastic agent (`--standalone
  --nproc-per-node N --max-restarts 0`, rank entry point `python -m runners.parallel.rank`), in this
  process; a cell spanning K nodes (TUNEWISE_NODES, set by the sweep's worker) instead starts one agent
  per node against a rendezvous store this process hosts (runners.parallel.nodes), and the link listens
  on this host's name. Each rank inherits the environment (CUDA_VISIBLE_DEVICES: the worker's device slice; rank r
  takes its r-th device) plus the link address and this process's pid.
- Relay: rank 0's events (start, eval, steps) arrive on a TCP link; each goes to `hooks.emit`, an eval
  also to `hooks.control`, whose answer goes back to rank 0 (which broadcasts it). Progress comes from
  every rank's progress file: the sum of their ticks moving is a `keepalive`, rank 0's phase a phase.
- End: when any rank fails, the agent stops the others within seconds (a rank killed with -9 included;
  a hung rank fails its collectives after runners.parallel.group.COLLECTIVE_TIMEOUT_S, or the sweep's
  stall watchdog kills this process, and the ranks die with it). `combine` names the culprit: a rank
  that failed on its own (its reason) or was killed by a signal, before the ranks that only lost their
  peers; the cell's status is that rank's (oom or failed) and its reason starts `rank r of N:`.
  Memory: `measured.ranks` lists every rank's; the cell's peaks are the largest rank's.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from advisor.config.schema import RunConfig
from runners.hooks import Hooks
from runners.parallel.agent import Failure, run_group
from runners.parallel.files import (
    ENV_LEADER,
    ENV_LINK,
    ENV_NODE_LAUNCHER,
    ENV_NODES,
    RANKS,
    beat_path,
    result_path,
)
from runners.parallel.group import PEER_FAILED
from runners.parallel.nodes import NodesRun, link_host, run_nodes
from runners.result import CellResult, Measured, Progress, Provenance, Status

WATCH_S = 0.5  # how often the leader reads the ranks' progress files
# a rank's failure caused by another's (its peer's connection went away, or the launcher stopped it)
COLLATERAL = (PEER_FAILED, "by peer", "Broken pipe", "Connection refused", "NCCL communicator was aborted")
MEMORY_KEYS = ("allocated_gib", "reserved_gib", "device_gib", "rss_gib")


def launch(cfg: RunConfig, out_dir: Path, hooks: Hooks, *, resume: bool, baseline: bool) -> CellResult:
    """Run the cell on cfg.gpu.count processes; write OUT_DIR/result.json; never raises for a failed run."""
    world = cfg.gpu.count
    nodes, launcher = node_layout()
    ranks = out_dir / RANKS
    ranks.mkdir(parents=True, exist_ok=True)
    for old in [*ranks.glob("rank*.json"), *ranks.glob("beat-*.json"), *ranks.glob("node-*.json")]:
        old.unlink()
    config = ranks / "config.json"
    config.write_text(json.dumps(cfg.to_dict()))
    args = ["-m", "runners.parallel.rank", str(config), str(out_dir)]
    args += ["--baseline"] if baseline else []
    args += [] if resume else ["--fresh"]
    multi: NodesRun | None = None
    bind, host = link_host(launcher) if nodes > 1 else ("127.0.0.1", "127.0.0.1")
    with socket.create_server((bind, 0)) as server:
        relay = Relay(server, hooks, out_dir, world)
        link = f"{host}:{server.getsockname()[1]}"
        with relay, _environ({ENV_LINK: link, ENV_LEADER: str(os.getpid())}):
            if nodes == 1:
                failures = run_group(world, args)
            elif world % nodes:
                failures, multi = {}, NodesRun(nodes, problem=f"gpu.count={world} is not {nodes} equal nodes")
            else:
                multi = run_nodes(nodes, world // nodes, launcher, args, out_dir)
                failures = multi.failures
    result = combine(out_dir, world, failures, relay.progress, multi)
    result.write(out_dir)
    hooks.send({"type": "end", "status": result.status, "reason": result.reason})
    return result


def node_layout() -> tuple[int, str]:
    """(nodes, how their agents start) of this cell, as the sweep's worker set them (sweep/devices.py);
    (1, "local") when unset: one node."""
    nodes = os.environ.get(ENV_NODES) or "1"
    return (int(nodes) if nodes.isdigit() and int(nodes) > 1 else 1), os.environ.get(
        ENV_NODE_LAUNCHER
    ) or "local"


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set variables the ranks inherit; afterwards restore this process's environment as it was
    (torch.distributed.run also sets OMP_NUM_THREADS=1 here when it is unset)."""
    before = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


class Relay:
    """Rank 0's link and every rank's progress file → the caller's hooks (two daemon threads)."""

    def __init__(self, server: socket.socket, hooks: Hooks, out_dir: Path, world: int):
        self.server, self.hooks, self.out_dir, self.world = server, hooks, out_dir, world
        self.progress = Progress()  # step and loss as rank 0 reported them
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._link, name="tunewise-leader-link", daemon=True),
            threading.Thread(target=self._watch, name="tunewise-leader-watch", daemon=True),
        ]

    def __enter__(self) -> Relay:
        self.server.settimeout(0.5)
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._ticks()  # the last progress files

    def _link(self) -> None:
        conn = None
        while conn is None and not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = self.server.accept()
        if conn is None:
            return
        with conn, conn.makefile("r", encoding="utf-8") as lines:
            conn.settimeout(None)
            for line in lines:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                ev = msg.get("event")
                if ev is None:  # an optimizer step
                    self.progress.step, self.progress.loss = msg.get("step", 0), msg.get("loss")
                    if self.hooks.on_step is not None:
                        self.hooks.on_step(self.progress)
                elif ev.get("type") == "eval":
                    keep = self.hooks.evaluated(ev)
                    with contextlib.suppress(OSError):
                        conn.sendall(b"continue\n" if keep else b"prune\n")
                else:
                    self.hooks.send(ev)

    def _ticks(self) -> tuple[int, str | None]:
        total, phase = 0, None
        for r in range(self.world):
            try:
                beat = json.loads(beat_path(self.out_dir, r).read_text())
            except (OSError, ValueError):
                continue
            total += int(beat.get("tick") or 0)
            if r == 0:
                phase = beat.get("phase")
        return total, phase

    def _watch(self) -> None:
        last_tick, last_phase = -1, None
        while not self._stop.wait(WATCH_S):
            tick, phase = self._ticks()
            if phase and phase != last_phase and phase != "start":
                self.hooks.phase(phase)
                last_phase = phase
            elif tick != last_tick and self.hooks.keepalive is not None:
                self.hooks.keepalive(None)
            last_tick = tick


def _collateral(reason: str | None) -> bool:
    return bool(reason) and any(s in str(reason) for s in COLLATERAL)


def culprit(
    world: int, docs: dict[int, dict[str, Any]], failures: dict[int, Failure]
) -> tuple[int, int, Status, str] | None:
    """(kind, rank, status, what happened to it) of the rank that ended the group, or None when every
    rank ended well (kind: 0–5 in the order below).

    In order: a rank that failed on its own (its result names the error), a rank ended by a signal
    other than the agent's SIGTERM (kill -9, the kernel's OOM killer), a rank that exited without a
    result, a rank that failed because its peers went away; the earliest of a kind. The words follow
    the 1-process runner's (sweep.cellrun), which sweep.retry reads for the cause: `runner killed by
    SIG…` (a signal), `runner exited with code …` (a crash), else the rank's own reason."""

    def own(r: int) -> bool:
        d = docs.get(r)
        return d is not None and d.get("status") in ("failed", "oom") and not _collateral(d.get("reason"))

    candidates: list[tuple[int, float, int, Status, str]] = []
    for r in range(world):
        d, f = docs.get(r), failures.get(r)
        if own(r):
            assert d is not None
            candidates.append((0, float(d.get("t") or 0), r, d["status"], str(d.get("reason"))))
        elif d is None and f is not None and f.signal and f.signal != "SIGTERM":
            oom = ", what the kernel's OOM killer sends" if f.signal == "SIGKILL" else ""
            candidates.append((1, 0.0, r, "failed", f"runner killed by {f.signal}{oom}"))
        elif d is None and f is not None and f.exitcode > 0:
            why = f"runner exited with code {f.exitcode} without writing its result"
            candidates.append((2, 0.0, r, "failed", why))
        elif d is not None and d.get("status") in ("failed", "oom"):
            candidates.append((3, float(d.get("t") or 0), r, d["status"], str(d.get("reason"))))
        elif d is None and f is not None:
            candidates.append((4, 0.0, r, "failed", f"runner killed by {f.signal} (the launcher stopped it)"))
        elif d is None:
            candidates.append((5, 0.0, r, "failed", "runner exited with code 0 without writing its result"))
    if not candidates:
        return None
    kind, _, rank, status, reason = min(candidates)
    return kind, rank, status, reason


def combine(
    out_dir: Path,
    world: int,
    failures: dict[int, Failure],
    progress: Progress,
    multi: NodesRun | None = None,
) -> CellResult:
    """The cell's result from the ranks' (see the module docstring). A cell on several nodes: the
    failed rank's node in its reason; a node that left no report (or an agent's own error) is the
    reason unless a rank failed on its own, by a signal or a crash."""
    docs: dict[int, dict[str, Any]] = {}
    for r in range(world):
        with contextlib.suppress(OSError, ValueError):
            docs[r] = json.loads(result_path(out_dir, r).read_text())
    first = docs.get(0) or {}
    status: Status = first.get("status") or "failed"
    reason: str | None = first.get("reason")
    blame = culprit(world, docs, failures)
    problem = multi.problem if multi is not None else None
    if blame is not None and not (problem and blame[0] >= 3):
        _, rank, status, why = blame
        others = [str(r) for r in range(world) if r != rank]
        node = multi.node_of(rank) if multi is not None else None
        where = (
            f"rank {rank} of {world}"
            + (f" on {node}" if node else "")
            + (
                f"; rank{'s' if len(others) > 1 else ''} {', '.join(others)} stopped with it"
                if others
                else ""
            )
        )
        reason = f"{why} ({where})"
    elif problem:
        status, reason = "failed", problem
    if reason and status not in ("complete", "pruned"):
        print(f"tunewise cell failed: {reason}", file=sys.stderr)
    measured = _measured(docs, world, progress)
    if multi is not None:
        measured.devices = multi.devices() or measured.devices
    prov = first.get("provenance")
    return CellResult(
        status=status,
        reason=reason,
        measured=measured,
        provenance=Provenance(**prov) if prov else None,
    )


def _measured(docs: dict[int, dict[str, Any]], world: int, progress: Progress) -> Measured:
    m = (docs.get(0) or {}).get("measured")
    measured = Measured(**m) if m else Measured.empty()
    if not m:  # rank 0 never reported: what the link told
        measured.steps = progress.step
    ranks: list[dict[str, Any]] = []
    for r in sorted(docs):
        entries = (docs[r].get("measured") or {}).get("ranks") or []
        ranks.extend(entries)
    measured.world_size = world
    measured.ranks = ranks or None
    for key in MEMORY_KEYS:
        values = [e[key] for e in ranks if e.get(key) is not None]
        setattr(measured, key, max(values) if values else None)
    if not m:
        measured.usd = 0.0
    measured.devices = measured.devices or _devices_now()
    return measured


def _devices_now() -> list[str] | None:
    slots = os.environ.get("TUNEWISE_DEVICES") or os.environ.get("CUDA_VISIBLE_DEVICES")
    return [d for d in slots.split(",") if d] if slots else None

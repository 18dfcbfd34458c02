"""One rank of a cell on N processes: `python -m runners.parallel.rank CONFIG_JSON OUT_DIR [--baseline]
[--fresh]`, started by the group's leader (runners.parallel.launch) through torch.distributed.run.

- It dies with the leader: PR_SET_PDEATHSIG, because the elastic agent starts every rank in a session
  of its own, out of reach of a kill of the leader's process group (the stall watchdog's).
- Nothing of it reaches stdout (fd 1 goes to stderr): rank 0 sends the protocol's events to the leader
  over a TCP link on 127.0.0.1 (TUNEWISE_LINK) and reads each prune answer back from it.
- Every rank writes its progress to OUT_DIR/ranks/beat-<r>.json every BEAT_S seconds (with its pid): `tick` counts
  its main thread's work (forward passes, steps, phases, a changed Python stack between two beats, as
  runners.protocol counts it), with its step and phase. The leader adds the ticks of all ranks up into
  the heartbeats it sends, so a rank that stops shows even while the others wait for it.
- Its result goes to OUT_DIR/ranks/rank<r>.json (`write_result`); exit code 0 for complete or pruned,
  1 otherwise, so that a failing rank ends the whole group at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners.parallel.files import (
    ENV_LEADER,
    ENV_LINK,
    beat_path,
    die_with,
    env_rank,
)
from runners.protocol import stack_signature
from runners.result import Progress, write_json

if TYPE_CHECKING:
    from runners.hooks import EvalEvent, Event

BEAT_S = 1.0  # seconds between a rank's progress files
LINK_TIMEOUT_S = 60.0  # rank 0 gives up connecting to its leader after this long


class Beat:
    """This rank's progress file, rewritten every BEAT_S seconds from its own thread."""

    def __init__(self, path: Path):
        self.path = path
        self.tick, self.step, self.phase = 0, 0, "start"
        self.loss: float | None = None
        self._main = threading.main_thread().ident
        self._stack: Any = ()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunewise-rank-beat", daemon=True)

    def alive(self, phase: str | None = None) -> None:
        self.tick += 1
        if phase:
            self.phase = phase

    def stepped(self, progress: Progress) -> None:
        self.step, self.loss = progress.step, progress.loss
        self.tick += 1

    def write(self) -> None:
        doc = {
            "pid": os.getpid(),
            "tick": self.tick,
            "step": self.step,
            "loss": self.loss,
            "phase": self.phase,
            "t": time.time(),
        }
        with contextlib.suppress(OSError):
            write_json(self.path, doc)

    def _run(self) -> None:
        while not self._stop.wait(BEAT_S):
            stack = stack_signature(self._main)
            if stack != self._stack:
                self._stack = stack
                self.tick += 1
            self.write()

    def __enter__(self) -> Beat:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.write()


class Link:
    """Rank 0's end of the event link: JSON lines out, one `continue`/`prune` line back per eval."""

    def __init__(self, address: str):
        host, port = address.rsplit(":", 1)
        deadline = time.monotonic() + LINK_TIMEOUT_S
        while True:
            try:
                self._sock = socket.create_connection((host, int(port)), timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._sock.settimeout(None)
        self._in = self._sock.makefile("r", encoding="utf-8")
        self._lock = threading.Lock()

    def _send(self, doc: dict[str, Any]) -> None:
        with self._lock:
            self._sock.sendall((json.dumps(doc) + "\n").encode())

    def emit(self, event: Event) -> None:
        self._send({"event": event})

    def answer(self, _event: EvalEvent) -> bool:
        """The leader's answer to the eval event just sent: False = prune (EOF = continue)."""
        return self._in.readline().strip() != "prune"

    def stepped(self, progress: Progress) -> None:
        self._send({"step": progress.step, "loss": progress.loss})

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


def main(argv: list[str] | None = None) -> int:
    if sys.platform.startswith("linux"):  # dies with the elastic agent that started it
        leader = os.environ.get(ENV_LEADER)
        die_with(int(leader) if leader else None)
    ap = argparse.ArgumentParser(prog="python -m runners.parallel.rank", description="One rank of a cell.")
    ap.add_argument("config_json", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="do not resume OUT_DIR/checkpoint")
    args = ap.parse_args(argv)
    sys.stdout.flush()
    os.dup2(2, 1)  # the protocol's stdout belongs to the leader
    sys.stdout = sys.stderr
    from advisor.config.schema import RunConfig
    from runners.cell import run_cell
    from runners.hooks import Hooks

    rank = env_rank()
    cfg = RunConfig.from_dict(json.loads(args.config_json.read_text()))
    link = Link(os.environ[ENV_LINK]) if rank == 0 else None
    with Beat(beat_path(args.out_dir, rank)) as beat:

        def on_step(progress: Progress) -> None:
            beat.stepped(progress)
            if link is not None:
                link.stepped(progress)

        hooks = Hooks(
            control=link.answer if link is not None else None,
            emit=link.emit if link is not None else None,
            on_step=on_step,
            keepalive=beat.alive,
        )
        result = run_cell(cfg, args.out_dir, hooks, resume=not args.fresh, baseline=args.baseline)
    if link is not None:
        link.close()
    return 0 if result.status in ("complete", "pruned") else 1


if __name__ == "__main__":
    sys.exit(main())

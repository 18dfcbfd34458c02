"""The subprocess side of docs/internals.md's runner protocol.

`python -m runners.protocol CONFIG_JSON OUT_DIR [--baseline] [--control]`
- stdout carries only `@@tunewise {json}` lines: start, heartbeat (at once, then every HEARTBEAT_S
  while running), eval, end. File descriptor 1 is pointed at stderr for everything else (libraries,
  progress bars).
- Keep-alive: heartbeats come from their own thread, so they alone do not show that the run moves. Each
  carries `tick`, a count of the main thread's work — forward passes of the model, optimizer steps,
  protocol events, phases entered (`phase`: load, train, eval, metric, save) and, between two
  heartbeats, any change of the main thread's Python stack (loading, saving, checkpoints). A tick that
  stops while heartbeats go on is a main thread blocked in one call: the sweep's stall watchdog
  (sweep/watchdog.py) kills such a runner, and one that sends nothing at all (a stopped process).
  A cell on N processes (gpu.count > 1): this process leads the group and the tick is the sum of every
  rank's (runners.parallel): a rank that stops stops it, even while the others wait for it.
- With `--control`, after each eval event one line is read from stdin: `continue` or `prune`
  (EOF or CONTROL_TIMEOUT_S without an answer = continue).
- Exit code 0 whenever OUT_DIR/result.json was written; 2 when it could not be.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Literal, TypedDict

from runners import offline
from runners.hooks import EndEvent, Event, Hooks
from runners.result import CellResult, Progress

PREFIX = "@@tunewise "
HEARTBEAT_S = 5.0  # heartbeat period (the contract asks for at most 10 s)
CONTROL_TIMEOUT_S = 120.0


class HeartbeatEvent(TypedDict):
    type: Literal["heartbeat"]
    step: int
    loss: float | None
    tick: int
    phase: str
    t: float  # unix time


@dataclass
class Beat:
    """What the next heartbeat says: the main thread writes it, the heartbeat thread reads it."""

    step: int = 0  # optimizer steps done
    loss: float | None = None  # the last step's training loss
    tick: int = 0  # units of main-thread work (see the module docstring)
    phase: str = "start"


class Channel:
    """Protocol lines on the real stdout; everything else that writes to fd 1 lands on stderr."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self._out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()
        self.beat = Beat()
        self._stop = threading.Event()
        self._main = threading.main_thread().ident
        self._stack: Stack = ()
        # a cell on N processes: this process only leads the group (its main thread sits in the
        # launcher's monitoring loop, whose stack moves without any training); the ranks' own ticks
        # arrive through keepalive (runners.parallel.launch)
        self.watch_stack = True

    def send(self, event: Event | HeartbeatEvent) -> None:
        with self._lock:
            self._out.write(PREFIX + json.dumps(event) + "\n")
            self._out.flush()

    def emit(self, event: Event) -> None:
        if event["type"] == "eval":
            self.beat.step = event["step"]
        self.alive()
        self.send(event)

    def alive(self, phase: str | None = None) -> None:
        """Keep-alive from the main thread: one unit of work done, or `phase` entered (announced at
        once with a heartbeat, so the sweep knows where a run that stalls next stalled)."""
        self.beat.tick += 1
        if phase and phase != self.beat.phase:
            self.beat.phase = phase
            self.heartbeat()

    def stepped(self, progress: Progress) -> None:
        """After every optimizer step (run_cell's on_step)."""
        self.beat.step, self.beat.loss = progress.step, progress.loss
        self.alive()

    def heartbeat(self) -> None:
        b = self.beat
        self.send(
            {
                "type": "heartbeat",
                "step": b.step,
                "loss": b.loss,
                "tick": b.tick,
                "phase": b.phase,
                "t": time.time(),
            }
        )

    def heartbeat_forever(self) -> None:
        while True:
            stack = stack_signature(self._main) if self.watch_stack else self._stack
            if stack != self._stack:  # the main thread moved since the last heartbeat
                self._stack = stack
                self.beat.tick += 1
            self.heartbeat()
            if self._stop.wait(HEARTBEAT_S):
                return

    def stop(self) -> None:
        self._stop.set()


Stack = tuple[tuple[CodeType, int], ...]


def stack_signature(thread_id: int | None) -> Stack:
    """Where a thread is: (code, last instruction) of every frame on its stack. The same signature at
    two heartbeats means the thread sat in one call in between (or, rarely, came back to the same spot:
    the other ticks cover loops)."""
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    sig = []
    while frame is not None:
        sig.append((frame.f_code, frame.f_lasti))
        frame = frame.f_back
    return tuple(sig)


def read_answer(timeout_s: float = CONTROL_TIMEOUT_S) -> bool:
    """True = continue, False = prune. EOF or no answer within timeout_s = continue."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout_s)
    if not ready:
        return True
    line = sys.stdin.readline()
    return line.strip().lower() != "prune"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.protocol", description="Run one tunewise cell.")
    ap.add_argument("config_json", type=Path, help="file holding RunConfig.to_dict()")
    ap.add_argument(
        "out_dir", type=Path, help="the cell's output folder (result.json, checkpoint/, adapter/)"
    )
    ap.add_argument("--baseline", action="store_true", help="evaluate the untrained base model only")
    ap.add_argument("--control", action="store_true", help="read continue/prune from stdin after each eval")
    args = ap.parse_args(argv)
    offline.apply()  # before anything imports huggingface_hub (runners.offline; TUNEWISE_OFFLINE=0 opts out)
    chan = Channel()
    beat = threading.Thread(target=chan.heartbeat_forever, daemon=True)
    beat.start()
    # heavy imports (torch) after the heartbeat thread is up
    from advisor.config.schema import RunConfig
    from advisor.errors import ConfigError
    from runners.cell import run_cell

    out = args.out_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        try:
            cfg = RunConfig.from_dict(json.loads(args.config_json.read_text()))
        except (OSError, ValueError) as e:  # ConfigError is a ValueError
            reason = "; ".join(e.problems) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
            print(f"tunewise cell failed: {reason}", file=sys.stderr)
            CellResult(status="failed", reason=reason).write(out)
            end: EndEvent = {"type": "end", "status": "failed", "reason": reason}
            chan.send(end)
            return 0
        chan.watch_stack = cfg.gpu.count == 1
        hooks = Hooks(
            control=(lambda _event: read_answer()) if args.control else None,
            emit=chan.emit,
            on_step=chan.stepped,
            keepalive=chan.alive,
        )
        run_cell(cfg, out, hooks, baseline=args.baseline)
    except Exception as e:
        print(
            f"tunewise cell: could not write {out / 'result.json'}: {type(e).__name__}: {e}", file=sys.stderr
        )
        return 2
    finally:
        chan.stop()
    return 0 if (out / "result.json").exists() else 2


if __name__ == "__main__":
    sys.exit(main())

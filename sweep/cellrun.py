"""One runner subprocess: `python -m runners.protocol CONFIG_JSON OUT_DIR [--baseline] [--control]`.

The runner prints protocol lines `@@tunewise {json}` on stdout (start, heartbeat, eval, end); with
`--control` it waits after every eval for one line on stdin, `continue` or `prune`. Its stderr goes to
OUT_DIR/runner.log. The result is OUT_DIR/result.json (written atomically by the runner).

On Linux the child gets SIGKILL when this process dies (PR_SET_PDEATHSIG), so a `kill -9` of the
sweep leaves no orphan training on the card; the rerun resumes the cell from OUT_DIR/checkpoint. The
child leads its own process group (a new session), which the stall watchdog (sweep/watchdog.py) kills
whole when the run stops making progress or passes its cap; the attempt then ends `failed` with the
watchdog's reason. The CPU seconds the child used come from `os.wait4`'s resource usage (what
bench/bench_sweep.py sums).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.config.schema import RunConfig
from advisor.trials.store import read_json, write_json
from sweep.watchdog import Watchdog, kill_group

log = logging.getLogger("tunewise.sweep")
PREFIX = "@@tunewise "


@dataclass
class Outcome:
    result: dict[str, Any]  # result.json, or a `failed` result naming why none was written
    cpu_s: float  # user + system CPU seconds of the runner process
    returncode: int
    events: list[dict[str, Any]]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _remove_leftovers(out_dir: Path) -> None:
    """Temporary files of writes the runner (now gone) never finished — a full disk, a kill: `*.tmp`."""
    for p in sorted(out_dir.rglob("*.tmp"), reverse=True):
        with contextlib.suppress(OSError):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _exit_reason(code: int) -> str:
    """Why a runner ended without result.json, from its exit code (negative: the signal that killed it)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        oom = " (what the kernel's OOM killer sends when memory runs out)" if -code == signal.SIGKILL else ""
        return f"runner killed by {name}{oom} before writing result.json"
    return f"runner exited with code {code} without writing result.json"


def run_runner(
    cfg: RunConfig,
    out_dir: Path,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    control: Callable[[dict[str, Any]], bool] | None = None,
    baseline: bool = False,
    env: dict[str, str] | None = None,
    stall_s: float | None = None,
    timeout_s: float | None = None,
) -> Outcome:
    """Run one cell (or the baseline) to its end; `control(eval_event) -> False` prunes it. A runner
    without progress for `stall_s`, or running longer than `timeout_s` (None = no limit), is killed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / "config.json"
    write_json(config_path, cfg.to_dict())
    cmd = [sys.executable, "-m", "runners.protocol", str(config_path), str(out_dir)]
    if baseline:
        cmd.append("--baseline")
    if control is not None:
        cmd.append("--control")
    events: list[dict[str, Any]] = []
    with open(out_dir / "runner.log", "a") as err:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            bufsize=1,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stdin is not None
        try:
            with Watchdog(proc.pid, stall_s, timeout_s) as dog:
                for line in proc.stdout:
                    if not line.startswith(PREFIX):
                        continue
                    try:
                        ev = json.loads(line[len(PREFIX) :])
                    except ValueError:
                        log.warning("unreadable protocol line from the runner: %s", line.strip()[:200])
                        continue
                    events.append(ev)
                    dog.saw(ev)
                    if on_event is not None:
                        on_event(ev)
                    if ev.get("type") == "eval" and control is not None:
                        answer = "continue" if control(ev) else "prune"
                        dog.moved()  # the runner was waiting for this answer, not stuck
                        try:
                            proc.stdin.write(answer + "\n")
                            proc.stdin.flush()
                        except (BrokenPipeError, OSError):
                            pass
                with contextlib.suppress(BrokenPipeError, OSError):
                    proc.stdin.close()
                _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # the worker is going down: take the runner's group with it
            kill_group(proc.pid)
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    cpu_s = usage.ru_utime + usage.ru_stime
    _remove_leftovers(out_dir)
    ended = any(ev.get("type") == "end" for ev in events)
    doc = read_json(out_dir / "result.json")
    result: dict[str, Any] | None = doc if isinstance(doc, dict) else None
    if dog.reason and not ended:  # killed mid-run: whatever result.json holds is not this run's
        result = {"status": "failed", "reason": dog.reason, "measured": None, "provenance": None}
    elif result is None:
        tail = _log_tail(out_dir / "runner.log")
        result = {
            "status": "failed",
            "reason": _exit_reason(proc.returncode) + (f": {tail}" if tail else ""),
            "measured": None,
            "provenance": None,
        }
    return Outcome(result, cpu_s, proc.returncode, events)

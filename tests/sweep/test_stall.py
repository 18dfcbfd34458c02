"""The stall watchdog, with the real runner on the tiny model. Two ways a run hangs while its worker
lives: a runner stopped mid-training (SIGSTOP: no lines at all) and one whose main thread deadlocks
while its heartbeat thread goes on beating (the tick stands still). Each is killed after
sweep.cell_stall_minutes, its cell recorded `failed` with the stall reason and its Optuna trial FAIL;
the sweep goes on, the third cell completes, and nothing is left running. Two worker processes,
so both stall windows pass at the same time. Plus the pieces: the config
keys' validation, what counts as progress, the runner's stack signature."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from advisor.errors import ConfigError
from runners.protocol import stack_signature
from sweep.claims import driver_url
from sweep.settings import settings_from
from sweep.watchdog import Watchdog
from tests.sweep.conftest import ROOT, base_overrides, env_for, load_records

STALL_MIN = 0.25  # the smallest allowed: three of the runner's 5 s heartbeats
# Loaded by every Python process of the test's sweep (PYTHONPATH): SIGUSR1 parks the receiving
# process's main thread in a wait that never ends — a deadlock — while its other threads run on.
HANG_ON_USR1 = """import signal, threading
signal.signal(signal.SIGUSR1, lambda *_: threading.Event().wait())
"""


def _runners(under: Path) -> dict[int, str]:
    """{pid: cmdline} of every runner process working under `under` (from /proc)."""
    found = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "runners.protocol" in cmd and str(under) in cmd:
            found[int(p.name)] = cmd
    return found


@pytest.mark.slow
def test_hung_runners_are_killed_and_the_sweep_goes_on(tiny_assets, tmp_path):
    d = tmp_path / "sweep"
    args = base_overrides(
        tiny_assets,
        d,
        "matrix=t_stall",
        "data.rows=96",
        "train.epochs=6",
        "sweep.pruner=none",
        f"sweep.cell_stall_minutes={STALL_MIN}",
        "sweep.workers=2",  # worker processes (the limit travels in plan.json); both hangs at once
    )
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(HANG_ON_USR1)
    env = {**env_for(tiny_assets), "PYTHONPATH": str(tmp_path / "site")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "sweep", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    hung: dict[str, tuple[int, int, str]] = {}  # cell_id: (runner pid, step when hung, how)
    try:
        deadline = time.time() + 240
        while len(hung) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            recs = load_records(d) if (d / "trials").exists() else {}
            for cid, rec in recs.items():
                evals = (rec.get("attempts") or [{}])[-1].get("evals") or []
                if cid in hung or rec["status"] != "running" or not evals:
                    continue  # hang it once it has trained and evaluated: mid-training, not at load
                pids = list(_runners(d / "cells" / cid))
                if pids:
                    how = "stopped" if not hung else "deadlocked"
                    os.kill(pids[0], signal.SIGSTOP if how == "stopped" else signal.SIGUSR1)
                    hung[cid] = (pids[0], evals[-1][0], how)
        assert len(hung) == 2, f"hung only {hung} before the sweep ended"
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]

    recs = load_records(d)
    assert len(recs) == 3
    for cid, (pid, step, how) in hung.items():
        rec = recs[cid]
        assert rec["status"] == "failed", (how, rec["reason"])
        reason = rec["reason"]
        assert reason.startswith(
            f"stalled: no progress for {STALL_MIN:g} min (sweep.cell_stall_minutes) at step "
        ), (how, reason)
        assert int(reason.split("at step ")[1].split()[0]) >= step
        assert reason.endswith("(phase train); runner killed")
        (att,) = rec["attempts"]
        assert att["status"] == "failed" and att["reason"] == reason
        assert att["wall_s"] >= STALL_MIN * 60  # killed only after a whole stall window
        assert rec["measured"] is None and not (d / "cells" / cid / "result.json").exists()
        assert not Path(f"/proc/{pid}").exists()  # killed and reaped, not a zombie
    deadlocked = next(cid for cid, h in hung.items() if h[2] == "deadlocked")
    assert recs[deadlocked]["heartbeat"]["t"] > time.time() - 300  # its heartbeats had gone on
    (other,) = [r for c, r in recs.items() if c not in hung]
    assert other["status"] == "complete" and other["measured"]["steps"] == other["measured"]["planned_steps"]
    assert json.loads((d / "trials" / "baseline.json").read_text())["status"] == "complete"

    sweep = json.loads((d / "sweep.json").read_text())
    study = optuna.load_study(
        study_name=sweep["study_name"], storage=driver_url(f"sqlite:///{d / 'study.db'}")
    )
    states = {t.user_attrs["cell_id"]: t.state.name for t in study.trials}
    assert states == {**{c: "FAIL" for c in hung}, other["cell_id"]: "COMPLETE"}
    assert (d / "report.md").read_text().count("stalled: no progress") == 2  # the report says why
    assert _runners(d) == {}  # no runner left behind


def test_stall_keys_are_validated_with_key_value_and_what_is_allowed():
    s = settings_from({"sweep": {}})
    assert (s.cell_stall_minutes, s.cell_timeout_minutes) == (30.0, None)
    s = settings_from({"sweep": {"cell_stall_minutes": None, "cell_timeout_minutes": 1.5}})
    assert s.runner_limits() == {"stall_s": None, "timeout_s": 90.0}
    assert settings_from({"sweep": {"cell_stall_minutes": 0.25}}).runner_limits()["stall_s"] == 15.0
    with pytest.raises(ConfigError) as e:
        settings_from({"sweep": {"cell_stall_minutes": 0.05, "cell_timeout_minutes": 0}})
    msg = str(e.value)
    assert "sweep.cell_stall_minutes=0.05: must be null (no limit) or a number of minutes ≥ 0.25" in msg
    assert "sweep.cell_timeout_minutes=0: must be null (no limit) or a number of minutes > 0" in msg
    for bad in ("soon", True, -1):
        with pytest.raises(ConfigError, match=r"sweep\.cell_stall_minutes="):
            settings_from({"sweep": {"cell_stall_minutes": bad}})


def test_progress_is_a_moving_tick_not_a_heartbeat():
    dog = Watchdog(pid=0, stall_s=10.0, timeout_s=None)
    t0 = dog.last
    dog.saw({"type": "start", "planned_steps": 40})
    dog.saw({"type": "heartbeat", "step": 3, "tick": 7, "phase": "train"})
    first = dog.last
    assert first >= t0
    dog.last = first - 100  # a long time ago…
    dog.saw({"type": "heartbeat", "step": 3, "tick": 7, "phase": "train"})  # …and the tick stood still
    assert dog.why(time.monotonic()) == (
        "stalled: no progress for 0.167 min (sweep.cell_stall_minutes) at step 3 of 40 (phase train); "
        "runner killed"
    )
    dog.saw({"type": "heartbeat", "step": 3, "tick": 8, "phase": "train"})  # the main thread moved
    assert dog.why(time.monotonic()) is None
    dog.last -= 100
    dog.saw({"type": "eval", "step": 4, "fraction": 0.1, "eval_loss": 1.0, "index": 0})
    assert dog.why(time.monotonic()) is None
    capped = Watchdog(pid=0, stall_s=None, timeout_s=60.0)
    capped.started -= 61
    assert capped.why(time.monotonic()).startswith(
        "timed out: still running after 1 min (sweep.cell_timeout_minutes) before the runner reported"
    )


def test_stack_signature_stands_still_while_a_thread_is_blocked():
    blocked, release = threading.Event(), threading.Event()

    def wait() -> None:
        blocked.set()
        release.wait()

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    blocked.wait()
    time.sleep(0.05)
    first = stack_signature(t.ident)
    time.sleep(0.2)
    assert first and stack_signature(t.ident) == first  # blocked in one call: the same place
    release.set()
    t.join()
    assert stack_signature(t.ident) == ()

"""Which failures a rerun of the sweep tries again: those whose cause may have gone away.

A `failed` attempt gets a cause (kept in the record's attempt as `cause`):
- `data`: the dataset could not be read (missing file, bad rows) — fixed by fixing the file;
- `model`: the weights could not be loaded (model.path missing, incomplete, not cached offline);
- `signal`: the runner was killed by a signal — what the kernel's OOM killer does (SIGKILL);
- `crash`: the runner exited without writing its result (a segfault, an abort);
- `died`: the worker running the cell died (its heartbeat stopped);
- `stalled`: the stall watchdog killed a runner that stopped making progress, or ran past its cap;
- `disk`: a write failed for want of space (a checkpoint, the adapter, result.json);
- `error`: anything else the runner reported (a bad module name, NaN loss, a bug): not retried, the
  same config fails the same way.
A cell that failed for a retried cause runs again on the next `tunewise sweep` of its folder (resuming
from its checkpoint when it has one), at most MAX_TRIES attempts per cause and learning-rate trial;
`sweep.rerun=failed` runs every failed cell again whatever the cause. A cell that never started (its
config did not build) is planned again on every run and runs once its config builds. A user's
interrupt (Ctrl-C, SIGTERM) is no failure: the attempt is recorded `interrupted` and the cell stays
pending.
"""

from __future__ import annotations

import re

from advisor.trials.record import Attempt, TrialRecord

CAUSES = ("data", "model", "signal", "crash", "died", "stalled", "disk", "error")
RETRIED = ("data", "model", "signal", "crash", "died", "stalled", "disk")
MAX_TRIES = 3  # attempts per cause (and learning-rate trial) before a failure is final
RESULTS = ("complete", "pruned", "oom")  # what a run can measure: never run again

_DISK = re.compile(
    r"No space left|disk is full|File too large|Disk quota|Errno (28|27|122)\b|file write failed|"
    r"unexpected pos \d+ vs \d+"  # torch.save's writer when a write comes up short
)
_DATA = re.compile(r"\bdata\.(val_)?path\b|^[^\s:]+\.(jsonl|ndjson|json|csv|parquet|arrow):\d+: ")
_MODEL = re.compile(
    r"\bmodel\.path\b|^(OSError|FileNotFoundError|EnvironmentError|LocalEntryNotFoundError|"
    r"HFValidationError|RepositoryNotFoundError|EntryNotFoundError|OfflineModeIsEnabled)\b"
)


def cause_of(status: str, reason: str | None) -> str | None:
    """The cause of a failed (or died) attempt from its status and reason; None for any other status."""
    if status == "died":
        return "died"
    if status != "failed":
        return None
    r = reason or ""
    if r.startswith(("stalled:", "timed out:")):
        return "stalled"
    if r.startswith("runner killed by") or re.match(r"runner exited with code -\d", r):
        return "signal"
    if _DISK.search(r):
        return "disk"
    if r.startswith("runner exited with code"):
        return "crash"
    if _DATA.search(r):
        return "data"
    if _MODEL.search(r):
        return "model"
    return "error"


def cause(a: Attempt) -> str | None:
    return a.cause or cause_of(a.status, a.reason)


def tries(attempts: list[Attempt], lr_index: int | None, why: str) -> int:
    """Attempts of one learning-rate trial that failed for `why`."""
    return sum(1 for a in attempts if a.lr_index == lr_index and cause(a) == why)


def lr_trial_done(attempts: list[Attempt], k: int | None, force: bool = False) -> Attempt | None:
    """The attempt that settles learning-rate trial k of a cell — a result, or a failure that is final
    (not retried, or out of tries) — else None (it runs). `force` (sweep.rerun=failed): failures never
    settle it."""
    mine = [a for a in attempts if a.lr_index == k and a.status in (*RESULTS, "failed", "died")]
    if not mine:
        return None
    last = mine[-1]
    if last.status in RESULTS:
        return last
    why = cause(last)
    if force or (why in RETRIED and tries(attempts, k, why or "") < MAX_TRIES):
        return None
    return last


def retry_reason(rec: TrialRecord, force: bool = False) -> str | None:
    """Why a `failed` cell runs again on this rerun (None: its failure is final). A cell whose config
    did not build (no process started) is the plan's to decide, not this."""
    runs = [
        a for a in rec.attempts if a.started is not None
    ]  # a process started (the baseline's: lr_index None)
    if not runs:
        return None
    for k in dict.fromkeys(a.lr_index for a in runs):
        if lr_trial_done(rec.attempts, k, force) is None:
            last = [a for a in runs if a.lr_index == k][-1]
            why = cause(last)
            if force:
                return f"sweep.rerun=failed (last: {why})"
            return f"{why} (try {tries(rec.attempts, k, why or '') + 1} of at most {MAX_TRIES})"
    return None

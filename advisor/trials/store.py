"""The files of a sweep folder, written atomically and read back as typed records.

Every write goes to a temporary file in the same folder, is flushed to disk and moved over the old
one with `os.replace`, so a crash or a `kill -9` leaves either the previous or the new file, never
half of one. `trials/<cell_id>.json` holds one `TrialRecord`; `trials/baseline.json` the untrained
base model's (cell id `baseline`, no coordinates).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from advisor.trials.record import RecordError, TrialRecord

BASELINE = "baseline"


def now_iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, doc: Any) -> None:
    write_atomic(path, json.dumps(doc, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    """The JSON document at `path`, or None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def record_path(sweep_dir: Path, cell_id: str) -> Path:
    return Path(sweep_dir) / "trials" / f"{cell_id}.json"


def load_record(sweep_dir: Path, cell_id: str) -> TrialRecord | None:
    """The cell's record; None when there is none yet. RecordError when the file holds no record."""
    path = record_path(sweep_dir, cell_id)
    doc = read_json(path)
    return None if doc is None else TrialRecord.from_dict(doc, str(path))


def save_record(sweep_dir: Path, rec: TrialRecord) -> None:
    write_json(record_path(sweep_dir, rec.cell_id), rec.to_dict())


def read_records(sweep_dir: Path) -> tuple[list[TrialRecord], list[str]]:
    """Every cell's record in sweep_dir/trials (sorted by file name, the baseline left out), and one
    line per file that could not be read as a record (a reader decides whether that is fatal)."""
    return read_folder(Path(sweep_dir) / "trials")


def read_folder(folder: Path) -> tuple[list[TrialRecord], list[str]]:
    """`read_records` of a folder of record files."""
    records, problems = [], []
    for path in sorted(Path(folder).glob("*.json")):
        if path.stem == BASELINE:
            continue
        doc = read_json(path)
        if doc is None:
            problems.append(f"{path.name}: not JSON")
            continue
        try:
            records.append(TrialRecord.from_dict(doc, path.name))
        except RecordError as e:
            problems.extend(e.problems)
    return records, problems


def read_baseline(sweep_dir: Path) -> TrialRecord | None:
    """trials/baseline.json, or None when it is missing or unreadable."""
    doc = read_json(Path(sweep_dir) / "trials" / f"{BASELINE}.json")
    try:
        return None if doc is None else TrialRecord.from_dict(doc, f"{BASELINE}.json")
    except RecordError:
        return None

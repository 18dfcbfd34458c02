"""The files of a sweep folder, written atomically and read back as typed records.

Every write goes to a temporary file in the same folder, is flushed to disk and moved over the old
one with `os.replace`, so a crash or a `kill -9` leaves either the previous or the new file, never
half of one; a failed write (a full disk) removes its temporary file. A record file that is
unreadable anyway (truncated by hand, wrong types, a disk error) is rebuilt from the cell's own files
(advisor.trials.repair) when they hold its result, else named by the reader. `trials/<cell_id>.json` holds one `TrialRecord`; `trials/baseline.json` the untrained
base model's (cell id `baseline`, no coordinates).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from advisor.trials.record import RECORD_VERSION, RecordError, TrialRecord

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
    except (OSError, ValueError, RecursionError):
        return None


def _parse(path: Path) -> tuple[TrialRecord | None, str | None]:
    """(the record in `path`, None), (None, None) when there is no file, (None, why) when it holds no
    readable record."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        return None, f"unreadable: {e}"
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        return None, "not JSON" + (" (empty file)" if not text.strip() else f" ({str(e)[:120]})")
    try:
        return TrialRecord.from_dict(doc, path.name), None
    except RecordError as e:
        return None, "; ".join(p.removeprefix(f"{path.name}: ") for p in e.problems)


def _newer(path: Path) -> bool:
    """A record written by a newer tunewise (its version above ours): never rebuilt over."""
    doc = read_json(path)
    v = doc.get("version") if isinstance(doc, dict) else None
    return isinstance(v, int) and not isinstance(v, bool) and v > RECORD_VERSION


def repair_record(sweep_dir: Path, cell_id: str, why: str) -> TrialRecord | None:
    """Rebuild an unreadable trials/<cell_id>.json from cells/<cell_id>/ (advisor.trials.repair) and
    write it back, the unreadable file kept as trials/unreadable/<cell_id>.json.<time>; None when the
    cell's files hold no result (or the file is a newer tunewise's record)."""
    from advisor.trials.repair import rebuild

    path = record_path(sweep_dir, cell_id)
    if _newer(path):
        return None
    rec = rebuild(Path(sweep_dir), cell_id, why)
    if rec is None:
        return None
    try:  # best effort: a read-only copy of a sweep still reports the rebuilt record
        set_aside(path)
        save_record(sweep_dir, rec)
    except OSError:
        pass
    return rec


def set_aside(path: Path) -> Path | None:
    """Move an unreadable record file to trials/unreadable/ (kept for inspection, no longer read)."""
    if not path.exists():
        return None
    dest = path.parent / "unreadable" / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return dest


def record_path(sweep_dir: Path, cell_id: str) -> Path:
    return Path(sweep_dir) / "trials" / f"{cell_id}.json"


def load_record(sweep_dir: Path, cell_id: str) -> TrialRecord | None:
    """The cell's record; None when there is none yet. A file that holds no readable record is
    rebuilt from the cell's own files (repair_record); RecordError naming the file when it cannot be."""
    path = record_path(sweep_dir, cell_id)
    rec, why = _parse(path)
    if rec is not None or why is None:
        return rec
    rebuilt = repair_record(sweep_dir, cell_id, why)
    if rebuilt is None:
        raise RecordError(f"{path}: {why}; cells/{cell_id}/ holds no result to rebuild it from")
    return rebuilt


def save_record(sweep_dir: Path, rec: TrialRecord) -> None:
    write_json(record_path(sweep_dir, rec.cell_id), rec.to_dict())


def read_records(sweep_dir: Path) -> tuple[list[TrialRecord], list[str]]:
    """Every cell's record in sweep_dir/trials (sorted by file name, the baseline left out), and one
    line per file that could not be read as a record (a reader decides whether that is fatal). A file
    that cannot be read is rebuilt from its cell's files when they hold the result (repair_record)."""
    records, problems = [], []
    for path in sorted((Path(sweep_dir) / "trials").glob("*.json")):
        if path.stem == BASELINE:
            continue
        rec, why = _parse(path)
        if rec is None and why is not None:
            rec = repair_record(sweep_dir, path.stem, why)
            if rec is None:
                problems.append(
                    f"trials/{path.name}: {why}; cells/{path.stem}/ holds no result to rebuild it from"
                )
        if rec is not None:
            records.append(rec)
    return records, problems


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
    """trials/baseline.json (rebuilt from cells/baseline/ when unreadable), or None when it is missing
    or cannot be rebuilt."""
    try:
        return load_record(Path(sweep_dir), BASELINE)
    except RecordError:
        return None

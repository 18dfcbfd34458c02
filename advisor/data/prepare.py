"""`tunewise data prepare`: a cleaned, deduplicated, seeded train/validation split and a manifest.

Removed: unreadable rows (malformed, schema, missing, empty, unknown_role), exact duplicates,
near-duplicates and rows whose prompt repeats an earlier prompt with a different answer — the first
occurrence is kept, every later one removed with the line it repeats — and, with data.val_path,
training rows that reappear (exactly or nearly) in the validation file: training is decontaminated,
the yardstick is not (the validation file only loses its own unreadable and duplicate rows, by the
same rules). Fixed: leading/trailing whitespace of every text field.
Kept as they are (reported as warnings): rows longer than train.seq_len, mixed templates or shapes.

Without data.val_path the validation rows are carved from the kept rows with advisor.data.dataset.carve
(data.val_fraction, data.val_rows_max, seed) — the same carving a sweep does. Rows keep their input
shape (field names included) and file order. Outputs go to data.out_dir (default
outputs/data/<input stem>): train.jsonl, val.jsonl, manifest.json, each written to a temporary file
and renamed into place; the input is only read (its sha256 is recorded).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from advisor.config.schema import RunConfig
from advisor.data.check import DROP_REASONS, FileResult, check
from advisor.data.dataset import PROBLEM_KINDS, DataError, carve, hf_shards, parse_row, raw_rows


def sha256(path: str | Path) -> str:
    """sha256 of a file, or of a datasets folder's shards in order."""
    path = Path(path)
    files = hf_shards(path) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _trimmed(obj: dict, kind: str, cfg: RunConfig) -> dict:
    """The row with leading/trailing whitespace removed from every text field the reader uses."""
    out = dict(obj)
    if kind == "chat":
        key = cfg.data.field_name("messages")
        msgs = out[key]
        if isinstance(msgs, str):
            msgs = json.loads(msgs)
        out[key] = [{**m, "content": m["content"].strip()} for m in msgs]
    else:
        for name in ("instruction", "input", "output"):
            key = cfg.data.field_name(name)
            if isinstance(out.get(key), str):
                out[key] = out[key].strip()
    return out


def _removed(result: FileResult, file: str) -> list[dict]:
    s = result.scan
    rows: dict[int, dict] = {}
    for line, k in zip(s.bad_lines.tolist(), s.bad_kinds.tolist(), strict=True):
        entry = rows.setdefault(
            line, {"file": file, "line": line, "reason": PROBLEM_KINDS[k], "problems": []}
        )
        entry["problems"].append(PROBLEM_KINDS[k])
    for i in np.flatnonzero(result.drop).tolist():
        line = int(s.lines[i])
        rows[line] = {
            "file": file,
            "line": line,
            "reason": DROP_REASONS[result.drop[i]],
            "of_line": int(result.ref[i]),
        }
    return [rows[k] for k in sorted(rows)]


def _write_rows(result: FileResult, cfg: RunConfig, sinks: list[Any], dest: np.ndarray) -> list[int]:
    """Stream the file again; write kept readable row k (trimmed) to sinks[dest[k]]. Returns rows per sink."""
    s, written = result.scan, [0] * len(sinks)
    k = 0
    for line, obj, err in raw_rows(Path(s.path)):
        if err:
            continue
        ex, problems = parse_row(obj, line, cfg.data, cfg.data.format)
        if problems or ex is None:
            continue
        if k >= s.rows or s.lines[k] != line:
            raise DataError(f"{s.path}: changed while being prepared (line {line}); run again")
        if result.drop[k] == 0:
            row = _trimmed(obj, ex.kind, cfg)
            sinks[dest[k]].write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            written[dest[k]] += 1
        k += 1
    return written


def _out_dir(cfg: RunConfig) -> Path:
    if cfg.data.out_dir:
        return Path(cfg.data.out_dir)
    stem = Path(cfg.data.path or "data").name.split(".")[0] or "data"
    return Path("outputs") / "data" / stem


def prepare(cfg: RunConfig) -> dict:
    """Write the cleaned split; return the summary document (the manifest without its row list)."""
    doc, results = check(cfg)
    out = _out_dir(cfg)
    targets = {name: out / f"{name}.jsonl" for name in ("train", "val")}
    inputs = [Path(p).resolve() for p in (cfg.data.path, cfg.data.val_path) if p]
    for t in [*targets.values(), out / "manifest.json"]:
        if t.resolve() in inputs:
            raise DataError(
                f"data.out_dir={str(out)!r}: would overwrite the input {t} (choose another data.out_dir)"
            )
    _writable(out)
    assert cfg.data.path is not None  # check() refused a missing path
    hashes = {"train": sha256(cfg.data.path), "val": sha256(cfg.data.val_path) if cfg.data.val_path else None}
    train = results[0]
    kept = np.flatnonzero(train.drop == 0)
    dest = np.zeros(train.scan.rows, dtype=np.int64)
    if cfg.data.val_path is None:
        if len(kept) < 2:
            raise DataError(f"data.path={cfg.data.path!r}: {len(kept)} clean rows — too few to split")
        val_pos, _ = carve(len(kept), cfg.data, cfg.seed)
        dest[kept[val_pos]] = 1
    tmp = {name: t.with_name(t.name + ".tmp") for name, t in targets.items()}
    tmp["manifest"] = out / "manifest.json.tmp"
    try:
        counts = _write_split(results, cfg, tmp, dest)
    except OSError as e:
        _remove(tmp.values())
        raise DataError(f"data.out_dir={str(out)!r}: could not write the split ({_why(e)})") from None
    removed = _removed(train, "train") + (_removed(results[1], "val") if len(results) > 1 else [])
    reasons: dict[str, int] = {}
    for r in removed:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    summary = {
        "command": "prepare",
        "out_dir": str(out),
        "train": {"path": str(targets["train"]), "rows": counts[0]},
        "val": {
            "path": str(targets["val"]),
            "rows": counts[1],
            "source": "data.val_path"
            if cfg.data.val_path
            else f"carved: val_fraction={cfg.data.val_fraction}, val_rows_max={cfg.data.val_rows_max}",
        },  # fmt: skip
        "seed": cfg.seed,
        "inputs": {
            "path": cfg.data.path,
            "sha256": hashes["train"],
            "val_path": cfg.data.val_path,
            "val_sha256": hashes["val"],
            "rows_read": sum(r.scan.read for r in results),
        },  # fmt: skip
        "removed": {"rows": len(removed), "by_reason": reasons, "policy": "first occurrence kept"},
        "fixed": {"stray_whitespace": int(sum(r.scan.stray_ws[r.drop == 0].sum() for r in results))},
        "warnings_kept": {
            c["name"]: c["count"] for c in doc["checks"] if c["severity"] == "warning" and c["count"]
        },
        "input_stats": doc["stats"],
        "near_duplicates": doc["near_duplicates"],
        "manifest": str(out / "manifest.json"),
    }
    try:
        tmp["manifest"].write_text(
            json.dumps({**summary, "removed_rows": removed}, indent=1, ensure_ascii=False), encoding="utf-8"
        )
        for name, t in targets.items():
            os.replace(tmp[name], t)
        os.replace(tmp["manifest"], out / "manifest.json")
    except OSError as e:
        _remove(tmp.values())
        raise DataError(f"data.out_dir={str(out)!r}: could not write the split ({_why(e)})") from None
    return summary


def _why(e: OSError) -> str:
    """An OSError in words, with what to do when the disk is full."""
    full = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return (e.strerror or str(e)) + ("; free some space or choose another data.out_dir" if full else "")


def _remove(paths: Any) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            Path(p).unlink()


def _writable(out: Path) -> None:
    """data.out_dir as a folder this user can write, or DataError saying why not."""
    if out.exists() and not out.is_dir():
        raise DataError(f"data.out_dir={str(out)!r}: is a file, not a folder (choose a folder path)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".tunewise-", dir=out))  # permissions, read-only file systems
    except OSError as e:
        raise DataError(
            f"data.out_dir={str(out)!r}: not writable ({_why(e)}; choose another data.out_dir)"
        ) from None


def _write_split(
    results: list[FileResult], cfg: RunConfig, tmp: dict[str, Path], dest: np.ndarray
) -> list[int]:
    """Kept rows into tmp['train'] / tmp['val'] (the carved or given validation rows)."""
    with open(tmp["train"], "w", encoding="utf-8") as ft, open(tmp["val"], "w", encoding="utf-8") as fv:
        counts = _write_rows(results[0], cfg, [ft, fv], dest)
        if cfg.data.val_path:
            val = results[1]
            counts[1] = _write_rows(val, cfg, [fv], np.zeros(val.scan.rows, dtype=np.int64))[0]
    return counts

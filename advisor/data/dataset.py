"""Torch-free dataset reading and validation, shared by `data check`, `advise data.path=…` and the runner.

Rows are read streaming, one at a time, each with its 1-based line (JSONL, CSV) or row number (JSON,
Parquet, datasets folders); a .json array is parsed whole (use JSONL for big files). Two shapes:
- instruction/response (Alpaca-style `instruction`, optional `input`, `output`; names configurable);
- chat: `messages` = [{"role": system|user|assistant, "content": str}, ...].

`validate(path, …)` reads the whole file and raises one DataError listing every problem with
file:line, so a run fails before any model loads. `split(…)` carves the validation rows once, before
any subsampling, from one seeded order; training rows are a prefix of that order, so every
`data.rows` sees the same validation split and nested training sets.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.config.schema import DataConfig
from advisor.errors import ConfigError

ROLES = ("system", "user", "assistant")
MAX_LISTED = 20  # problems listed per error before "... and N more"


class DataError(ConfigError):
    """Bad data: every problem as 'FILE:LINE: what is wrong'."""


PROBLEM_KINDS = ("malformed", "schema", "missing", "empty", "unknown_role")


class Problem(str):
    """A problem with one row: the message (a plain str, as before) tagged with its `kind`, one of
    PROBLEM_KINDS — malformed (unparseable line/row), schema (wrong shape or type), missing (field
    absent), empty (field empty or whitespace-only), unknown_role (a chat role outside ROLES)."""

    kind: str

    def __new__(cls, message: str, kind: str) -> Problem:
        obj = super().__new__(cls, message)
        obj.kind = kind
        return obj


@dataclass(frozen=True)
class Example:
    """One training example, as read. `messages` is the canonical form for both shapes:
    instruction/response becomes [user: instruction (+ "\\n\\n" + input), assistant: output]."""

    line: int
    kind: str  # "instruction" | "chat"
    messages: tuple[tuple[str, str], ...]

    @property
    def prompt_messages(self) -> tuple[tuple[str, str], ...]:
        """Everything before the last assistant turn (what generation is conditioned on)."""
        return self.messages[:-1]

    @property
    def response(self) -> str:
        return self.messages[-1][1]


def _not_utf8(e: UnicodeDecodeError, data: bytes) -> str:
    """'not UTF-8 text (byte 0xff at column 3)' for a decoding error in one line (or file) of bytes."""
    column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
    return f"not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}; save the file as UTF-8)"


def raw_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line_or_row, parsed_object_or_None, parse_error) for every row of a file, streaming. A file
    that cannot be read as its type says (not UTF-8, not Parquet, nested too deeply) gives one row
    with the error and its line (0 when no line applies), never an exception."""
    suffix = path.suffix.lower()
    if path.is_dir():
        yield from _guarded(_hf_folder_rows(path), "a datasets.save_to_disk folder")
    elif suffix in (".jsonl", ".ndjson"):
        yield from _guarded(_jsonl_rows(path), "a JSONL file")
    elif suffix == ".json":
        yield from _guarded(_json_rows(path), "a JSON file")
    elif suffix == ".csv":
        yield from _guarded(_csv_rows(path), "a CSV file", path)
    elif suffix == ".parquet":
        yield from _guarded(_parquet_rows(path), "a Parquet file")
    else:
        yield (
            0,
            None,
            f"unknown file type {suffix!r} (allowed: .jsonl, .json, .csv, .parquet, a datasets folder)",
        )


def _first_bad_line(path: Path) -> tuple[int, Any, str]:
    """(line, None, message) of the first line of a text file that is not UTF-8."""
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return i, None, _not_utf8(e, raw)
    return 1, None, "not UTF-8 text (save the file as UTF-8)"


def _guarded(
    rows: Iterator[tuple[int, Any, str | None]], what: str, path: Path | None = None
) -> Iterator[tuple[int, Any, str | None]]:
    """The rows of a reader until it fails; then one row saying where and why (a text file named
    .parquet, a CSV that is not UTF-8, a corrupt Arrow shard). Nothing after the failure is read."""
    last = 0
    try:
        for row in rows:
            last = row[0]
            yield row
    except UnicodeDecodeError as e:
        yield _first_bad_line(path) if path is not None else (last + 1, None, f"not UTF-8 text ({e.reason})")
    except (OSError, ValueError, TypeError, NotImplementedError, csv.Error, RecursionError, MemoryError) as e:
        # pyarrow's errors (ArrowInvalid, ArrowIOError, ArrowTypeError, …) derive from these
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        yield last + 1, None, f"not readable as {what} ({first[:300]})"


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield i, None, _not_utf8(e, raw)
                continue
            if not line.strip():
                continue
            try:
                yield i, json.loads(line), None
            except json.JSONDecodeError as e:
                yield i, None, f"malformed JSON ({e.msg} at column {e.pos + 1})"
            except RecursionError:
                yield i, None, "malformed JSON (nested too deeply)"


def _json_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        yield raw.count(b"\n", 0, e.start) + 1, None, _not_utf8(e, raw)
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        yield e.lineno, None, f"malformed JSON ({e.msg})"
        return
    except RecursionError:
        yield 1, None, "malformed JSON (nested too deeply)"
        return
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        yield 1, None, 'a .json dataset must be a list of rows (or {"data": [...]})'
        return
    for i, row in enumerate(data, 1):
        yield i, row, None


def _csv_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        start = 2  # line 1 is the header; a quoted field may span several lines
        for row in reader:
            if None in row:
                yield start, None, f"{len(row[None])} more value(s) than header columns"
            else:
                yield start, row, None
            start = reader.line_num + 1


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    import pyarrow.parquet as pq

    i = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            i += 1
            yield i, row, None


def hf_shards(path: Path) -> list[Path]:
    """Arrow shards of a save_to_disk folder in row order: state.json's `_data_files` order when present;
    a DatasetDict folder (dataset_dict.json) reads its `train` split."""
    if (path / "dataset_dict.json").exists():
        path = path / "train"
    state = path / "state.json"
    if state.exists():
        try:
            files = json.loads(state.read_text(encoding="utf-8")).get("_data_files") or []
            names = [str(f["filename"]) for f in files]
        except (OSError, ValueError, RecursionError, AttributeError, KeyError, TypeError):
            names = []  # an unreadable state.json: the shards in name order
        if names:
            return [path / n for n in names if (path / n).exists()]
    return sorted(path.glob("*.arrow"))


def _hf_folder_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """A `datasets` folder saved with save_to_disk: read its Arrow shards directly (no `datasets` import)."""
    import pyarrow as pa

    shards = hf_shards(path)
    if not shards:
        yield 0, None, "folder holds no .arrow shards (expected a datasets.save_to_disk folder)"
        return
    i = 0
    for shard in shards:
        with pa.memory_map(str(shard)) as source:
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:
                reader = pa.ipc.open_file(source)
            batches = (
                reader
                if hasattr(reader, "__iter__")
                else (reader.get_batch(k) for k in range(reader.num_record_batches))
            )
            for batch in batches:
                for row in batch.to_pylist():
                    i += 1
                    yield i, row, None


def detect_format(obj: Any, cfg: DataConfig) -> str | None:
    """ "chat" or "instruction" by the fields a row has; a null or empty value counts as absent (columnar
    files — CSV, Parquet, datasets — give every row every column)."""
    if not isinstance(obj, dict):
        return None

    def has(name: str) -> bool:
        return obj.get(cfg.field_name(name)) not in (None, "", [])

    if has("messages"):
        return "chat"
    if has("instruction") or has("output"):
        return "instruction"
    if cfg.field_name("messages") in obj and not any(
        cfg.field_name(k) in obj for k in ("instruction", "output")
    ):
        return "chat"  # a chat file's row with an empty `messages`: reported as such
    if cfg.field_name("instruction") in obj or cfg.field_name("output") in obj:
        return "instruction"  # reported as missing/empty fields
    return None


def parse_row(obj: Any, line: int, cfg: DataConfig, fmt: str) -> tuple[Example | None, list[str]]:
    """One row → Example, or the list of problems with it (without the file prefix); each problem is a
    `Problem` (a str tagged with its kind)."""
    if not isinstance(obj, dict):
        return None, [Problem(f"row is {type(obj).__name__}, expected an object", "malformed")]
    kind = fmt if fmt != "auto" else detect_format(obj, cfg)
    if kind is None:
        f = cfg.field_name
        found = ", ".join(map(str, obj)) or "none"
        return None, [
            Problem(
                f"no `{f('messages')}` and no `{f('instruction')}`/`{f('output')}` field (found: {found})",
                "schema",
            )
        ]
    if kind == "chat":
        return _parse_chat(obj, line, cfg)
    problems: list[str] = []
    fi, fin, fo = cfg.field_name("instruction"), cfg.field_name("input"), cfg.field_name("output")
    instr, inp, outp = obj.get(fi), obj.get(fin), obj.get(fo)
    for name, v in ((fi, instr), (fo, outp)):
        if v is None:
            problems.append(Problem(f"missing field `{name}`", "missing"))
        elif not isinstance(v, str):
            problems.append(Problem(f"field `{name}` is {type(v).__name__}, expected text", "schema"))
        elif not v.strip():
            problems.append(Problem(f"field `{name}` is empty", "empty"))
    if inp is not None and not isinstance(inp, str):
        problems.append(Problem(f"field `{fin}` is {type(inp).__name__}, expected text", "schema"))
    if problems:
        return None, problems
    assert isinstance(instr, str) and isinstance(outp, str)
    prompt = instr if not inp or not inp.strip() else f"{instr}\n\n{inp}"
    return Example(line, "instruction", (("user", prompt), ("assistant", outp))), []


def _parse_chat(obj: dict, line: int, cfg: DataConfig) -> tuple[Example | None, list[str]]:
    key = cfg.field_name("messages")
    msgs = obj.get(key)
    if isinstance(msgs, str):
        with contextlib.suppress(json.JSONDecodeError):
            msgs = json.loads(msgs)
    if not isinstance(msgs, list) or not msgs:
        return None, [Problem(f"`{key}` must be a non-empty list of {{role, content}}", "schema")]
    problems: list[str] = []
    out = []
    for j, m in enumerate(msgs):
        if not isinstance(m, dict):
            problems.append(Problem(f"`{key}[{j}]` is not an object", "schema"))
            continue
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            allowed = ", ".join(ROLES)
            problems.append(
                Problem(f"`{key}[{j}].role`={role!r}: unknown role (allowed: {allowed})", "unknown_role")
            )
        if content is None:
            problems.append(Problem(f"`{key}[{j}].content` is missing", "missing"))
        elif not isinstance(content, str):
            problems.append(
                Problem(f"`{key}[{j}].content` is {type(content).__name__}, expected text", "schema")
            )
        elif not content.strip() and role in ("user", "assistant"):
            problems.append(Problem(f"`{key}[{j}].content` is empty ({role} turn)", "empty"))
        out.append((str(role), content if isinstance(content, str) else ""))
    if not problems and out[-1][0] != "assistant":
        problems.append(Problem(f"`{key}` must end with an assistant turn (the response to learn)", "schema"))
    if problems:
        return None, problems
    return Example(line, "chat", tuple(out)), []


SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")


def path_problems(path: str | Path | None, key: str = "data.path") -> list[str]:
    """What is wrong with a dataset path before reading it: missing, unknown type, a folder that is
    not a datasets.save_to_disk folder. Empty when it can be read."""
    if not path:
        return [f"{key}=None: set {key}=FILE (JSONL, JSON, CSV, Parquet or a datasets folder)"]
    p = Path(path)
    allowed = ", ".join(SUFFIXES) + ", a datasets.save_to_disk folder"
    if not p.exists():
        return [f"{key}={str(path)!r}: file not found"]
    if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
        return [f"{key}={str(path)!r}: not readable by this user (permission denied)"]
    if p.is_dir():
        return (
            []
            if hf_shards(p)
            else [f"{key}={str(path)!r}: folder holds no .arrow shards (allowed: {allowed})"]
        )
    if p.suffix.lower() not in SUFFIXES:
        return [f"{key}={str(path)!r}: unknown file type {p.suffix!r} (allowed: {allowed})"]
    return []


def iter_examples(path: str | Path, cfg: DataConfig) -> Iterator[tuple[int, Example | None, list[str]]]:
    """Streaming: (line, example or None, problems) for every row."""
    path = Path(path)
    if not path.exists():
        key = "data.val_path" if cfg.val_path and Path(cfg.val_path) == path else "data.path"
        raise DataError(f"{key}={str(path)!r}: file not found")
    for line, obj, err in raw_rows(path):
        if err:
            yield line, None, [Problem(err, "malformed")]
            continue
        ex, problems = parse_row(obj, line, cfg, cfg.format)
        yield line, ex, problems


def read_examples(path: str | Path, cfg: DataConfig) -> list[Example]:
    """All examples of a file; DataError listing every problem (file:line) if any row is bad."""
    examples: list[Example] = []
    errors: list[str] = []
    for line, ex, problems in iter_examples(path, cfg):
        if problems:
            errors.extend(f"{path}:{line}: {p}" for p in problems)
        elif ex is not None:
            examples.append(ex)
    if errors:
        more = len(errors) - MAX_LISTED
        raise DataError(errors[:MAX_LISTED] + ([f"... and {more} more problems"] if more > 0 else []))
    if not examples:
        raise DataError(f"{path}: no rows")
    return examples


def validate(cfg: DataConfig) -> None:
    """Raise DataError (file:line for each problem) unless data.path (and data.val_path) read cleanly."""
    if not cfg.path:
        raise DataError("data.path=None: a real run needs a dataset file")
    errors: list[str] = []
    for p in (cfg.path, cfg.val_path):
        if p:
            try:
                read_examples(p, cfg)
            except DataError as e:
                errors.extend(e.problems)
    if errors:
        raise DataError(errors)


@dataclass(frozen=True)
class Split:
    train: list[Example]  # the first data.rows of one fixed seeded order
    val: list[Example]
    train_pool: int  # training rows available before the data.rows cap


def carve(n: int, cfg: DataConfig, seed: int) -> tuple[list[int], list[int]]:
    """(validation indices, training indices) of n rows in one seeded order: the first
    max(1, min(val_rows_max, round(n × val_fraction))) indices of the order are the validation rows.
    `split` and `tunewise data prepare` both carve with this, so they agree for the same seed."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = max(1, min(cfg.val_rows_max, round(n * cfg.val_fraction)))
    if n - n_val < 1:
        raise DataError(f"data.path={cfg.path!r}: {n} rows is too few to carve a validation split")
    return order[:n_val], order[n_val:]


def split(cfg: DataConfig, seed: int) -> Split:
    """Seeded split: validation carved once (val_path, or val_fraction capped at val_rows_max),
    before any subsampling; training rows = prefix of one fixed shuffled order, capped at data.rows."""
    assert cfg.path
    rows = read_examples(cfg.path, cfg)
    if cfg.val_path:
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        val = read_examples(cfg.val_path, cfg)
        pool = [rows[i] for i in order]
    else:
        val_idx, train_idx = carve(len(rows), cfg, seed)
        val = [rows[i] for i in val_idx]
        pool = [rows[i] for i in train_idx]
    return Split(train=pool[: cfg.rows], val=val, train_pool=len(pool))

"""Torch-free dataset reading and validation, shared by `data check`, `advise data.path=…` and the runner.

Rows are read streaming, one at a time, each with its 1-based line (JSONL) or row number (other
formats). Two shapes are understood:
- instruction/response (Alpaca-style `instruction`, optional `input`, `output`; names configurable);
- chat: `messages` = [{"role": system|user|assistant, "content": str}, ...].

`validate(path, …)` reads the whole file and raises one DataError listing every problem with
file:line, so a run fails before any model loads. `split(…)` carves the validation rows once, before
any subsampling, from one seeded order; training rows are a prefix of that order, so every
`data.rows` sees the same validation split and nested training sets.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.config import DataConfig
from advisor.errors import ConfigError

ROLES = ("system", "user", "assistant")
MAX_LISTED = 20  # problems listed per error before "... and N more"


class DataError(ConfigError):
    """Bad data: every problem as 'FILE:LINE: what is wrong'."""


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


def _raw_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line_or_row, parsed_object_or_None, parse_error) for every row of a file, streaming."""
    suffix = path.suffix.lower()
    if path.is_dir():
        yield from _hf_folder_rows(path)
    elif suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield i, json.loads(line), None
                except json.JSONDecodeError as e:
                    yield i, None, f"malformed JSON ({e.msg} at column {e.colno})"
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            yield e.lineno, None, f"malformed JSON ({e.msg})"
            return
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            yield 1, None, "a .json dataset must be a list of rows (or {\"data\": [...]})"
            return
        for i, row in enumerate(data, 1):
            yield i, row, None
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            for i, row in enumerate(csv.DictReader(f), 2):  # line 1 is the header
                yield i, row, None
    elif suffix == ".parquet":
        yield from _parquet_rows(path)
    else:
        yield 0, None, f"unknown file type {suffix!r} (allowed: .jsonl, .json, .csv, .parquet, a datasets folder)"


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    import pyarrow.parquet as pq

    i = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            i += 1
            yield i, row, None


def _hf_folder_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """A `datasets` folder saved with save_to_disk: read its Arrow shards directly (no `datasets` import)."""
    import pyarrow as pa

    shards = sorted(path.glob("*.arrow")) or sorted(path.glob("train/*.arrow"))
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
            batches = reader if hasattr(reader, "__iter__") else (reader.get_batch(k) for k in range(reader.num_record_batches))
            for batch in batches:
                for row in batch.to_pylist():
                    i += 1
                    yield i, row, None


def detect_format(obj: Any, cfg: DataConfig) -> str | None:
    if not isinstance(obj, dict):
        return None
    if cfg.field_name("messages") in obj:
        return "chat"
    if cfg.field_name("instruction") in obj or cfg.field_name("output") in obj:
        return "instruction"
    return None


def parse_row(obj: Any, line: int, cfg: DataConfig, fmt: str) -> tuple[Example | None, list[str]]:
    """One row → Example, or the list of problems with it (without the file prefix)."""
    if not isinstance(obj, dict):
        return None, [f"row is {type(obj).__name__}, expected an object"]
    kind = fmt if fmt != "auto" else detect_format(obj, cfg)
    if kind is None:
        f = cfg.field_name
        return None, [f"no `{f('messages')}` and no `{f('instruction')}`/`{f('output')}` field (found: {', '.join(map(str, obj)) or 'none'})"]
    problems: list[str] = []
    if kind == "chat":
        key = cfg.field_name("messages")
        msgs = obj.get(key)
        if isinstance(msgs, str):
            try:
                msgs = json.loads(msgs)
            except json.JSONDecodeError:
                pass
        if not isinstance(msgs, list) or not msgs:
            return None, [f"`{key}` must be a non-empty list of {{role, content}}"]
        out = []
        for j, m in enumerate(msgs):
            if not isinstance(m, dict):
                problems.append(f"`{key}[{j}]` is not an object")
                continue
            role, content = m.get("role"), m.get("content")
            if role not in ROLES:
                problems.append(f"`{key}[{j}].role`={role!r}: unknown role (allowed: {', '.join(ROLES)})")
            if not isinstance(content, str):
                problems.append(f"`{key}[{j}].content` is missing or not text")
            elif not content.strip() and role == "assistant":
                problems.append(f"`{key}[{j}].content` is empty (assistant turn)")
            out.append((str(role), content if isinstance(content, str) else ""))
        if not problems and (not out or out[-1][0] != "assistant"):
            problems.append(f"`{key}` must end with an assistant turn (the response to learn)")
        if problems:
            return None, problems
        return Example(line, "chat", tuple(out)), []
    fi, fin, fo = cfg.field_name("instruction"), cfg.field_name("input"), cfg.field_name("output")
    instr, inp, outp = obj.get(fi), obj.get(fin), obj.get(fo)
    for name, v in ((fi, instr), (fo, outp)):
        if v is None:
            problems.append(f"missing field `{name}`")
        elif not isinstance(v, str):
            problems.append(f"field `{name}` is {type(v).__name__}, expected text")
        elif not v.strip():
            problems.append(f"field `{name}` is empty")
    if inp is not None and not isinstance(inp, str):
        problems.append(f"field `{fin}` is {type(inp).__name__}, expected text")
    if problems:
        return None, problems
    prompt = instr if not inp or not inp.strip() else f"{instr}\n\n{inp}"
    return Example(line, "instruction", (("user", prompt), ("assistant", outp))), []


def iter_examples(path: str | Path, cfg: DataConfig) -> Iterator[tuple[int, Example | None, list[str]]]:
    """Streaming: (line, example or None, problems) for every row."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data.path={str(path)!r}: file not found")
    for line, obj, err in _raw_rows(path):
        if err:
            yield line, None, [err]
            continue
        ex, problems = parse_row(obj, line, cfg, cfg.format)
        yield line, ex, problems


def read_examples(path: str | Path, cfg: DataConfig) -> list[Example]:
    """All examples of a file; DataError listing every problem (file:line) if any row is bad."""
    examples, errors = [], []
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


def split(cfg: DataConfig, seed: int) -> Split:
    """Seeded split: validation carved once (val_path, or val_fraction capped at val_rows_max),
    before any subsampling; training rows = prefix of one fixed shuffled order, capped at data.rows."""
    assert cfg.path
    rows = read_examples(cfg.path, cfg)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    if cfg.val_path:
        val = read_examples(cfg.val_path, cfg)
        pool = [rows[i] for i in order]
    else:
        n_val = max(1, min(cfg.val_rows_max, round(len(rows) * cfg.val_fraction)))
        if len(rows) - n_val < 1:
            raise DataError(f"data.path={cfg.path!r}: {len(rows)} rows is too few to carve a validation split")
        val = [rows[i] for i in order[:n_val]]
        pool = [rows[i] for i in order[n_val:]]
    return Split(train=pool[: cfg.rows], val=val, train_pool=len(pool))

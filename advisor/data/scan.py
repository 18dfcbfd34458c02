"""One streaming pass over a dataset file, keeping a fixed-size digest per row (never the rows).

Per readable row: line (8 bytes), shape and prompt-template style (1 + 1), stray-whitespace flag (1),
three 8-byte hashes — the exact content (messages as read, nothing normalised), the normalised prompt
and the normalised response — the token count (4) and the 128-byte MinHash signature
(advisor.data.neardup): 167 bytes per row. Per unreadable row: its line and problem kind (9 bytes), and
the messages of the first MAX_MESSAGES of them. The columns are allocated once, at an upper bound of
the row count (row_capacity), so they are never copied to grow; searching duplicates adds transient
sort buffers of about 100 bytes per row (bench/bench_datacheck.py measured a peak of 310 bytes per
row, 336 MiB in all, for 1,000,000 rows). `data check` and `data prepare` both start here.
"""

from __future__ import annotations

import hashlib
import json
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advisor.config.schema import RunConfig
from advisor.data import neardup
from advisor.data.dataset import PROBLEM_KINDS, Example, iter_examples
from advisor.data.stats import DataStats, TokenCounter, stats_from_counts

BYTES_PER_ROW = 8 + 1 + 1 + 1 + 3 * 8 + 4 + neardup.SIGNATURE_BYTES
BATCH_ROWS = 512  # rows digested per batch (tokenizer and MinHash work in batches)
MAX_MESSAGES = 10  # problem messages kept per file, for display
SHAPES = ("instruction", "chat")

# Prompt templates written into the text itself (first match wins; "none" = plain text).
TEMPLATES = {
    "alpaca": r"^#{2,3} ?(?:Instruction|Input|Response):",
    "chatml": r"<\|im_start\|>",
    "llama2": r"\[INST\]|<<SYS>>",
    "llama3": r"<\|start_header_id\|>",
    "gemma": r"<start_of_turn>",
    "zephyr": r"<\|(?:user|assistant|system)\|>",
    "human_assistant": r"^(?:Human|Assistant): ",
    "vicuna": r"^(?:USER|ASSISTANT): ",
}
STYLES = ("none", *TEMPLATES)
_MARKERS = (
    "##",
    "<|",
    "[INST]",
    "<<SYS>>",
    "<start_of_turn>",
    "Human: ",
    "Assistant: ",
    "USER: ",
    "ASSISTANT: ",
)
_TEMPLATE = re.compile("|".join(f"(?P<{k}>{v})" for k, v in TEMPLATES.items()), re.MULTILINE)


@dataclass
class Scan:
    """Digests of one file: arrays over its readable rows, plus the unreadable rows' lines and kinds."""

    path: str
    tokenizer: str
    lines: np.ndarray  # int64: line (JSONL/CSV) or row number of each readable row
    shapes: np.ndarray  # uint8: index in SHAPES
    styles: np.ndarray  # uint8: index in STYLES
    stray_ws: np.ndarray  # bool: a field starts or ends with whitespace
    exact: np.ndarray  # uint64
    prompt: np.ndarray  # uint64 (0 = the row has no prompt text)
    response: np.ndarray  # uint64
    tokens: np.ndarray  # uint32
    sig: np.ndarray  # (rows, neardup.MINHASHES) uint8
    bad_lines: np.ndarray  # int64: rows with problems (a row with several problems appears once per kind)
    bad_kinds: np.ndarray  # uint8: index in PROBLEM_KINDS
    messages: list[str] = field(default_factory=list)  # "LINE: problem" for the first MAX_MESSAGES

    @property
    def rows(self) -> int:
        return len(self.lines)

    @property
    def read(self) -> int:
        return self.rows + len(np.unique(self.bad_lines))

    def stats(self, seq_len: int) -> DataStats:
        return stats_from_counts(self.tokens, seq_len, self.tokenizer, len(np.unique(self.bad_lines)))


def _hash(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
    )


def template_style(example: Example) -> int:
    """Index in STYLES of the first prompt template written into the example's text (0 = none)."""
    for _, content in example.messages:
        if not any(marker in content for marker in _MARKERS):
            continue
        m = _TEMPLATE.search(content)
        if m:
            return STYLES.index(m.lastgroup)
    return 0


COLUMNS = {  # name: (dtype, width) of the per-row digest
    "lines": (np.int64, 0),
    "shapes": (np.uint8, 0),
    "styles": (np.uint8, 0),
    "stray_ws": (np.bool_, 0),
    "exact": (np.uint64, 0),
    "prompt": (np.uint64, 0),
    "response": (np.uint64, 0),
    "tokens": (np.uint32, 0),
    "sig": (np.uint8, neardup.MINHASHES),
}


def row_capacity(path: Path) -> int:
    """An upper bound on the rows of a file, cheap to get: its line count (JSONL, CSV), the Parquet
    footer, else bytes / 16. Columns are allocated at this size up front: pages never written cost no
    memory, and the digest is never copied to grow (which would double the peak)."""
    if path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson", ".csv"):
        lines = 1
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                lines += block.count(b"\n")
        return lines
    if path.is_file() and path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (OSError, ValueError):  # not a Parquet file: the reader reports it, row by row
            return 1
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) // 16 + 1


class _Columns:
    """The digest columns, preallocated; grown by copying only if `capacity` was an underestimate."""

    def __init__(self, capacity: int) -> None:
        self.n = 0
        self.arrays: dict[str, np.ndarray] = {
            k: np.empty((capacity, w) if w else capacity, dtype=t) for k, (t, w) in COLUMNS.items()
        }

    def add(self, values: dict[str, Any]) -> None:
        m = len(values["lines"])
        cap = len(self.arrays["lines"])
        if self.n + m > cap:
            new = max(self.n + m, cap + cap // 2)
            for k, a in self.arrays.items():
                grown = np.empty((new, *a.shape[1:]), dtype=a.dtype)
                grown[: self.n] = a[: self.n]
                self.arrays[k] = grown
        for k, v in values.items():
            self.arrays[k][self.n : self.n + m] = v
        self.n += m

    def get(self, name: str) -> np.ndarray:
        return self.arrays[name][: self.n]


def _digest(batch: list[Example], counter: TokenCounter, cols: _Columns) -> None:
    msg_words = [[neardup.words(c) for _, c in e.messages] for e in batch]  # normalised once per message
    prompts = [
        "\n".join(f"{r}: {' '.join(w)}" for (r, _), w in zip(e.prompt_messages, ws[:-1], strict=True))
        for e, ws in zip(batch, msg_words, strict=True)
    ]
    has_prompt = [any(w for w in ws[:-1]) for ws in msg_words]  # rows without prompt text get key 0
    cols.add(
        {
            "lines": [e.line for e in batch],
            "shapes": [SHAPES.index(e.kind) for e in batch],
            "styles": [template_style(e) for e in batch],
            "stray_ws": [any(c != c.strip() for _, c in e.messages) for e in batch],
            "exact": [_hash(json.dumps(e.messages, ensure_ascii=False)) for e in batch],
            "prompt": [_hash(p) if h else 0 for p, h in zip(prompts, has_prompt, strict=True)],
            "response": [_hash(" ".join(ws[-1])) for ws in msg_words],
            "tokens": counter.count(batch),
            "sig": neardup.signatures([[w for m in ws for w in m] for ws in msg_words]),
        }
    )


def scan(path: str, cfg: RunConfig, counter: TokenCounter | None = None) -> Scan:
    """Read `path` once, streaming, and keep BYTES_PER_ROW bytes per readable row."""
    counter = counter or TokenCounter(cfg.model.path)
    cols = _Columns(row_capacity(Path(path)))
    batch: list[Example] = []
    bad_lines = array("q")
    bad_kinds = array("B")
    messages: list[str] = []
    for line, ex, problems in iter_examples(path, cfg.data):
        if problems or ex is None:
            for kind in dict.fromkeys(getattr(p, "kind", "schema") for p in problems):
                bad_lines.append(line)
                bad_kinds.append(PROBLEM_KINDS.index(kind))
            if len(messages) < MAX_MESSAGES:
                messages.append(f"{line}: " + "; ".join(problems))
            continue
        batch.append(ex)
        if len(batch) == BATCH_ROWS:
            _digest(batch, counter, cols)
            batch = []
    if batch:
        _digest(batch, counter, cols)
    return Scan(
        path=str(path),
        tokenizer=counter.name,
        **{name: cols.get(name) for name in COLUMNS},
        bad_lines=np.frombuffer(bad_lines, dtype=np.int64) if bad_lines else np.zeros(0, np.int64),
        bad_kinds=np.frombuffer(bad_kinds, dtype=np.uint8) if bad_kinds else np.zeros(0, np.uint8),
        messages=messages,
    )

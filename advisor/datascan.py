"""One streaming pass over a dataset file, keeping a fixed-size digest per row (never the rows).

Per readable row: line (8 bytes), shape and prompt-template style (1 + 1), stray-whitespace flag (1),
three 8-byte hashes — the exact content (messages as read, nothing normalised), the normalised prompt
and the normalised response — the token count (4) and the 128-byte MinHash signature
(advisor.neardup): 167 bytes per row. Per unreadable row: its line and problem kind (9 bytes), and
the messages of the first MAX_MESSAGES of them. Peak memory is about 300 bytes per row: the digest
plus, while the columns are assembled and the duplicates searched, one more copy of the signature
column at most. `data check` and `data prepare` both start here.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import numpy as np

from advisor import neardup
from advisor.config import RunConfig
from advisor.dataset import PROBLEM_KINDS, Example, iter_examples
from advisor.datastats import DataStats, TokenCounter, stats_from_counts

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


class _Columns:
    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, name: str, values, dtype) -> None:
        self.parts.setdefault(name, []).append(np.asarray(values, dtype=dtype))

    def get(self, name: str, dtype, width: int = 0) -> np.ndarray:
        """One column as an array; its parts are freed at once, so assembling the columns needs at most
        the largest column (the signature) twice, never the whole digest."""
        parts = self.parts.pop(name, None)
        if not parts:
            return np.zeros((0, width) if width else 0, dtype=dtype)
        out = np.concatenate(parts)
        parts.clear()
        return out


def _digest(batch: list[Example], counter: TokenCounter, cols: _Columns) -> None:
    msg_words = [[neardup.words(c) for _, c in e.messages] for e in batch]  # normalised once per message
    cols.add("lines", [e.line for e in batch], np.int64)
    cols.add("shapes", [SHAPES.index(e.kind) for e in batch], np.uint8)
    cols.add("styles", [template_style(e) for e in batch], np.uint8)
    cols.add("stray_ws", [any(c != c.strip() for _, c in e.messages) for e in batch], bool)
    cols.add("exact", [_hash(json.dumps(e.messages, ensure_ascii=False)) for e in batch], np.uint64)
    prompts = [
        "\n".join(f"{r}: {' '.join(w)}" for (r, _), w in zip(e.prompt_messages, ws[:-1], strict=True))
        for e, ws in zip(batch, msg_words, strict=True)
    ]
    # 0 = no prompt text (e.g. assistant-only rows): such rows never "share a prompt"
    has_prompt = [any(w for w in ws[:-1]) for ws in msg_words]
    cols.add("prompt", [_hash(p) if h else 0 for p, h in zip(prompts, has_prompt, strict=True)], np.uint64)
    cols.add("response", [_hash(" ".join(ws[-1])) for ws in msg_words], np.uint64)
    cols.add("tokens", counter.count(batch), np.uint32)
    cols.add("sig", neardup.signatures([[w for m in ws for w in m] for ws in msg_words]), np.uint8)


def scan(path: str, cfg: RunConfig, counter: TokenCounter | None = None) -> Scan:
    """Read `path` once, streaming, and keep BYTES_PER_ROW bytes per readable row."""
    counter = counter or TokenCounter(cfg.model.path)
    cols = _Columns()
    batch: list[Example] = []
    bad_lines: list[int] = []
    bad_kinds: list[int] = []
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
        lines=cols.get("lines", np.int64),
        shapes=cols.get("shapes", np.uint8),
        styles=cols.get("styles", np.uint8),
        stray_ws=cols.get("stray_ws", bool),
        exact=cols.get("exact", np.uint64),
        prompt=cols.get("prompt", np.uint64),
        response=cols.get("response", np.uint64),
        tokens=cols.get("tokens", np.uint32),
        sig=cols.get("sig", np.uint8, neardup.MINHASHES),
        bad_lines=np.asarray(bad_lines, dtype=np.int64),
        bad_kinds=np.asarray(bad_kinds, dtype=np.uint8),
        messages=messages,
    )

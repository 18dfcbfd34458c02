"""Token statistics of a real dataset — one implementation for `data check` and `advise data.path=…`.

Tokens are counted as the runner encodes an example (advisor.data.chattext mirrors runners/data.py):
- `model.path` is a folder with tokenizer.json: its chat template (or, without one, the plain
  "### User:" template with the tokenizer's BOS/EOS), each piece tokenized with `tokenizers`;
- otherwise an estimate: UTF-8 bytes of the plain template's text / 4, rounded up (labelled
  "estimate: bytes/4" everywhere it is shown).
Quantiles are exact: one 4-byte token count is kept per row (no sketch, no reservoir).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from advisor.config.schema import RunConfig
from advisor.data.chattext import ChatTemplate, plain_segments
from advisor.data.dataset import DataError, Example, iter_examples, path_problems

ESTIMATE = "estimate: bytes/4"
BATCH_ROWS = 512  # examples tokenized per call (tokenizers encodes a batch in parallel)


@dataclass(frozen=True)
class DataStats:
    """Token statistics of the readable rows of one dataset file."""

    rows: int  # readable rows (rows with problems are skipped and counted in skipped_rows)
    tokens_mean: float  # tokens per example, untruncated
    tokens_p50: float
    tokens_p95: float
    tokens_max: int
    total_tokens: int  # training tokens per epoch: Σ min(tokens, train.seq_len)
    tokenizer: str  # the tokenizer folder, or "estimate: bytes/4"
    truncated_rows: int  # rows longer than train.seq_len (training truncates them)
    seq_len: int = 0  # train.seq_len the truncation was counted against (tokens)
    tokens_untruncated: int = 0  # Σ tokens, before truncation
    skipped_rows: int = 0  # rows not counted because they could not be read (see `data check`)

    @property
    def estimated(self) -> bool:
        return self.tokenizer == ESTIMATE

    def to_dict(self) -> dict:
        return {**asdict(self), "estimated": self.estimated}


class TokenCounter:
    """Counts tokens of examples as the runner encodes them (advisor.data.chattext), with the model's
    tokenizer when model.path holds one, else estimates them (bytes/4 of the plain template's text)."""

    def __init__(self, model_path: str | None):
        self.tokenizer = None
        self.chat: ChatTemplate | None = None
        self.name = ESTIMATE
        folder = Path(model_path) if model_path else None
        if folder is not None and (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            try:
                self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            except Exception as e:  # the Rust reader raises a plain Exception for any bad file
                raise DataError(
                    f"model.path={model_path!r}: {folder / 'tokenizer.json'} is not a readable tokenizer "
                    f"({str(e)[:200]})"
                ) from None
            self.chat = ChatTemplate(folder)
            self.name = str(folder)

    def segments(self, example: Example) -> list[str]:
        return self.chat.segments(example) if self.chat else plain_segments(example.messages)

    def count(self, examples: list[Example]) -> list[int]:
        """Tokens of each example (untruncated)."""
        if self.tokenizer is None:
            return [math.ceil(len("".join(self.segments(e)).encode("utf-8")) / 4) for e in examples]
        pieces = [self.segments(e) for e in examples]
        flat = [p for ps in pieces for p in ps]
        lengths = [len(enc.ids) for enc in self.tokenizer.encode_batch(flat, add_special_tokens=False)]
        out, i = [], 0
        for ps in pieces:
            out.append(sum(lengths[i : i + len(ps)]))
            i += len(ps)
        return out


def stats_from_counts(tokens: np.ndarray, seq_len: int, tokenizer: str, skipped_rows: int = 0) -> DataStats:
    """DataStats of per-row token counts (exact quantiles, linear interpolation)."""
    if len(tokens) == 0:
        return DataStats(0, 0.0, 0.0, 0.0, 0, 0, tokenizer, 0, seq_len, 0, skipped_rows)
    t = tokens.astype(np.int64)
    return DataStats(
        rows=len(t),
        tokens_mean=round(float(t.mean()), 2),
        tokens_p50=float(np.percentile(t, 50)),
        tokens_p95=float(np.percentile(t, 95)),
        tokens_max=int(t.max()),
        total_tokens=int(np.minimum(t, seq_len).sum()),
        tokenizer=tokenizer,
        truncated_rows=int((t > seq_len).sum()),
        seq_len=seq_len,
        tokens_untruncated=int(t.sum()),
        skipped_rows=skipped_rows,
    )


def _batches(path: str, cfg: RunConfig, skipped: list[int]) -> Iterable[list[Example]]:
    batch: list[Example] = []
    for _, ex, problems in iter_examples(path, cfg.data):
        if problems or ex is None:
            skipped[0] += 1
            continue
        batch.append(ex)
        if len(batch) == BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def dataset_stats(cfg: RunConfig) -> DataStats:
    """Token statistics of data.path (streaming; 4 bytes kept per row) with the model's tokenizer
    when model.path holds one. `tunewise data check` reports the same numbers for the same file."""
    problems = path_problems(cfg.data.path, "data.path")
    if problems:
        raise DataError(problems)
    counter = TokenCounter(cfg.model.path)
    skipped = [0]
    path = cfg.data.path
    assert path is not None
    counts = [np.asarray(counter.count(b), dtype=np.uint32) for b in _batches(path, cfg, skipped)]
    tokens = np.concatenate(counts) if counts else np.zeros(0, dtype=np.uint32)
    if len(tokens) == 0:
        raise DataError(f"data.path={cfg.data.path!r}: no readable rows (run `tunewise data check`)")
    return stats_from_counts(tokens, cfg.train.seq_len, counter.name, skipped[0])

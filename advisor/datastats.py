"""Token statistics of a real dataset — one implementation for `data check` and `advise data.path=…`.

Tokens are counted on the rendered example, the text the model is trained on:
- `model.path` is a folder with tokenizer.json: the example rendered with the chat template of its
  tokenizer_config.json (Jinja, sandboxed, as transformers' apply_chat_template renders it) and
  encoded without extra special tokens (the template adds them); without a chat template, the
  message contents joined by blank lines, encoded with the tokenizer's special tokens;
- otherwise an estimate: UTF-8 bytes of the contents joined by blank lines / 4, rounded up (labelled
  "estimate: bytes/4" everywhere it is shown).
Quantiles are exact: one 4-byte token count is kept per row (no sketch, no reservoir).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from advisor.config import RunConfig
from advisor.dataset import DataError, Example, iter_examples, path_problems

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


def plain_text(example: Example) -> str:
    """The example without a chat template: message contents joined by blank lines."""
    return "\n\n".join(content for _, content in example.messages)


class TokenCounter:
    """Counts tokens of rendered examples with the model's tokenizer, or estimates them (bytes/4)."""

    def __init__(self, model_path: str | None):
        self.tokenizer = None
        self.template = None
        self.name = ESTIMATE
        folder = Path(model_path) if model_path else None
        if folder is not None and (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.template, self.variables = _chat_template(folder)
            self.name = str(folder)

    def render(self, example: Example) -> str:
        if self.template is None:
            return plain_text(example)
        from jinja2 import TemplateError

        messages = [{"role": r, "content": c} for r, c in example.messages]
        try:
            return self.template.render(messages=messages, add_generation_prompt=False, **self.variables)
        except TemplateError as e:
            raise DataError(f"line {example.line}: the chat template of {self.name} failed: {e}") from None

    def count(self, examples: list[Example]) -> list[int]:
        """Tokens of each example, rendered."""
        if self.tokenizer is None:
            return [math.ceil(len(plain_text(e).encode("utf-8")) / 4) for e in examples]
        texts = [self.render(e) for e in examples]
        special = self.template is None
        return [len(enc.ids) for enc in self.tokenizer.encode_batch(texts, add_special_tokens=special)]


def _chat_template(folder: Path):
    """The folder's chat template as a sandboxed Jinja template, and the special-token variables it
    may use. Looked up where transformers keeps it: chat_template.jinja (transformers ≥ 4.50 writes
    it), chat_template.json, then tokenizer_config.json's `chat_template`. (None, {}) when absent."""
    config_path = folder / "tokenizer_config.json"
    conf = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    source = conf.get("chat_template")
    if (folder / "chat_template.json").is_file():
        source = json.loads((folder / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
    if (folder / "chat_template.jinja").is_file():
        source = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(source, list):  # named templates: use the default one
        source = next((t.get("template") for t in source if t.get("name") == "default"), None)
    if not isinstance(source, str):
        return None, {}
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise DataError(f"{folder}: the chat template refused a row: {message}")

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = raise_exception
    variables = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        v = conf.get(key)
        variables[key] = v.get("content") if isinstance(v, dict) else v
    return env.from_string(source), variables


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
    counts = [np.asarray(counter.count(b), dtype=np.uint32) for b in _batches(cfg.data.path, cfg, skipped)]
    tokens = np.concatenate(counts) if counts else np.zeros(0, dtype=np.uint32)
    if len(tokens) == 0:
        raise DataError(f"data.path={cfg.data.path!r}: no readable rows (run `tunewise data check`)")
    return stats_from_counts(tokens, cfg.train.seq_len, counter.name, skipped[0])

"""Examples → token ids with response-only labels, then micro-batches (padded or packed).

Rendering. When the tokenizer has a chat template, each example's `messages` are rendered with it; the
tokens of every assistant turn (the text the template adds between the prompt rendered with
`add_generation_prompt=True` and the conversation including that turn — its content and end-of-turn
marker) carry labels, everything else is -100. Without a chat template this plain template is used
(BOS first when the tokenizer has one):

    ### System:\\n{content}\\n\\n         (system turns)
    ### User:\\n{content}\\n\\n           (user turns)
    ### Assistant:\\n{content}{EOS}\\n\\n   (assistant turns; `{content}{EOS}` is labelled)

Generation for the task metric conditions on the prompt turns followed by the generation prompt
(`### Assistant:\\n` in the plain template).

Sequences longer than `train.seq_len` are truncated (and counted). Batches:
- padded (default): each micro-batch is right-padded to its longest row, with an attention mask;
- packed (`train.packing`): examples are packed first-fit into rows of at most seq_len tokens without
  splitting an example; `position_ids` restart at 0 for every example and no attention mask is passed,
  which transformers (masking_utils.find_packed_sequence_indices, sdpa/eager) turns into per-example
  block-diagonal causal attention — no token attends across an example boundary.
The training stream is deterministic: epoch e visits the rows in a permutation seeded by (seed, e), so
step k always sees the same micro-batches (what resuming relies on).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from advisor.data.dataset import Example
from advisor.errors import ConfigError

IGNORE = -100
PLAIN_HEADERS = {"system": "### System:\n", "user": "### User:\n", "assistant": "### Assistant:\n"}


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def _plain_segments(tok, messages, for_generation: bool) -> list[tuple[str, bool]]:
    segs: list[tuple[str, bool]] = [(tok.bos_token, False)] if tok.bos_token else []
    for role, content in messages:
        segs.append((PLAIN_HEADERS[role], False))
        if role == "assistant":
            segs.append((content + (tok.eos_token or ""), True))
            segs.append(("\n\n", False))
        else:
            segs.append((content + "\n\n", False))
    if for_generation:
        segs.append((PLAIN_HEADERS["assistant"], False))
    return segs


def _chat(messages) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in messages]


def _template_segments(tok, messages) -> list[tuple[str, bool]]:
    """Split the chat-template rendering into (text, is_assistant_turn) pieces."""
    segs: list[tuple[str, bool]] = []
    done = ""
    for i, (role, _) in enumerate(messages):
        if role != "assistant":
            continue
        prompt = tok.apply_chat_template(_chat(messages[:i]), tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(_chat(messages[: i + 1]), tokenize=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ConfigError(
                f"model.path: the tokenizer's chat template does not render conversations incrementally "
                f"(turn {i}); cannot locate the assistant tokens to train on"
            )
        segs.append((prompt[len(done) :], False))
        segs.append((full[len(prompt) :], True))
        done = full
    rest = tok.apply_chat_template(_chat(messages), tokenize=False)
    if rest.startswith(done) and len(rest) > len(done):
        segs.append((rest[len(done) :], False))
    return segs


def prompt_text(tok, example: Example) -> str:
    """What generation is conditioned on: the prompt turns plus the generation prompt."""
    if tok.chat_template:
        return tok.apply_chat_template(
            _chat(example.prompt_messages), tokenize=False, add_generation_prompt=True
        )
    return "".join(t for t, _ in _plain_segments(tok, example.prompt_messages, True))


def encode(tok, example: Example, seq_len: int) -> Encoded:
    """Token ids with labels on assistant tokens only, truncated to seq_len."""
    segs = (
        _template_segments(tok, example.messages)
        if tok.chat_template
        else _plain_segments(tok, example.messages, False)
    )
    ids: list[int] = []
    labels: list[int] = []
    for text, learn in segs:
        if not text:
            continue
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if learn else [IGNORE] * len(piece))
    if labels:
        labels[0] = IGNORE  # the first token of an example is never a target (also across packed boundaries)
    truncated = len(ids) > seq_len
    return Encoded(ids[:seq_len], labels[:seq_len], truncated)


@dataclass
class Row:
    """One training sequence: one example, or several packed ones (lengths of each)."""

    input_ids: list[int]
    labels: list[int]
    lengths: list[int]


def build_rows(encoded: list[Encoded], seq_len: int, packing: bool, seed: int) -> list[Row]:
    if not packing:
        return [Row(e.input_ids, e.labels, [len(e.input_ids)]) for e in encoded if e.input_ids]
    order = list(range(len(encoded)))
    random.Random(seed).shuffle(order)
    bins: list[Row] = []
    room: list[int] = []
    for i in order:
        e = encoded[i]
        n = len(e.input_ids)
        if not n:
            continue
        for b, free in enumerate(room):  # first fit
            if free >= n:
                bins[b].input_ids += e.input_ids
                bins[b].labels += e.labels
                bins[b].lengths.append(n)
                room[b] -= n
                break
        else:
            bins.append(Row(list(e.input_ids), list(e.labels), [n]))
            room.append(seq_len - n)
    return bins


def collate(rows: list[Row], pad_id: int, packed: bool) -> dict[str, torch.Tensor]:
    """Right-pad rows to the longest; packed rows get restarting position_ids and no attention mask."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.input_ids)] = torch.tensor(r.input_ids)
        labels[i, : len(r.labels)] = torch.tensor(r.labels)
    batch = {"input_ids": ids, "labels": labels}
    if packed:
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            at = 0
            for n in [*r.lengths, width - len(r.input_ids)]:  # the padding tail is its own "sequence"
                pos[i, at : at + n] = torch.arange(n)
                at += n
        batch["position_ids"] = pos
    else:
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            mask[i, : len(r.input_ids)] = 1
        batch["attention_mask"] = mask
    return batch


def real_tokens(rows: list[Row]) -> int:
    return sum(len(r.input_ids) for r in rows)


class Stream:
    """The deterministic stream of micro-batches: epoch e = rows in a (seed, e) permutation."""

    def __init__(self, rows: list[Row], micro_batch_size: int, seed: int):
        self.rows, self.micro_batch_size, self.seed = rows, micro_batch_size, seed
        self.per_epoch = math.ceil(len(rows) / micro_batch_size)
        self._order: tuple[int, list[int]] = (-1, [])

    def micro_batch(self, index: int) -> list[Row]:
        epoch, k = divmod(index, self.per_epoch)
        if self._order[0] != epoch:
            order = list(range(len(self.rows)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._order = (epoch, order)
        mb = self.micro_batch_size
        return [self.rows[i] for i in self._order[1][k * mb : (k + 1) * mb]]


def planned_steps(
    n_rows: int, micro_batch_size: int, grad_accum: int, epochs: float, max_steps: int | None
) -> int:
    """train.max_steps, else ceil(epochs × ceil(rows / (micro_batch × grad_accum)))."""
    if max_steps:
        return max_steps
    return max(1, math.ceil(epochs * math.ceil(n_rows / (micro_batch_size * grad_accum))))

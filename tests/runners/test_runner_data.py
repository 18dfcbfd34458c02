"""Rendering, response-only labels, truncation, packing (no cross-example attention), the data stream."""

from __future__ import annotations

import pytest
import torch

from advisor.data.dataset import Example
from runners import data


def _tok(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _ex(prompt: str, response: str) -> Example:
    return Example(1, "instruction", (("user", prompt), ("assistant", response)))


def _labelled_text(tok, enc) -> str:
    return tok.decode([t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != data.IGNORE])


@pytest.mark.parametrize("which", ["tiny_plain", "tiny_chat"])
def test_labels_cover_only_the_response(which, request):
    folder, _ = request.getfixturevalue(which)
    tok = _tok(folder)
    enc = data.encode(tok, _ex("What colour is item3?", "The colour of item3 is gold."), seq_len=256)
    end = "<|im_end|>\n" if tok.chat_template else "</s>"
    assert _labelled_text(tok, enc) == "The colour of item3 is gold." + end
    assert not enc.truncated
    if not tok.chat_template:  # the documented plain template
        assert tok.decode(enc.input_ids).startswith("<s>### User:\nWhat colour is item3?\n\n### Assistant:\n")


def test_chat_labels_every_assistant_turn(tiny_chat):
    tok = _tok(tiny_chat[0])
    ex = Example(
        1,
        "chat",
        (
            ("system", "Be brief."),
            ("user", "item1?"),
            ("assistant", "red"),
            ("user", "item2?"),
            ("assistant", "blue"),
        ),
    )
    enc = data.encode(tok, ex, seq_len=256)
    assert _labelled_text(tok, enc) == "red<|im_end|>\nblue<|im_end|>\n"
    assert data.prompt_text(tok, ex).endswith("item2?<|im_end|>\n<|im_start|>assistant\n")


def test_truncation_is_counted(tiny_plain):
    tok = _tok(tiny_plain[0])
    enc = data.encode(tok, _ex("What colour is item3? " * 20, "gold"), seq_len=16)
    assert enc.truncated and len(enc.input_ids) == 16 == len(enc.labels)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_row_logits_equal_separate_examples(tiny_plain, attention):
    from transformers import AutoModelForCausalLM

    folder, _ = tiny_plain
    tok = _tok(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attention).eval()
    exs = [
        _ex("What colour is item1?", "The colour of item1 is red."),
        _ex("item7?", "navy"),
        _ex("What colour is item11 today?", "The colour of item11 is sand."),
    ]
    enc = [data.encode(tok, e, 240) for e in exs]
    rows = data.build_rows(enc, seq_len=240, packing=True, seed=0)
    assert len(rows) == 1 and sorted(rows[0].lengths) == sorted(len(e.input_ids) for e in enc)
    batch = data.collate(rows + [data.Row([5, 6, 7], [-100, 6, 7], [3])], tok.pad_token_id, packed=True)
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
        at = 0
        for n in rows[0].lengths:
            alone = model(input_ids=torch.tensor([rows[0].input_ids[at : at + n]]), use_cache=False).logits
            torch.testing.assert_close(packed[0, at : at + n], alone[0], atol=1e-5, rtol=1e-4)
            at += n
    # the same row without restarting positions would attend across examples (the check can fail)
    with torch.no_grad():
        naive = model(input_ids=batch["input_ids"][:1], use_cache=False).logits
    assert (naive[0, rows[0].lengths[0] :] - packed[0, rows[0].lengths[0] : at]).abs().max() > 1e-3


def test_padded_batches_mask_padding_and_stream_is_deterministic():
    rows = [data.Row(list(range(1, n + 1)), [-100] + list(range(2, n + 1)), [n]) for n in (3, 5, 2, 4, 6)]
    b = data.collate(rows[:2], pad_id=0, packed=False)
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert b["labels"][0, 3:].tolist() == [-100, -100]
    s1, s2 = data.Stream(rows, 2, seed=3), data.Stream(rows, 2, seed=3)
    seq = [[r.lengths[0] for r in s1.micro_batch(i)] for i in range(9)]
    assert seq == [[r.lengths[0] for r in s2.micro_batch(i)] for i in reversed(range(9))][::-1]
    epoch0 = sorted(n for batch in seq[:3] for n in batch)
    assert epoch0 == [2, 3, 4, 5, 6]  # every row once per epoch
    assert data.planned_steps(10, 2, 2, 3, None) == 9 and data.planned_steps(10, 2, 2, 3, 4) == 4

"""Task metrics on the validation split, behind a plain registry (`train.metric`).

`exact_match`: greedy generation (at most `train.max_new_tokens` new tokens) for the first
`train.metric_rows` validation rows, conditioned on the prompt turns (runners.data.prompt_text); a row
scores 1 when the generated text, stripped, equals the reference response stripped. With the plain
template the generation is cut at the next `### ` header. When every scored reference is a JSON object
(the demo's routing task: category, size, weekend), `Metric.fields` adds each key's accuracy: the share
of rows whose generated text parses as a JSON object holding that key with the reference's value —
partial learning that exact match cannot show.
`none`: no task metric (null in the record).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from advisor.data.dataset import Example
from runners.data import prompt_text
from runners.result import Metric

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from runners.model import Model

GEN_BATCH = 32  # prompts generated together (left-padded): on a CPU, 32 rows take half the time of 4 × 8


def _generate(
    model: Model, tok: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int, device: torch.device
) -> list[str]:
    out: list[str] = []
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        for i in range(0, len(prompts), GEN_BATCH):
            enc = tok(prompts[i : i + GEN_BATCH], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.no_grad():
                gen = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                    use_cache=True,
                )
            new = gen[:, enc["input_ids"].shape[1] :]
            out.extend(tok.batch_decode(new, skip_special_tokens=True))
    finally:
        tok.padding_side = side
    return out


def exact_match(
    model: Model,
    tok: PreTrainedTokenizerBase,
    val: list[Example],
    max_new_tokens: int,
    rows: int | None,
    device: torch.device,
) -> Metric:
    chosen = val[:rows] if rows else val
    texts = _generate(model, tok, [prompt_text(tok, e) for e in chosen], max_new_tokens, device)
    if not tok.chat_template:
        texts = [t.split("### ")[0] for t in texts]
    hits = sum(t.strip() == e.response.strip() for t, e in zip(texts, chosen, strict=True))
    return Metric(
        name="exact_match",
        value=hits / len(chosen),
        rows=len(chosen),
        fields=field_accuracy(texts, [e.response for e in chosen]),
    )


def _json_object(text: str) -> dict[str, object] | None:
    """The first JSON object in `text` (anything after it ignored), or None."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def field_accuracy(generated: list[str], references: list[str]) -> dict[str, float] | None:
    """Per key of the references' JSON objects, the share of rows whose generated object has the same
    value for it; None unless every reference is a non-empty JSON object."""
    refs = [_json_object(r) for r in references]
    if not refs or any(not r for r in refs):
        return None
    keys = list(dict.fromkeys(k for r in refs if r for k in r))
    hits = dict.fromkeys(keys, 0)
    for text, ref in zip(generated, refs, strict=True):
        got = _json_object(text) or {}
        for k in keys:
            if ref is not None and k in ref and k in got and got[k] == ref[k]:
                hits[k] += 1
    return {k: round(v / len(refs), 4) for k, v in hits.items()}


MetricFn = Callable[
    ["Model", "PreTrainedTokenizerBase", list[Example], int, int | None, torch.device], Metric
]
METRICS: dict[str, MetricFn | None] = {"exact_match": exact_match, "none": None}


def task_metric(
    name: str,
    model: Model,
    tok: PreTrainedTokenizerBase,
    val: list[Example],
    max_new_tokens: int,
    rows: int | None,
    device: torch.device,
) -> Metric | None:
    fn = METRICS[name]
    if fn is None or not val:
        return None
    was_training = model.training
    model.eval()
    try:
        return fn(model, tok, val, max_new_tokens, rows, device)
    finally:
        model.train(was_training)

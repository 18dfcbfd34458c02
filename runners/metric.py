"""Task metrics on the validation split, behind a plain registry (`train.metric`).

`exact_match`: greedy generation (at most `train.max_new_tokens` new tokens) for the first
`train.metric_rows` validation rows, conditioned on the prompt turns (runners.data.prompt_text); a row
scores 1 when the generated text, stripped, equals the reference response stripped. With the plain
template the generation is cut at the next `### ` header.
`none`: no task metric (null in the record).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from advisor.data.dataset import Example
from runners.data import prompt_text
from runners.result import Metric

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from runners.model import Model

GEN_BATCH = 8  # prompts generated together (left-padded)


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
    return Metric(name="exact_match", value=hits / len(chosen), rows=len(chosen))


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

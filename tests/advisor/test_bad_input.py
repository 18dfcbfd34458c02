"""Bad input to `tunewise advise` exits non-zero with one message listing every problem: the key, the
value and what is allowed — never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def advise(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweep.cli", "advise", *args], capture_output=True, text=True, cwd=ROOT
    )


CASES = {
    "unknown model": (["model=llama-9000"], ["model='llama-9000'", "allowed:", "llama-3.1-8b"]),
    "unknown gpu": (["gpu=tpu-v5"], ["gpu='tpu-v5'", "allowed:", "a100-80gb", "h100-sxm"]),
    "unknown method": (["method=dora"], ["method='dora'", "allowed:", "full", "lora", "qlora"]),
    "rank zero": (["method.r=0"], ["method.r=0", "positive integer"]),
    "negative rank": (["method=qlora", "method.r=-8"], ["method.r=-8", "positive integer"]),
    "seq_len zero": (["train.seq_len=0"], ["train.seq_len=0", "positive integer"]),
    "negative budget": (["budget.usd=-100"], ["budget.usd=-100", "non-negative"]),
    "negative hours": (["budget.hours=-2"], ["budget.hours=-2", "non-negative"]),
    "heads do not divide hidden": (
        ["model=llama-3.1-8b", "model.num_attention_heads=7"],
        ["model.num_attention_heads=7", "hidden_size=4096"],
    ),
    "qlora without bitsandbytes": (
        ["gpu=mi300x", "method=qlora"],
        ["method='qlora'", "mi300x", "allowed:", "a100-80gb"],
    ),
    "unknown parallel": (["gpu.count=2", "parallel=tp"], ["parallel='tp'", "ddp", "zero3"]),
    "not a boolean": (
        ["train.gradient_checkpointing=maybe"],
        ["train.gradient_checkpointing='maybe'", "true or false"],
    ),
    "not a number": (["data.avg_tokens=many"], ["data.avg_tokens='many'", "must be a number"]),
    "added key": (["+train.warmup_steps=10"], ["train.warmup_steps=10", "unknown key", "warmup_ratio"]),
    "unknown price provider": (["price.provider=nobody"], ["price.provider='nobody'", "Lambda"]),
    "unknown data format": (["data.format=xml"], ["data.format='xml'", "instruction", "chat"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_message(case):
    args, needles = CASES[case]
    out = advise(*args)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert "bad input" in out.stderr
    for n in needles:
        assert n in out.stderr, (n, out.stderr)


def test_several_problems_listed_at_once():
    out = advise(
        "method=qlora",
        "gpu=mi300x",
        "method.r=0",
        "train.seq_len=0",
        "budget.usd=-1",
        "model.num_attention_heads=7",
        "format=json",
    )
    assert out.returncode != 0 and out.stdout == ""
    assert "Traceback" not in out.stderr
    problems = [line for line in out.stderr.splitlines() if line.lstrip().startswith("- ")]
    for key in (
        "method.r=0",
        "train.seq_len=0",
        "budget.usd=-1",
        "model.num_attention_heads=7",
        "method='qlora'",
    ):
        assert sum(key in p for p in problems) == 1, (key, out.stderr)


def test_unknown_names_together():
    out = advise("model=nope", "gpu=nope", "method=nope")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    for key in ("model='nope'", "gpu='nope'", "method='nope'"):
        assert key in out.stderr

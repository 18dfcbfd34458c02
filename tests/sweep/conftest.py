"""Shared, session-scoped assets for the sweep tests: a real tiny Llama (from_config + save_pretrained,
so the runner's from_pretrained path runs offline), a BPE tokenizer trained here with `tokenizers`,
a small instruction dataset, and a conf/ copy with the test matrices (TUNEWISE_CONF points at it).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MATRICES = {
    # 3 × 2 × 2 (full collapses r): 2 + 4 + 4 = 10 cells
    "t_method_rank_size": {
        "axes": {"method": ["full", "lora", "qlora"], "method.r": [2, 4], "data.rows": [24, 48]},
        "exclude": [],
    },
    # 12 cells of LoRA for the concurrency tests
    "t_grid12": {
        "axes": {"method.r": [2, 4, 8], "method.dropout": [0.0, 0.1], "data.rows": [16, 24]},
        "exclude": [],
    },
    # learning rates far too small / too large lose to the sensible ones
    "t_lr": {"axes": {"train.lr": [3e-3, 2e-3, 1e-9, 4e-3, 1e-8, 2e-9]}, "exclude": []},
    "t_small": {"axes": {"method": ["full", "lora"], "data.rows": [24]}, "exclude": []},
    # infeasible (no memory), over budget (the most expensive) and failing (no such module) cells
    "t_skip": {
        "axes": {
            "method": ["full", "lora"],
            "gpu.usable_mib": [60000, 1],
            "method.target_modules": ["all-linear", ["nope_proj"]],
        },
        "exclude": [],
    },
    # three cells with enough steps to be killed mid-cell
    "t_kill": {"axes": {"method.r": [2, 4, 8]}, "exclude": []},
    # three cells: one stopped mid-training, one deadlocked, one normal (the stall watchdog)
    "t_stall": {"axes": {"method.r": [2, 4, 8]}, "exclude": []},
    # rows beyond the 108 training rows of the 120-row file (12 validation rows): one cell
    "t_rows": {"axes": {"data.rows": [24, 200, 500]}, "exclude": []},
    # cells on 2 processes (gpu.count=2 from the command line): every method under FSDP2 and DDP
    "t_multi": {"axes": {"method": ["full", "lora", "qlora"], "parallel": ["fsdp", "ddp"]}, "exclude": []},
    # their 1-process twins at the same global batch (gpu.count=1, grad_accum=2)
    "t_multi_ref": {"axes": {"method": ["full", "lora", "qlora"]}, "exclude": []},
    # three 2-process cells: one finishes, one loses a rank to kill -9, one has a rank raise
    "t_fault": {"axes": {"method.r": [2, 4, 8]}, "exclude": []},
    # 1- and 2-device cells on a worker with 4 device slots
    "t_slots": {"axes": {"gpu.count": [2, 1], "method.r": [2, 4, 8]}, "exclude": []},
    # issue 13's case: the exclusion also drops full at 24 rows (it matches before rank collapses)
    "t_exclude": {
        "axes": {"method": ["full", "lora"], "method.r": [8], "data.rows": [24, 48]},
        "exclude": [{"method.r": 8, "data.rows": 24}],
    },
}


def _texts(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = ["red", "blue", "green", "apple", "stone", "river", "cloud", "seven", "nine", "fast", "slow"]
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        w = rng.choice(words)
        rows.append({"instruction": f"add {a} and {b} then say {w}", "input": "", "output": f"{a + b} {w}"})
    return rows


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> dict[str, Path]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    base = tmp_path_factory.mktemp("tiny")
    rows = _texts(120, 0)
    data = base / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([f"{r['instruction']} {r['output']}" for r in rows] * 3, trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    model_dir = base / "model"
    fast.save_pretrained(model_dir)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    conf = base / "conf"
    shutil.copytree(ROOT / "conf", conf)
    import yaml

    for name, m in MATRICES.items():
        (conf / "matrix" / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **m}))
    return {"model": model_dir, "data": data, "conf": conf, "root": base}


def base_overrides(assets: dict[str, Path], sweep_dir: Path, *extra: str) -> list[str]:
    """A fast CPU cell: 2-layer Llama, 64-token sequences, a handful of steps, 4 evals, no generation."""
    return [
        f"model.path={assets['model']}",
        f"model.config_path={assets['model']}",
        f"data.path={assets['data']}",
        "data.val_rows_max=12",
        "gpu=cpu",  # method: lora, conf/config.yaml's default (an override of it would pin a method axis)
        "train.seq_len=64",
        "train.micro_batch_size=4",
        "train.grad_accum=1",
        "train.epochs=1",
        "train.eval_points=4",
        "train.metric=none",
        "train.precision=fp32",
        "train.gradient_checkpointing=false",
        "sweep.yes=true",
        f"sweep.dir={sweep_dir}",
        *extra,
    ]


def env_for(assets: dict[str, Path]) -> dict[str, str]:
    env = dict(os.environ)
    env["TUNEWISE_CONF"] = str(assets["conf"])
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["OMP_NUM_THREADS"] = "1"
    return env


def tunewise(
    assets: dict[str, Path], args: list[str], timeout_s: float = 600, **kw
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweep.cli", "sweep", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env_for(assets),
        timeout=timeout_s,
        **kw,
    )


def load_records(sweep_dir: Path) -> dict[str, dict]:
    return {
        p.stem: json.loads(p.read_text())
        for p in (sweep_dir / "trials").glob("*.json")
        if p.stem != "baseline"
    }

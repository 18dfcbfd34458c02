"""Tiny real models for runner tests: built with from_config + save_pretrained into a temp folder (so
the real from_pretrained path runs offline), with a byte-level BPE tokenizer trained by `tokenizers`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from advisor.config.schema import from_names

KEYS = [f"item{k}" for k in range(12)]
VALUES = ["red", "green", "blue", "gold", "pink", "gray", "teal", "navy", "lime", "plum", "rust", "sand"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ARCH = {
    "architecture": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "tie_word_embeddings": False,
    "max_position_embeddings": 256,
    "total_params": None,
}


def rows(n: int, seed: int = 0) -> list[dict]:
    """A learnable dataset: the colour of each item is fixed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randrange(len(KEYS))
        out.append(
            {
                "instruction": f"What colour is {KEYS[k]}?",
                "output": f"The colour of {KEYS[k]} is {VALUES[k]}.",
            }
        )
    return out


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items))
    return path


def build_model_dir(
    folder: Path, chat: bool, hidden_size: int = 64, intermediate_size: int = 128, layers: int = 2
) -> tuple[Path, int]:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = [f"{r['instruction']} {r['output']}" for r in rows(200)] + [
        "### System: User: Assistant: user assistant"
    ]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="<|im_end|>" if chat else "</s>"
    )
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    vocab = tk.get_vocab_size()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=intermediate_size,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    return folder, vocab


@pytest.fixture(scope="session")
def tiny_plain(tmp_path_factory) -> tuple[Path, int]:
    return build_model_dir(tmp_path_factory.mktemp("tiny-plain"), chat=False)


@pytest.fixture(scope="session")
def tiny_chat(tmp_path_factory) -> tuple[Path, int]:
    return build_model_dir(tmp_path_factory.mktemp("tiny-chat"), chat=True)


@pytest.fixture(scope="session")
def learn_data(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "colours.jsonl", rows(240))


def make_cfg(
    model_dir: Path, vocab: int, data_path: Path, method: str = "lora", train=None, lora=None, data=None
):
    t = {
        "micro_batch_size": 8,
        "grad_accum": 1,
        "seq_len": 64,
        "max_steps": 30,
        "warmup_ratio": 0.1,
        "gradient_checkpointing": False,
        "precision": "fp32",
        "metric_rows": 8,
        "max_new_tokens": 4,
        "eval_points": 3,
    }
    t.update(train or {})
    lr = {"r": 8, "alpha": 16, "dropout": 0.0}
    lr.update(lora or {})
    return from_names(
        "demo-base",
        method,
        "cpu",
        arch={**ARCH, "name": "tiny", "vocab_size": vocab, "path": str(model_dir)},
        train=t,
        lora=lr,
        data={"path": str(data_path), "val_fraction": 0.1, **(data or {})},
    )

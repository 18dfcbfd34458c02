"""Build the demo's small *pretrained* base: a BPE tokenizer and a Llama-architecture model trained
from scratch on this machine, on text that runners.demo.text generates.

The result is an ordinary Hugging Face folder (config.json, model.safetensors, generation_config.json,
tokenizer.json, tokenizer_config.json with a chat template), loaded later with the real
`from_pretrained` path like any downloaded model. The pretraining is plain next-token prediction on
packed blocks of documents separated by `<|endoftext|>`; the held-out perplexity is measured on
documents drawn from a different seed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from runners.demo import text as demo_text
from runners.demo.spec import BaseSpec

# The chat template the base's tokenizer carries (the same format as demo_text.chat_text).
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>\n{{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] }}<|end|>\n"
    "{% else %}{{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_tokenizer(spec: BaseSpec) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the pretraining documents and the task's words."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(demo_text.SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(demo_text.corpus(spec.train_docs, spec.seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=demo_text.END,
        pad_token=demo_text.EOS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=spec.max_position_embeddings,
    )


def _blocks(tokenizer: PreTrainedTokenizerFast, docs: list[str], block_len: int) -> torch.Tensor:
    """Documents joined by <|endoftext|> and cut into [n_blocks, block_len] token ids."""
    sep = tokenizer.convert_tokens_to_ids(demo_text.EOS)
    if not isinstance(sep, int):  # one token in, one id out
        raise TypeError(f"{demo_text.EOS!r} is not one token of the demo tokenizer")
    ids: list[int] = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(sep)
    n = len(ids) // block_len
    return torch.tensor(ids[: n * block_len], dtype=torch.long).view(n, block_len)


def model_config(spec: BaseSpec, eos_token_id: int, pad_token_id: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


@torch.no_grad()
def perplexity(model: LlamaForCausalLM, blocks: torch.Tensor, batch_size: int = 32) -> float:
    """exp(mean next-token loss) over the blocks (every predicted token weighs the same)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        x = blocks[i : i + batch_size]
        loss = model(input_ids=x, labels=x).loss
        n = x.numel() - len(x)
        total += float(loss) * n
        count += n
    return math.exp(total / count)


def pretrain(model: LlamaForCausalLM, blocks: torch.Tensor, spec: BaseSpec, log=print) -> list[float]:
    """Next-token pretraining; returns the loss per step."""
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        progress = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses, order, pos = [], torch.randperm(len(blocks), generator=gen), 0
    for step in range(spec.steps):
        if pos + spec.batch_size > len(order):
            order, pos = torch.randperm(len(blocks), generator=gen), 0
        x = blocks[order[pos : pos + spec.batch_size]]
        pos += spec.batch_size
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec.autocast_bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == spec.steps - 1:
            log(f"  pretrain step {step + 1}/{spec.steps}: loss {losses[-1]:.3f}")
    return losses


def build_base(out_dir: str | Path, spec: BaseSpec = BaseSpec(), stamp: dict | None = None, log=None) -> dict:
    """Train the tokenizer and the model, save both as one HF folder at out_dir (atomically: built
    in a sibling temp folder, then renamed). Returns the build facts (also written to tunewise_demo.json)."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    out_dir = Path(out_dir)
    t0, cpu0 = time.perf_counter(), time.process_time()
    torch.manual_seed(spec.seed)
    tokenizer = train_tokenizer(spec)
    t_tok = time.perf_counter() - t0
    train_blocks = _blocks(tokenizer, list(demo_text.corpus(spec.train_docs, spec.seed)), spec.block_len)
    held_blocks = _blocks(tokenizer, list(demo_text.corpus(spec.heldout_docs, spec.seed + 1)), spec.block_len)
    model = LlamaForCausalLM(model_config(spec, tokenizer.eos_token_id, tokenizer.pad_token_id))
    n_params = model.num_parameters()
    log(
        f"demo base: {n_params:,} parameters, vocabulary {spec.vocab_size}, "
        f"{train_blocks.numel():,} pretraining tokens; {spec.steps} steps of {spec.batch_size}×{spec.block_len} tokens"
    )
    ppl_before = perplexity(model, held_blocks)
    losses = pretrain(model, train_blocks, spec, log=log)
    ppl = perplexity(model, held_blocks)
    facts = {
        **(stamp or {}),
        "spec": asdict(spec),
        "total_params": n_params,
        "heldout_perplexity": round(ppl, 3),
        "heldout_perplexity_untrained": round(ppl_before, 1),
        "heldout_tokens": held_blocks.numel(),
        "pretrain_tokens_seen": spec.steps * spec.batch_size * spec.block_len,
        "pretrain_unique_tokens": train_blocks.numel(),
        "final_train_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
        "tokenizer_s": round(t_tok, 1),
        "build_s": round(time.perf_counter() - t0, 1),
        "build_cpu_s": round(
            time.process_time() - cpu0, 1
        ),  # CPU seconds, all threads (less sensitive to a busy machine)
        "torch_threads": torch.get_num_threads(),
    }
    log(
        f"demo base: held-out perplexity {ppl:.2f} (untrained {ppl_before:.0f}, vocabulary {spec.vocab_size}); "
        f"built in {facts['build_s']:.0f} s"
    )
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "tunewise_demo.json").write_text(json.dumps(facts, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out_dir)
    return facts

"""The runner's training speed beside a plain transformers `Trainer`, measured in one run.

Same model (a small Llama built with from_config and saved locally), same training examples (the
runner's split and tokenization, response-only labels), same micro-batch, same steps, same optimizer
(torch AdamW, no weight decay), fp32 on CPU. The dataset has varied lengths (VARIED_WORDS), so padding
matters. Printed: tokens/s over non-padding trained tokens, excluding the first WARMUP_STEPS steps, for
- Trainer: per-batch dynamic padding (DataCollatorForSeq2Seq), its default sampler;
- runner, padded: runners.cell.run_cell with train.packing=false (as users run it: memory tracking on);
- runner, packed: train.packing=true (boundary-respecting packing up to seq_len);
- runner, padded, no live-bytes tracking: the second row with the CPU TorchDispatchMode off (the runner
  already leaves tracked steps out of tokens/s, so these two rows should agree);
and the per-step cost of the live-bytes counter itself (same model, 8×160 tokens, interleaved).
Target: the runner is not slower than Trainer, and packing is at least 1.3× faster.

    python bench/bench_runner_vs_trainer.py [--steps 30] [--rounds 3] [--out outputs/bench-runner-vs-trainer.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from advisor import dataset  # noqa: E402
from advisor.config import from_names  # noqa: E402
from runners import data as data_mod  # noqa: E402
from runners import measure  # noqa: E402
from runners import model as model_mod  # noqa: E402
from runners.cell import run_cell  # noqa: E402

ROWS = 600  # training examples generated
VARIED_WORDS = (4, 160)  # response length range (words): the spread that makes padding matter
SEQ_LEN = 256  # tokens per sequence (train.seq_len)
MICRO_BATCH_SIZE = 8
WARMUP_STEPS = 2  # excluded from tokens/s on both sides (the runner's WARMUP_STEPS_UNTIMED)
LR = 1e-4
ARCH = {
    "architecture": "llama",
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 688,
    "tie_word_embeddings": True,
    "max_position_embeddings": 512,
    "total_params": None,
}
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "river",
    "stone",
    "cloud",
    "paper",
    "seven",
    "orange",
    "window",
    "garden",
    "silver",
    "number",
]


def make_assets(folder: Path) -> tuple[Path, Path, int]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    rng = random.Random(0)
    rows = []
    for _ in range(ROWS):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 20)))
        response = " ".join(rng.choice(WORDS) for _ in range(rng.randint(*VARIED_WORDS)))
        rows.append({"instruction": f"Continue: {prompt}", "output": response})
    data_path = folder / "varied.jsonl"
    data_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(
        [r["instruction"] + " " + r["output"] for r in rows] + ["### User: Assistant:"], trainer
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    model_dir = folder / "model"
    tok.save_pretrained(model_dir)
    torch.manual_seed(0)
    hf = LlamaConfig(
        vocab_size=tk.get_vocab_size(),
        **{k: v for k, v in ARCH.items() if k in LlamaConfig().to_dict()},
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    AutoModelForCausalLM.from_config(hf).save_pretrained(model_dir)
    return model_dir, data_path, tk.get_vocab_size()


def make_cfg(model_dir: Path, data_path: Path, vocab: int, steps: int, packing: bool):
    train = {
        "micro_batch_size": MICRO_BATCH_SIZE,
        "grad_accum": 1,
        "seq_len": SEQ_LEN,
        "max_steps": steps,
        "lr": LR,
        "warmup_ratio": 0.0,
        "gradient_checkpointing": False,
        "precision": "fp32",
        "packing": packing,
        "metric": "none",
        "eval_points": 1,
        "checkpoint_every_steps": 10_000,
    }
    return from_names(
        "demo-base",
        "full",
        "cpu",
        arch={**ARCH, "name": "bench", "vocab_size": vocab, "path": str(model_dir)},
        train=train,
        data={"path": str(data_path)},
    )


def run_trainer(cfg, steps: int, out_dir: Path) -> dict:
    """transformers Trainer on the runner's training examples and tokenization."""
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tok = model_mod.load_tokenizer(cfg)
    split = dataset.split(cfg.data, cfg.seed)
    train = [data_mod.encode(tok, e, SEQ_LEN) for e in split.train]
    features = [{"input_ids": e.input_ids, "labels": e.labels} for e in train]
    model = AutoModelForCausalLM.from_pretrained(
        cfg.model.path, dtype=torch.float32, attn_implementation="sdpa"
    )
    real: list[int] = []
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)

    def collate(batch):
        real.append(sum(len(f["input_ids"]) for f in batch))
        return collator(batch)

    timing = {"t0": None, "t1": None}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == WARMUP_STEPS:
                timing["t0"] = time.perf_counter()
            if state.global_step == steps:
                timing["t1"] = time.perf_counter()

    args = TrainingArguments(
        output_dir=str(out_dir),
        max_steps=steps,
        per_device_train_batch_size=MICRO_BATCH_SIZE,
        gradient_accumulation_steps=1,
        learning_rate=LR,
        weight_decay=0.0,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        optim="adamw_torch",
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=cfg.seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    Trainer(
        model=model, args=args, train_dataset=features, data_collator=collate, callbacks=[Clock()]
    ).train()
    tokens = sum(real[WARMUP_STEPS:steps])
    return {"tokens_per_s": tokens / (timing["t1"] - timing["t0"]), "timed_tokens": tokens}


def run_runner(cfg, out_dir: Path, live: bool = True) -> dict:
    saved = measure.LiveBytes
    if not live:
        measure.LiveBytes = lambda: None  # type: ignore[assignment]  # runners.cell reads it at run time
    try:
        res = run_cell(cfg, out_dir, resume=False)
    finally:
        measure.LiveBytes = saved
    assert res["status"] == "complete", res["reason"]
    m = res["measured"]
    return {
        "tokens_per_s": m["tokens_per_s"],
        "padding_fraction": m["padding_fraction"],
        "train_tokens": m["train_tokens"],
        "steps": m["steps"],
    }


def tracking_overhead(model_dir: Path, repeats: int = 8) -> dict:
    """Step time with and without the CPU live-bytes counter (runners.measure.LiveBytes), interleaved."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    ids = torch.randint(0, model.config.vocab_size, (MICRO_BATCH_SIZE, 160))

    def step() -> float:
        t0 = time.perf_counter()
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for _ in range(3):
        step()
    live = measure.LiveBytes()
    plain, tracked = [], []
    for _ in range(repeats):
        plain.append(step())
        live.register(measure.model_tensors(model, opt))
        with live:
            tracked.append(step())
    a, b = statistics.median(plain), statistics.median(tracked)
    return {"plain_step_s": round(a, 4), "tracked_step_s": round(b, 4), "overhead": round(b / a - 1, 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per variant")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    ap.add_argument("--out", type=Path, default=Path("outputs/bench-runner-vs-trainer.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, data_path, vocab = make_assets(tmp)
        padded, packed = (make_cfg(model_dir, data_path, vocab, args.steps, p) for p in (False, True))
        variants = {
            "trainer": lambda k: run_trainer(padded, args.steps, tmp / f"trainer{k}"),
            "runner_padded": lambda k: run_runner(padded, tmp / f"padded{k}"),
            "runner_packed": lambda k: run_runner(packed, tmp / f"packed{k}"),
            "runner_padded_no_tracking": lambda k: run_runner(padded, tmp / f"nolive{k}", live=False),
        }
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        for k in range(args.rounds):  # interleaved rounds: a busy machine slows every variant alike
            for name, fn in variants.items():
                runs[name].append(fn(k))
        overhead = tracking_overhead(model_dir)
    results = {}
    for name, rs in runs.items():
        speeds = sorted(r["tokens_per_s"] for r in rs)
        results[name] = {
            **rs[0],
            "tokens_per_s": statistics.median(speeds),
            "best_tokens_per_s": speeds[-1],  # the least-disturbed round (timeit's min-time rule)
            "rounds_tokens_per_s": speeds,
        }
    base = results["trainer"]["tokens_per_s"]
    for name, r in results.items():
        r["vs_trainer"] = round(r["tokens_per_s"] / base, 3)
        r["best_vs_trainer"] = round(r["best_tokens_per_s"] / results["trainer"]["best_tokens_per_s"], 3)
        print(
            f"{name:28s} median {r['tokens_per_s']:8.1f} tokens/s ×{r['vs_trainer']:.2f} | best "
            f"{r['best_tokens_per_s']:8.1f} ×{r['best_vs_trainer']:.2f} vs Trainer ({args.rounds} rounds)",
            flush=True,
        )
    print(
        f"live-bytes tracking overhead per step: {overhead['overhead']:.1%} "
        f"({overhead['plain_step_s'] * 1e3:.0f} ms → {overhead['tracked_step_s'] * 1e3:.0f} ms)",
        flush=True,
    )
    doc = {
        "tracking_overhead": overhead,
        "steps": args.steps,
        "rounds": args.rounds,
        "micro_batch_size": MICRO_BATCH_SIZE,
        "seq_len": SEQ_LEN,
        "rows": ROWS,
        "threads": torch.get_num_threads(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

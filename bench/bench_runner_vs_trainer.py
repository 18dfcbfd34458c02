"""The runner's training speed beside a plain transformers `Trainer`, measured in one run.

Same model (a small Llama built with from_config and saved locally), same micro-batches in the same
order (the runner's split, tokenization, response-only labels and data stream; Trainer reads them with
its sequential sampler and pads each batch itself: DataCollatorForSeq2Seq, per-batch dynamic padding),
same steps, lr schedule and precision (fp32 on CPU). Trainer keeps its defaults otherwise, optimizer
included (adamw_torch_fused on torch >= 2.8: the fused kernel the runner's AdamW also uses on CPU).
The dataset has varied lengths (VARIED_WORDS), so padding matters. Tokens/s count non-padding tokens
and leave out the first WARMUP_STEPS steps. Each variant trains in a fresh process (as users run
either; see in_fresh_process), interleaved round by round (Trainer, runner padded, runner packed,
runner untracked, lock-step, repeat) so machine drift hits all alike:
- Trainer: per-step times from consecutive `on_step_end` calls (all of Trainer's per-step work);
- runner, padded: runners.cell.run_cell with train.packing=false, as users run it (the CPU live-bytes
  counter on for its first steps and the largest batch, which its tokens/s leaves out): compared
  with Trainer over exactly the steps the runner timed, and end to end (gaps between its on_step
  calls, i.e. including everything outside its timed region);
- runner, packed: train.packing=true (boundary-respecting packing up to seq_len), against Trainer's
  tokens/s over all steps after warm-up;
- runner, padded, no live-bytes tracking: every step after warm-up timed, against the same for Trainer;
- lock-step: Trainer's step k, then the runner's step k (its loop as run_cell builds it), alternating
  in one process: each pair shares the batch and the machine's momentary load (the least noisy ratio);
and the per-step cost of the live-bytes counter itself (same model, 8×160 tokens, interleaved).
Target: the runner is not slower than Trainer, and packing is at least 1.3× faster.
Same training, checked: after the last step every padded variant's eval loss on the runner's
validation rows (runners.train.eval_loss, outside the timed steps) equals Trainer's (`eval_loss` in
the output, beside the untrained model's), and both sides count the same non-padding tokens.

    python bench/bench_runner_vs_trainer.py [--steps 30] [--rounds 3] [--out outputs/bench-runner-vs-trainer.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from advisor.config.schema import from_names
from advisor.data import dataset
from runners import data as data_mod
from runners import measure
from runners import model as model_mod
from runners.cell import Learned, prepare, run_cell
from runners.hooks import Hooks
from runners.optim import make_optimizer
from runners.result import Progress
from runners.train import eval_loss

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


def runner_batches(cfg, steps: int) -> list[list[data_mod.Row]]:
    """The micro-batches the padded runner trains on, step by step (its split, tokenization, stream)."""
    tok = model_mod.load_tokenizer(cfg)
    split = dataset.split(cfg.data, cfg.seed)
    encoded = [data_mod.encode(tok, e, SEQ_LEN) for e in split.train]
    stream = data_mod.Stream(
        data_mod.build_rows(encoded, SEQ_LEN, False, cfg.seed), MICRO_BATCH_SIZE, cfg.seed
    )
    return [stream.micro_batch(k) for k in range(steps)]


def runner_val_rows(cfg) -> list[data_mod.Row]:
    """The runner's validation rows (its split and tokenization; padded, not packed)."""
    tok = model_mod.load_tokenizer(cfg)
    split = dataset.split(cfg.data, cfg.seed)
    return data_mod.build_rows(
        [data_mod.encode(tok, e, SEQ_LEN) for e in split.val], SEQ_LEN, False, cfg.seed
    )


def final_eval_loss(cfg, model) -> float:
    """Token-weighted eval loss on the runner's validation rows (what the runner's last eval reports)."""
    pad = model_mod.pad_id(model_mod.load_tokenizer(cfg))
    return eval_loss(model, runner_val_rows(cfg), MICRO_BATCH_SIZE, pad, torch.device("cpu"))


def run_trainer(cfg, batches: list[list[data_mod.Row]], out_dir: Path, lockstep=None) -> dict:
    """transformers Trainer on the runner's micro-batches, in the runner's order (a sequential sampler
    over them): the two sides train on identical batches, so their tokens/s compare loop against loop.
    Everything else is Trainer's default, its optimizer included (adamw_torch_fused on torch >= 2.8).
    Per-step times are the gaps between consecutive `on_step_end` calls: everything Trainer does for a
    step (batch fetch and collation, forward/backward, clipping, optimizer, scheduler, callbacks).
    `lockstep`: a runners.train.Loop whose step k runs right after Trainer's step k (timed apart)."""
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tok = model_mod.load_tokenizer(cfg)
    features = [{"input_ids": r.input_ids, "labels": r.labels} for rows in batches for r in rows]
    model = AutoModelForCausalLM.from_pretrained(
        cfg.model.path, dtype=torch.float32, attn_implementation="sdpa"
    )
    real: list[int] = []
    padded: list[int] = []
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)

    def collate(batch):
        out = collator(batch)
        real.append(sum(len(f["input_ids"]) for f in batch))
        padded.append(int(out["input_ids"].numel()))
        return out

    ends: list[float] = []
    resumed: list[float] = []  # when Trainer got the machine back (after the lock-step runner step)
    runner_s: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ARG002 (TrainerCallback's signature)
            ends.append(time.perf_counter())
            if lockstep is not None:
                t0 = time.perf_counter()
                lockstep._step(state.global_step - 1)  # what Loop.run times for an untracked step
                runner_s.append(time.perf_counter() - t0)
            resumed.append(time.perf_counter())

    args = TrainingArguments(
        output_dir=str(out_dir),
        max_steps=len(batches),
        per_device_train_batch_size=MICRO_BATCH_SIZE,
        gradient_accumulation_steps=1,
        learning_rate=LR,
        weight_decay=0.0,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=cfg.seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
        train_sampling_strategy="sequential",
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=features, data_collator=collate, callbacks=[Clock()]
    )
    trainer.train()
    steps = len(batches)
    assert len(ends) == steps and len(real) == steps, (len(ends), len(real))
    step_s = [None] + [ends[k] - resumed[k - 1] for k in range(1, steps)]  # step 0: no start mark
    optim = getattr(trainer.args.optim, "value", trainer.args.optim)
    out = {"optim": optim, "step_s": step_s, "real": real, "padded": padded, "runner_s": runner_s}
    out["eval_loss"] = final_eval_loss(cfg, trainer.model)  # after training: outside every timed step
    if lockstep is not None:
        out["runner_eval_loss"] = lockstep.evaluate()
    return out


def run_lockstep(cfg, batches: list[list[data_mod.Row]], out_dir: Path) -> dict:
    """Trainer's step k, then the runner's step k (its training loop, built by runners.cell as run_cell
    builds it; no live-bytes counter), then Trainer's step k+1 ...: the same batch on both sides under
    the same momentary machine load, so the per-step ratio is the least noisy comparison."""
    loop, _, _ = prepare(
        cfg, out_dir / "runner", resume=False, baseline=False, progress=Progress(), learned=Learned()
    )
    assert [loop.batches.stream.micro_batch(k) for k in range(len(batches))] == batches
    return run_trainer(cfg, batches, out_dir / "trainer", lockstep=loop)


def run_runner(cfg, out_dir: Path, live: bool = True) -> dict:
    """runners.cell.run_cell as users run it; per step (via its on_step hook): real tokens, whether the
    runner timed the step, and the wall-clock gap between consecutive on_step calls (end to end)."""
    saved = measure.LiveBytes
    if not live:
        measure.LiveBytes = lambda: None  # type: ignore[assignment]  # runners.cell reads it at run time
    per_step: list[dict] = []
    last = {"tokens": 0, "timed_s": 0.0, "t": None}

    def on_step(p) -> None:
        now = time.perf_counter()
        per_step.append(
            {
                "real": p.train_tokens - last["tokens"],
                "timed": p.timed_s > last["timed_s"],
                "gap_s": None if last["t"] is None else now - last["t"],
            }
        )
        last.update(tokens=p.train_tokens, timed_s=p.timed_s, t=now)

    try:
        res = run_cell(cfg, out_dir, Hooks(on_step=on_step), resume=False)
    finally:
        measure.LiveBytes = saved
    m = res.measured
    assert res.status == "complete" and m is not None, res.reason
    return {
        "tokens_per_s": m.tokens_per_s,
        "padding_fraction": m.padding_fraction,
        "train_tokens": m.train_tokens,
        "steps": m.steps,
        "eval_loss": m.eval_loss,  # eval_points=1: after the last step
        "per_step": per_step,
    }


def untrained_eval_loss(cfg) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=torch.float32)
    return final_eval_loss(cfg, model)


def rate(real: list[int], step_s: list[float | None], steps) -> float:
    """Non-padding tokens per second over the given steps."""
    return sum(real[k] for k in steps) / sum(step_s[k] for k in steps)  # type: ignore[misc]


def tracking_overhead(model_dir: Path, repeats: int = 8) -> dict:
    """Step time with and without the CPU live-bytes counter (runners.measure.LiveBytes), interleaved."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    opt = make_optimizer("adamw", model.parameters(), LR)  # the runner's
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


def compare_round(tr: dict, padded: dict, packed: dict, untracked: dict, lock: dict) -> dict:
    """One round's figures: each runner variant beside Trainer on the same steps."""
    steps = len(tr["real"])
    late = range(WARMUP_STEPS, steps)
    for r in (padded, untracked):  # identical batches on both sides, step by step
        assert [s["real"] for s in r["per_step"]] == tr["real"], "runner and Trainer batches differ"
    timed = [k for k, s in enumerate(padded["per_step"]) if s["timed"]]
    untimed = [k for k, s in enumerate(untracked["per_step"]) if s["timed"]]
    assert untimed == list(late), untimed
    trainer_all = rate(tr["real"], tr["step_s"], late)
    gaps = [s["gap_s"] for s in padded["per_step"]]
    out = {
        "trainer": trainer_all,
        # the runner's own figure, and Trainer over exactly the steps the runner timed (it leaves out
        # the steps run under the live-bytes counter: the first ones and the largest batch)
        "runner_padded": padded["tokens_per_s"],
        "trainer_same_steps": rate(tr["real"], tr["step_s"], timed),
        # the runner end to end: gaps between its on_step calls (everything outside the timed region)
        "runner_padded_end_to_end": rate(tr["real"], gaps, [k for k in timed if k > 0]),
        "trainer_end_to_end_steps": rate(tr["real"], tr["step_s"], [k for k in timed if k > 0]),
        "runner_padded_no_tracking": untracked["tokens_per_s"],
        "runner_packed": packed["tokens_per_s"],
    }
    out["ratio_padded"] = out["runner_padded"] / out["trainer_same_steps"]
    out["ratio_padded_end_to_end"] = out["runner_padded_end_to_end"] / out["trainer_end_to_end_steps"]
    out["ratio_no_tracking"] = out["runner_padded_no_tracking"] / trainer_all
    out["ratio_packed"] = out["runner_packed"] / trainer_all
    assert lock["real"] == tr["real"]
    out["lockstep_trainer"] = rate(lock["real"], lock["step_s"], late)
    out["lockstep_runner"] = rate(lock["real"], lock["runner_s"], late)
    out["ratio_lockstep"] = out["lockstep_runner"] / out["lockstep_trainer"]
    out["lockstep_pairs"] = [lock["step_s"][k] / lock["runner_s"][k] for k in late]
    out["eval_loss"] = {  # after the last step, on the runner's validation rows
        "trainer": tr["eval_loss"],
        "runner_padded": padded["eval_loss"],
        "runner_padded_no_tracking": untracked["eval_loss"],
        "lockstep_trainer": lock["eval_loss"],
        "lockstep_runner": lock["runner_eval_loss"],
    }
    out["train_tokens"] = {
        "trainer": sum(tr["real"]),
        "runner_padded": padded["train_tokens"],
        "runner_padded_no_tracking": untracked["train_tokens"],
    }
    out["step_s"] = {  # per step, end to end (None: step 0 has no start mark)
        "trainer": tr["step_s"],
        "runner_padded": gaps,
        "runner_padded_no_tracking": [s["gap_s"] for s in untracked["per_step"]],
        "runner_packed": [s["gap_s"] for s in packed["per_step"]],
    }
    out["real"] = {"padded": tr["real"], "packed": [s["real"] for s in packed["per_step"]]}
    out["timed_steps"] = {
        "runner_padded": timed,
        "runner_packed": [k for k, s in enumerate(packed["per_step"]) if s["timed"]],
    }
    return out


def best_of_rounds(rounds: list[dict]) -> dict:
    """Each step's least-disturbed time over the rounds (timeit's min rule, per step: robust to a
    neighbour's burst of load in one round), then the same comparisons as compare_round, end to end."""
    best = {
        name: [None if k == 0 else min(r["step_s"][name][k] for r in rounds) for k in range(len(times))]
        for name, times in rounds[0]["step_s"].items()
    }
    real, real_packed = rounds[0]["real"]["padded"], rounds[0]["real"]["packed"]
    late = range(WARMUP_STEPS, len(real))
    timed = [k for k in rounds[0]["timed_steps"]["runner_padded"] if k > 0]
    timed_packed = [k for k in rounds[0]["timed_steps"]["runner_packed"] if k > 0]
    out = {
        "trainer": rate(real, best["trainer"], late),
        "trainer_same_steps": rate(real, best["trainer"], timed),
        "runner_padded": rate(real, best["runner_padded"], timed),
        "runner_padded_no_tracking": rate(real, best["runner_padded_no_tracking"], late),
        "runner_packed": rate(real_packed, best["runner_packed"], timed_packed),
    }
    out["ratio_padded"] = out["runner_padded"] / out["trainer_same_steps"]
    out["ratio_no_tracking"] = out["runner_padded_no_tracking"] / out["trainer"]
    out["ratio_packed"] = out["runner_packed"] / out["trainer"]
    return out


def paired_step_ratios(rounds: list[dict]) -> dict:
    """Median over rounds × steps of Trainer's time for step k ÷ the runner's time for the same step k
    (the same micro-batch on both sides, end to end): batch-size differences cancel pair by pair and a
    burst of load on a shared machine moves the median little. > 1: the runner is faster."""
    out = {}
    for name in ("runner_padded", "runner_padded_no_tracking"):
        pairs = []
        for r in rounds:
            steps = (
                r["timed_steps"]["runner_padded"]
                if name == "runner_padded"
                else range(WARMUP_STEPS, len(r["real"]["padded"]))
            )
            pairs += [r["step_s"]["trainer"][k] / r["step_s"][name][k] for k in steps if k > 0]
        out[name] = statistics.median(pairs)
        out[name + "_pairs"] = len(pairs)
    return out


VARIANTS = ("trainer", "runner_padded", "runner_packed", "runner_padded_no_tracking", "lockstep")


def run_variant(name: str, folder: Path, steps: int, out_dir: Path) -> dict:
    """One variant on the assets in `folder` (called in a fresh process: see main)."""
    vocab = json.loads((folder / "model" / "config.json").read_text())["vocab_size"]
    cfg = make_cfg(folder / "model", folder / "varied.jsonl", vocab, steps, name == "runner_packed")
    if name == "trainer":
        return run_trainer(cfg, runner_batches(cfg, steps), out_dir)
    if name == "lockstep":
        return run_lockstep(cfg, runner_batches(cfg, steps), out_dir)
    return run_runner(cfg, out_dir, live=name != "runner_padded_no_tracking")


def in_fresh_process(name: str, folder: Path, steps: int, out_dir: Path) -> dict:
    """Each training in its own process, as users run either: several trainings in one process share
    the C allocator's state, and its page faults per step (measured: 1,100 to 4,500 a step, 1.5 to 8 ms
    of kernel time, ~1-5 % of a step) then depend on what ran before rather than on the loop."""
    out = out_dir / "variant.json"
    cmd = [sys.executable, __file__, "--variant", name, "--assets", str(folder), "--steps", str(steps)]
    proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per variant")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--out", type=Path, default=Path("outputs/bench-runner-vs-trainer.json"))
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # child process: one variant
    ap.add_argument("--assets", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:
        res = run_variant(args.variant, args.assets, args.steps, args.out.parent)
        args.out.write_text(json.dumps(res))
        return 0
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, data_path, vocab = make_assets(tmp)
        untrained = untrained_eval_loss(make_cfg(model_dir, data_path, vocab, args.steps, False))
        rounds, info = [], {}
        for k in range(args.rounds):  # interleaved rounds: a busy machine slows every variant alike
            res = {}
            for name in VARIANTS:
                out_dir = tmp / f"{name}{k}"
                out_dir.mkdir()
                res[name] = in_fresh_process(name, tmp, args.steps, out_dir)
            tr, pd, pk = res["trainer"], res["runner_padded"], res["runner_packed"]
            rounds.append(compare_round(tr, pd, pk, res["runner_padded_no_tracking"], res["lockstep"]))
            info = {
                "trainer_optim": tr["optim"],
                "padding_fraction_trainer": round(1 - sum(tr["real"]) / sum(tr["padded"]), 4),
                "padding_fraction_runner": pd["padding_fraction"],
                "padding_fraction_packed": pk["padding_fraction"],
            }
            r = rounds[-1]
            print(
                f"round {k + 1}: Trainer {r['trainer']:.0f} tok/s | runner padded ×{r['ratio_padded']:.3f} "
                f"(end to end ×{r['ratio_padded_end_to_end']:.3f}, untracked ×{r['ratio_no_tracking']:.3f})"
                f" | packed ×{r['ratio_packed']:.3f} | lock-step ×{r['ratio_lockstep']:.3f}"
                f" | load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        overhead = tracking_overhead(model_dir)
    med = {k: statistics.median(r[k] for r in rounds) for k, v in rounds[0].items() if isinstance(v, float)}
    losses = rounds[-1]["eval_loss"]
    best = best_of_rounds(rounds)
    print(
        f"\n{args.rounds} interleaved rounds of {args.steps} steps (Trainer optim={info['trainer_optim']}, "
        f"same micro-batches; padding {info['padding_fraction_trainer']:.1%} both sides, packed "
        f"{info['padding_fraction_packed']:.1%}); median of the rounds | each step's best round:"
    )
    rows = [
        ("Trainer (steps >= 2)", "trainer", None),
        ("Trainer (the runner's timed steps)", "trainer_same_steps", None),
        ("runner padded (its tokens/s)", "runner_padded", "ratio_padded"),
        ("runner padded, end to end", "runner_padded_end_to_end", "ratio_padded_end_to_end"),
        ("runner padded, no live-bytes counter", "runner_padded_no_tracking", "ratio_no_tracking"),
        ("runner packed", "runner_packed", "ratio_packed"),
    ]
    for name, key, ratio in rows:
        line = f"  {name:38s} {med[key]:8.1f} tokens/s" + (f" ×{med[ratio]:.3f}" if ratio else " " * 7)
        if key in best:
            line += f" | {best[key]:8.1f}" + (f" ×{best[ratio]:.3f}" if ratio else "")
        print(line)
    paired = paired_step_ratios(rounds)
    paired["lockstep"] = statistics.median(x for r in rounds for x in r["lockstep_pairs"])
    paired["lockstep_pairs"] = sum(len(r["lockstep_pairs"]) for r in rounds)
    print(
        f"  paired per step (Trainer step time ÷ runner step time, same batch; median of "
        f"{paired['runner_padded_pairs']} / {paired['runner_padded_no_tracking_pairs']} pairs): runner padded "
        f"×{paired['runner_padded']:.3f}, no live-bytes counter ×{paired['runner_padded_no_tracking']:.3f}"
    )
    print(
        f"  lock-step (Trainer step k, then the runner's step k, one process, same batch): "
        f"{med['lockstep_trainer']:.1f} vs {med['lockstep_runner']:.1f} tokens/s, ×{med['ratio_lockstep']:.3f}; "
        f"per-step median ×{paired['lockstep']:.3f} over {paired['lockstep_pairs']} pairs"
    )
    print(
        f"eval loss after {args.steps} steps: Trainer {losses['trainer']:.6f}, runner padded "
        f"{losses['runner_padded']:.6f}, untracked {losses['runner_padded_no_tracking']:.6f}, lock-step "
        f"{losses['lockstep_trainer']:.6f} / {losses['lockstep_runner']:.6f} (untrained {untrained:.6f})"
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
        "load_average_start": load0,
        "load_average_end": os.getloadavg()[0],
        **info,
        "eval_loss": {"untrained": untrained, **losses},
        "train_tokens": rounds[-1]["train_tokens"],
        "median": med,
        "best_of_rounds": best,
        "paired_step_ratio": paired,
        "per_round": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

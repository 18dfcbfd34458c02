"""Compute spent to reach the sweep's recommendation: tunewise (advisor pre-screen + median pruning)
vs the same grid without pre-screening and pruning, measured side by side in one run.

    .venv/bin/python bench/bench_sweep.py [--out outputs/bench/bench_sweep.json]

Setup (CPU, offline): a small Llama built with `from_config` and saved, a BPE tokenizer trained here,
a generated instruction dataset. The grid is method [full, lora] × r [4, 16] × lr [1e-8, 2e-3]
(full collapses r: 6 cells), on a "card" whose usable memory (gpu.usable_mib) lies between the
advisor's LoRA and full-fine-tuning estimates, so full fine-tuning cannot fit; lr=1e-8 is a broken
learning rate that a pruner should stop.

- tunewise: `tunewise sweep` as shipped — infeasible cells never start, losing cells are pruned.
- baseline: `sweep.prescreen=false sweep.pruner=none` — every cell runs to the end.

Compute = CPU-seconds (user + system) of every runner process, from `os.wait4`'s resource usage of
each child (recorded per attempt in the trial records), plus the baseline model evaluation; the bench
also reports the whole `tunewise sweep` process tree (RUSAGE_CHILDREN around each run) and wall time.
On CPU the full-fine-tuning cells *can* run in the baseline (RAM is larger than the pretend card), so
the baseline's cost for them is what a real card would spend only until its OOM: the saving reported
for pre-screening is an upper bound; the pruning saving is not affected. The recommendation is the
lowest eval loss among completed cells that fit the card (the advisor's fit test), computed the same
way for both runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATRIX = {
    "name": "bench_sweep",
    "axes": {"method": ["full", "lora"], "method.r": [4, 16], "train.lr": [1e-8, 2e-3]},
    "exclude": [],
}


def build_assets(base: Path) -> dict[str, Path]:
    import random
    import shutil

    import torch
    import yaml
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    words = ["red", "blue", "green", "apple", "stone", "river", "cloud", "seven", "nine", "fast", "slow"]
    rows = []
    for _ in range(200):
        a, b, w = rng.randint(0, 30), rng.randint(0, 30), rng.choice(words)
        rows.append({"instruction": f"add {a} and {b} then say {w}", "input": "", "output": f"{a + b} {w}"})
    data = base / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [f"{r['instruction']} {r['output']}" for r in rows] * 3,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    model_dir = base / "model"
    fast.save_pretrained(model_dir)
    torch.manual_seed(0)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(fast),
            hidden_size=512,
            intermediate_size=1376,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=3,
        )
    ).save_pretrained(model_dir)
    conf = base / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "matrix" / "bench_sweep.yaml").write_text(yaml.safe_dump(MATRIX))
    return {"model": model_dir, "data": data, "conf": conf}


def overrides(a: dict[str, Path], sweep_dir: Path) -> list[str]:
    return [
        f"model.path={a['model']}",
        f"model.config_path={a['model']}",
        f"data.path={a['data']}",
        "data.val_rows_max=16",
        "data.rows=96",
        "gpu=cpu",
        "matrix=bench_sweep",
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
    ]


def card_limit_mib(a: dict[str, Path], env: dict[str, str]) -> int:
    """usable_mib halfway between the advisor's device_gib for LoRA r=16 at the configured micro-batch
    and full fine-tuning at micro-batch 1, so every LoRA cell fits and no full cell does."""
    code = (
        "import json,sys\n"
        "from sweep.compose import compose\nfrom advisor.config.schema import RunConfig\n"
        "from advisor.estimator.estimate import estimate\nfrom advisor.data.stats import dataset_stats\n"
        "def gib(extra):\n"
        "    cfg=RunConfig.from_dict(compose('config', sys.argv[1:]+extra))\n"
        "    return estimate(cfg, stats=dataset_stats(cfg))['memory']['device_gib']\n"
        "print(json.dumps({'lora': gib(['method=lora','method.r=16']),\n"
        "                  'full': gib(['method=full','train.micro_batch_size=1','train.grad_accum=4'])}))\n"
    )
    cmd = [sys.executable, "-c", code, *overrides(a, Path("/nonexistent"))[:-2]]
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    gib = json.loads(res.stdout)
    if not gib["full"] - gib["lora"] > 4 / 1024:
        raise SystemExit(f"full and LoRA estimates too close to place a card between them: {gib}")
    return int((gib["full"] + gib["lora"]) / 2 * 1024)


def run(a: dict[str, Path], env: dict[str, str], sweep_dir: Path, extra: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    res = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "sweep", *overrides(a, sweep_dir), *extra],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"sweep failed:\n{res.stderr[-4000:]}")
    import reports
    from advisor.trials.store import read_baseline

    frame = reports.results(sweep_dir)  # one row per attempt
    cells = frame.drop_duplicates("cell_id")
    base = read_baseline(sweep_dir)
    base_cpu = sum(a.cpu_s or 0.0 for a in base.attempts) if base is not None else 0.0
    fits = cells[(cells["status"] == "complete") & cells["estimate.fits"].fillna(False)]
    best = fits.loc[fits["measured.eval_loss"].idxmin()] if len(fits) else None
    return {
        "runner_cpu_s": round(float(frame["attempt.cpu_s"].sum()) + base_cpu, 1),
        "tree_cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "wall_s": round(wall, 1),
        "processes_started": int(frame["attempt.started"].notna().sum()) + 1,
        "evals_run": int(frame["attempt.evals"].sum()),
        "statuses": {str(k): int(v) for k, v in cells["status"].value_counts().sort_index().items()},
        "recommendation": None
        if best is None
        else {
            "cell_id": best["cell_id"],
            "overrides": best["overrides"].split(),
            "eval_loss": float(best["measured.eval_loss"]),
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "bench_sweep.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        base = Path(tmp)
        a = build_assets(base)
        env = {**os.environ, "TUNEWISE_CONF": str(a["conf"]), "TOKENIZERS_PARALLELISM": "false"}
        limit = card_limit_mib(a, env)
        card = [f"gpu.usable_mib={limit}"]
        tunewise = run(a, env, base / "tunewise", card)
        baseline = run(a, env, base / "baseline", [*card, "sweep.prescreen=false", "sweep.pruner=none"])
    same = (tunewise["recommendation"] or {}).get("overrides") == (baseline["recommendation"] or {}).get(
        "overrides"
    )
    doc = {
        "card_usable_mib": limit,
        "matrix": MATRIX,
        "tunewise": tunewise,
        "baseline_full_grid": baseline,
        "same_recommendation": same,
        "runner_cpu_saving": round(1 - tunewise["runner_cpu_s"] / baseline["runner_cpu_s"], 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{'':<26}{'tunewise':>12}{'full grid':>12}")
    for k in ("runner_cpu_s", "tree_cpu_s", "wall_s", "processes_started", "evals_run"):
        print(f"{k:<26}{tunewise[k]:>12}{baseline[k]:>12}")
    print(f"statuses: tunewise {tunewise['statuses']} | full grid {baseline['statuses']}")
    print(
        f"recommendation: tunewise {tunewise['recommendation']}\n                full grid {baseline['recommendation']}"
    )
    print(
        f"same recommendation: {same}; runner CPU-seconds saved: {doc['runner_cpu_saving']:.1%} (wrote {args.out})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

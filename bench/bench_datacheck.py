"""Benchmark `tunewise data check` on a generated dataset: wall time, peak memory, recall of planted problems.

Side by side in one run, each in a fresh process (peak memory = that process's VmHWM):
- check:    advisor.data.check.check — streaming, a fixed-size digest per row;
- baseline: what holding the rows costs — advisor.data.dataset.read_examples (every Example in memory) and
            an exact-duplicate count with a set of the rows' content (no near-duplicates, conflicts
            or token statistics).
Each runs at rows/10 and at rows, so the per-row memory slope (Δ peak RSS / Δ rows) shows directly.

The file: instruction/response rows of 20-40 + 8-20 pseudo-words from a 50,000-word vocabulary,
with planted problems at known rows: 1 % exact duplicates, 1 % near-duplicates (3 words changed),
0.2 % conflicting answers, 0.1 % malformed lines. It is generated once per (rows, seed) under --out.

    .venv/bin/python bench/bench_datacheck.py                 # 1,000,000 rows (several minutes)
    .venv/bin/python bench/bench_datacheck.py --rows 100000   # quick
    --tokenizer adds `check_tokenizer`: the same check with a byte-level BPE tokenizer (8,000 tokens,
    trained on the file's first 20,000 lines) and the demo base's chat template, as model.path.
Results: printed, and written to <out>/results-<rows>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLANTED = {"exact_duplicate": 0.01, "near_duplicate": 0.01, "conflicting_answer": 0.002, "malformed": 0.001}


def generate(path: Path, rows: int, seed: int) -> dict:
    """Write the benchmark file; return the planted counts."""
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
        for _ in range(50000)
    ]
    planted = dict.fromkeys(PLANTED, 0)
    kept: list[dict] = []  # a sample of earlier rows to duplicate
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for _ in range(rows):
            u = rng.random()
            if kept and u < PLANTED["exact_duplicate"]:
                row, kind = rng.choice(kept), "exact_duplicate"
            elif kept and u < 0.02:
                src = rng.choice(kept)
                w = src["instruction"].split()
                for j in rng.sample(range(len(w)), 3):
                    w[j] = rng.choice(vocab) + "x"
                row, kind = {"instruction": " ".join(w), "output": src["output"]}, "near_duplicate"
            elif kept and u < 0.022:
                src = rng.choice(kept)
                row, kind = (
                    {"instruction": src["instruction"], "output": " ".join(rng.choices(vocab, k=15))},
                    "conflicting_answer",
                )
            elif u < 0.023:
                f.write('{"instruction": "cut off", "output": \n')
                planted["malformed"] += 1
                continue
            else:
                row = {"instruction": " ".join(rng.choices(vocab, k=rng.randint(20, 40))),
                       "output": " ".join(rng.choices(vocab, k=rng.randint(8, 20)))}  # fmt: skip
                kind = None
                if len(kept) < 5000 or rng.random() < 0.01:
                    kept.append(row) if len(kept) < 5000 else kept.__setitem__(rng.randrange(5000), row)
            if kind:
                planted[kind] += 1
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return planted


CHAT_TEMPLATE = (  # the demo base's format (runners/demo/base.py)
    "{% for m in messages %}{% if m['role'] == 'user' %}<|user|>\n{{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] }}<|end|>\n"
    "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"
)


def train_tokenizer(folder: Path, data: Path, vocab_size: int = 8000, rows: int = 20000) -> None:
    """A byte-level BPE tokenizer trained on the file's first rows, saved with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    with open(data, encoding="utf-8") as f:
        texts = [line for _, line in zip(range(rows), f, strict=False)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|user|>", "<|assistant|>", "<|end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(texts, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def peak_rss_kib() -> int:
    """This process's peak resident memory: VmHWM (Linux; unlike ru_maxrss it does not carry the
    parent's peak across fork + exec), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(mode: str, path: str, rows: int, tokenizer: str | None = None) -> dict:
    from advisor.config.schema import from_names

    arch = {"path": tokenizer} if mode == "check_tokenizer" else {}
    cfg = from_names("llama-3.1-8b", "lora", "a100-80gb", data={"path": path}, arch=arch)
    t0 = time.perf_counter()
    if mode.startswith("check"):
        from advisor.data.check import check

        doc, _ = check(cfg)
        found = {c["name"]: c["count"] for c in doc["checks"] if c["count"]}
        extra = {"total_tokens": doc["stats"]["total_tokens"], "tokenizer": doc["stats"]["tokenizer"]}
    else:
        from advisor.data.dataset import iter_examples

        examples, seen, dups = [], set(), 0
        for _, ex, problems in iter_examples(path, cfg.data):
            if ex is not None and not problems:
                examples.append(ex)
                key = json.dumps(ex.messages)
                dups += key in seen
                seen.add(key)
        found, extra = {"exact_duplicate": dups, "rows": len(examples)}, {}
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "mode": mode,
        "rows": rows,
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),  # whole process, imports included
        "peak_rss_mib": round(peak_rss_kib() / 1024),
        "load_avg_1m": round(os.getloadavg()[0], 1),  # other work on the machine while it ran
        "found": found,
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in the large file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default="outputs/bench/datacheck", help="folder for the generated files and results"
    )
    ap.add_argument(
        "--tokenizer", action="store_true", help="also check with a BPE tokenizer + chat template"
    )
    ap.add_argument("--child", nargs=4, metavar=("MODE", "FILE", "ROWS", "TOKENIZER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]), args.child[3])))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in (args.rows // 10, args.rows):
        path = out / f"rows-{rows}-seed-{args.seed}.jsonl"
        meta = path.with_suffix(".planted.json")
        if not (path.exists() and meta.exists()):
            t = time.perf_counter()
            meta.write_text(json.dumps(generate(path, rows, args.seed)))
            print(f"generated {path} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        planted = json.loads(meta.read_text())
        tok_dir = out / f"tokenizer-seed-{args.seed}"
        if args.tokenizer and not (tok_dir / "tokenizer.json").exists():
            train_tokenizer(tok_dir, path)
        for mode in ("check", "baseline", *(("check_tokenizer",) if args.tokenizer else ())):
            cmd = [sys.executable, __file__, "--child", mode, str(path), str(rows), str(tok_dir)]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
            r = {
                **json.loads(proc.stdout.strip().splitlines()[-1]),
                "planted": planted,
                "file_mib": round(path.stat().st_size / 2**20),
            }
            results.append(r)
            print(json.dumps(r), file=sys.stderr)
    print(
        f"\n{'mode':15} {'rows':>9} {'wall_s':>7} {'cpu_s':>7} {'rows/s':>8} {'peak MiB':>9} {'load':>5}  found (planted)"
    )
    for r in results:
        found = ", ".join(f"{k} {v:,} ({r['planted'].get(k, '-'):,})" if k in r["planted"] else f"{k} {v:,}"
                          for k, v in r["found"].items())  # fmt: skip
        print(
            f"{r['mode']:15} {r['rows']:>9,} {r['wall_s']:>7} {r['cpu_s']:>7} {r['rows'] / r['wall_s']:>8,.0f} "
            f"{r['peak_rss_mib']:>9,} {r['load_avg_1m']:>5}  {found}"
        )
    for mode in dict.fromkeys(r["mode"] for r in results):
        small, large = (r for r in results if r["mode"] == mode)
        slope = (large["peak_rss_mib"] - small["peak_rss_mib"]) * 2**20 / (large["rows"] - small["rows"])
        print(f"{mode}: {slope:,.0f} bytes of peak memory per additional row")
    summary = {"results": results, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
               "platform": platform.platform()}}  # fmt: skip
    (out / f"results-{args.rows}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

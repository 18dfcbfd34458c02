"""How fast `tunewise advise` answers (target: < 2 s end to end), and what the catalog YAML loader
costs — libyaml's CSafeLoader side by side with the pure-Python SafeLoader baseline, in one run.

    .venv/bin/python bench/bench_advise.py [--repeats 5]

Prints one JSON document: end-to-end wall seconds of the CLI (min / median over repeats, for the
README example and the default), the in-process split (compose, advise, render), and the catalog
parse time with each loader.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "70b_budget": ["model=llama-3.1-70b", "data.rows=20000", "budget.usd=100"],
    "default_8b": [],
}


def cli_wall_s(args: list[str], repeats: int) -> dict[str, float]:
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "sweep.cli", "advise", *args], cwd=ROOT, check=True, capture_output=True
        )
        walls.append(time.perf_counter() - t0)
    return {"min_s": round(min(walls), 3), "median_s": round(statistics.median(walls), 3)}


def in_process_s(args: list[str]) -> dict[str, float]:
    from advisor.config.schema import RunConfig
    from advisor.estimator.advise import advise
    from advisor.estimator.render import render_advise
    from sweep.compose import compose, given_keys

    t0 = time.perf_counter()
    d = compose("advise", args)
    t1 = time.perf_counter()
    cfg = RunConfig.from_dict(d)
    doc = advise(cfg, ("full", "lora", "qlora"), given_keys(args))
    t2 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        render_advise(doc)
    t3 = time.perf_counter()
    return {"compose_s": round(t1 - t0, 3), "advise_s": round(t2 - t1, 3), "render_s": round(t3 - t2, 3)}


def catalog_parse_s(loader: type, repeats: int) -> float:
    files = sorted((ROOT / "conf").glob("*/*.yaml"))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for f in files:
            with open(f) as fh:
                yaml.load(fh, Loader=loader)
        best = min(best, time.perf_counter() - t0)
    return round(best, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    out = {
        "cli_wall": {name: cli_wall_s(args, a.repeats) for name, args in EXAMPLES.items()},
        "in_process": {name: in_process_s(args) for name, args in EXAMPLES.items()},
        "catalog_parse_s": {
            "SafeLoader (baseline)": catalog_parse_s(yaml.SafeLoader, a.repeats),
            "CSafeLoader": catalog_parse_s(yaml.CSafeLoader, a.repeats) if yaml.__with_libyaml__ else None,
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

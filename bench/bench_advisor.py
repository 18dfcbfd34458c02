"""How many advise rows per second `advisor.estimator.estimate.estimate` produces.

    .venv/bin/python bench/bench_advisor.py [--n 12000]

Builds N distinct configurations (every catalog model × method × rank × sequence length × micro-batch
× GPU, cycled), then times, in one run: the estimator as used (per-model quantities cached across
calls) and its baseline with every cache cleared before each call (first-call cost). Prints both.
Target (issue 2): ≥ 10,000 estimates in under a second.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from advisor.config import catalog
from advisor.config.schema import from_names
from advisor.estimator import (
    activations,
    arch,
    memory,
    params,
    static,
    timing,
)
from advisor.estimator.estimate import estimate

CACHED = [
    memory._FIXED,
    arch.traits,
    arch.dims,
    params.linear_layers,
    params.param_split,
    params.targeted,
    params._lora_trainable,
    params.n_trainable,
    memory._layer_total,
    memory._layer_const,
    memory._head_total,
    activations.layer_bytes_per_token,
    static._q4_linear_bytes,
    static._trainable_tensors,
    static._large_persistent_tensors,
    timing._quantile_grid,
    timing.expected_padded,
]


def clear_caches() -> None:
    for f in CACHED:
        f.clear() if isinstance(f, dict) else f.cache_clear()


def configs(n: int) -> list:
    models = [m for m in catalog.models() if m != "demo-base"]
    gpus = ["a100-80gb", "h100-sxm", "l40s", "rtx-4090", "a10g"]
    bases = [from_names(m, meth, g) for m in models for meth in ("full", "lora", "qlora") for g in gpus]
    knobs = itertools.product((8, 16, 32, 64), (512, 1024, 2048, 4096), (1, 2, 4, 8))
    out = []
    for (r, seq, mb), base in zip(itertools.cycle(list(knobs)), itertools.cycle(bases)):
        method = {"r": r} if base.method.is_adapter else {}
        out.append(base.replace(method=method, train={"seq_len": seq, "micro_batch_size": mb}))
        if len(out) == n:
            return out
    return out


def run(cfgs: list, clear: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) — CPU time is what other jobs on the machine
    cannot inflate."""
    t0, c0 = time.perf_counter(), time.process_time()
    for cfg in cfgs:
        if clear:
            clear_caches()
        estimate(cfg)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12000, help="configurations to estimate")
    n = ap.parse_args().n
    cfgs = configs(n)
    run(cfgs[:200], clear=False)  # import-time warm-up
    base_n = max(1, n // 20)
    (b_wall, b_cpu) = run(cfgs[:base_n], clear=True)
    clear_caches()
    (wall, cpu) = run(cfgs, clear=False)
    print(
        f"baseline (caches cleared per call): {base_n / b_wall:,.0f} estimates/s wall, "
        f"{base_n / b_cpu:,.0f}/s CPU ({base_n} configs)"
    )
    print(
        f"estimate (per-model caches):        {n / wall:,.0f} estimates/s wall, {n / cpu:,.0f}/s CPU "
        f"({n} configs in {wall:.3f} s wall, {cpu:.3f} s CPU; {len({c.model for c in cfgs})} models)"
    )


if __name__ == "__main__":
    main()

"""Measure this CPU's dense matmul throughput: the advisor's `gpu=cpu` throughput prior.

`ensure_cpu_throughput(path)` returns outputs/cpu-throughput.json, measuring it first when missing:
{"bf16_tflops", "fp32_tflops", "measured": ISO date, "cores", "matmul_n", "seconds"}. Each dtype runs
square matmuls of MATMUL_N for about SECONDS_PER_DTYPE after one warm-up call; TFLOP/s = 2·n³ × calls /
elapsed. `python -m runners.cpu_probe [PATH] [--force]` runs it by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

MATMUL_N = 1024  # square matmul size (elements per side): big enough to reach the BLAS steady state
SECONDS_PER_DTYPE = 1.5  # measuring time per dtype (s)
DEFAULT_PATH = Path("outputs/cpu-throughput.json")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def matmul_tflops(dtype, n: int, seconds: float) -> float:
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up
    calls, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return 2 * n**3 * calls / elapsed / 1e12


def measure(n: int | None = None, seconds: float | None = None) -> dict:
    import torch

    n, seconds = n or MATMUL_N, seconds or SECONDS_PER_DTYPE
    t0 = time.perf_counter()
    out = {
        "bf16_tflops": round(matmul_tflops(torch.bfloat16, n, seconds), 5),
        "fp32_tflops": round(matmul_tflops(torch.float32, n, seconds), 5),
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cores": _cores(),
        "torch_threads": torch.get_num_threads(),
        "matmul_n": n,
    }
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def ensure_cpu_throughput(path: Path = DEFAULT_PATH, force: bool = False) -> dict:
    """The cached measurement at `path`, measured (and written atomically) when missing or unreadable."""
    path = Path(path)
    if not force:
        try:
            cached = json.loads(path.read_text())
            if cached.get("bf16_tflops") and cached.get("fp32_tflops"):
                return cached
        except (OSError, ValueError):
            pass
    result = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.cpu_probe", description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH, help="where to write the JSON")
    ap.add_argument("--force", action="store_true", help="measure again even when the file exists")
    args = ap.parse_args(argv)
    print(json.dumps(ensure_cpu_throughput(args.path, args.force), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

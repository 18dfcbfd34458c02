"""This machine's CPU as a Device, from runners/cpu_probe.py's measurement (outputs/cpu-throughput.json).

Without a measurement (advise before the first sweep) the ceilings fall back to priors per core
(a server core of this class: ~0.2 TFLOP/s bf16 with AMX/AVX-512 BF16, 10 GB/s streaming, 15 µs host
per op) and the row says so (`throughput_source`).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from advisor.config.catalog import repo_root
from advisor.estimator.steptime.device import CpuGemm, Device

PRIOR_TFLOPS_PER_CORE = 0.02  # conservative bf16 matmul TFLOP/s per core without a probe
PRIOR_STREAM_PER_CORE = 5e9  # bytes/s per core
PRIOR_HOST_S = 15e-6


@functools.lru_cache(maxsize=1)
def probe() -> dict[str, Any] | None:
    """outputs/cpu-throughput.json written by runners/cpu_probe.py, if present and current."""
    try:
        d = json.loads((repo_root() / "outputs" / "cpu-throughput.json").read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _gemm(d: dict[str, Any]) -> CpuGemm:
    return CpuGemm(float(d["rate"]), float(d["stream"]), float(d["fixed_s"]))


def ceilings(p: dict[str, Any] | None, cores: int, method: str) -> Device:
    """The CPU Device for runs of `method` (host cost per op differs: PEFT's Python per adapter)."""
    if not p or not p.get("gemm") or not p.get("host"):
        rate = PRIOR_TFLOPS_PER_CORE * cores * 1e12
        tf = float((p or {}).get("bf16_tflops") or 0.0)
        if tf:
            rate = tf * 1e12
        g = CpuGemm(rate, PRIOR_STREAM_PER_CORE * cores, 5e-6)
        return Device(
            name="cpu",
            gemm16=rate,
            gemm32=rate / 2,
            attn_fwd=rate / 10,
            attn_bwd=rate / 10,
            bandwidth=PRIOR_STREAM_PER_CORE * cores,
            kernel_s=0.0,
            host_s=dict.fromkeys(("fwd", "bwd", "rec", "opt", "view"), PRIOR_HOST_S),
            overlap=False,
            causal_skip=False,
            cpu_gemm={"16": g, "32": CpuGemm(rate / 2, g.stream, g.fixed_s)},
            source="prior (no outputs/cpu-throughput.json yet)"
            if not tf
            else "measured matmul; other ceilings prior",
        )
    host = p["host"].get("qlora" if method == "qlora" else "lora" if method == "lora" else "full")
    host = host or p["host"]["full"]
    att = p["attention"]
    stream16 = tuple((float(b), float(r)) for b, r in p["stream"]["16"])
    stream32 = tuple((float(b), float(r)) for b, r in p["stream"]["32"])
    return Device(
        name="cpu",
        gemm16=_gemm(p["gemm"]["16"]).rate,
        gemm32=_gemm(p["gemm"]["32"]).rate,
        attn_fwd=float(att["fwd"]["rate"]),
        attn_bwd=float(att["bwd"]["rate"]),
        bandwidth=stream16[-1][1],
        kernel_s=0.0,
        host_s={
            "fwd": float(host["fwd"]),
            "rec": float(host["fwd"]),
            "bwd": float(host["bwd"]),
            "opt": float(host["bwd"]),
            "view": float(p["host"]["view"]),
        },
        overlap=False,
        causal_skip=False,
        cpu_gemm={"16": _gemm(p["gemm"]["16"]), "32": _gemm(p["gemm"]["32"])},
        cpu_stream=stream16,
        cpu_stream32=stream32,
        attn_fixed_s=(float(att["fwd"]["fixed_s"]), float(att["bwd"]["fixed_s"])),
        cpu_attention={
            key: {ph: _attn_fit(att[key][ph]) for ph in ("fwd", "bwd")} for key in ("16", "32") if key in att
        },
        optimizer_rate={k: float(v) for k, v in (p.get("optimizer") or {}).items()},
        dequant_rate=float(p.get("dequant") or 0.0),
        rng_rate=float(p.get("rng") or 0.0),
        source=f"measured {p.get('measured', '')}".strip(),
    )


def _attn_fit(fit: dict[str, Any]) -> tuple[float, float, float]:
    """(FLOP/s, bytes/s, fixed s) of one attention fit (a dropped term: an infinite rate)."""
    return float(fit["rate"]), float(fit.get("stream") or 1e18), float(fit["fixed_s"])


def cpu_ceilings(method: str) -> Device:
    from advisor.config.schema import machine_cores

    return ceilings(probe(), machine_cores(), method)

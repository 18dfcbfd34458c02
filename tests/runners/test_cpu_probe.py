"""The CPU probe measures this machine for the step-time model (real matmuls, GEMMs by shape, streaming
ops by size, the host cost per op of tiny real models, attention, the fused optimizer, NF4
dequantization, disk and imports), caches the JSON the advisor reads, and re-measures on demand or
when the cache is from an older probe."""

from __future__ import annotations

import json

import pytest

from runners import cpu_probe


@pytest.fixture
def quick(monkeypatch):
    """Short measuring windows, and the import timing of a light module (the same subprocess
    mechanism, seconds fewer)."""
    monkeypatch.setattr(cpu_probe, "SECONDS_PER_DTYPE", 0.05)
    monkeypatch.setattr(cpu_probe, "SECONDS_PER_POINT", 0.005)
    monkeypatch.setattr(cpu_probe, "MATMUL_N", 128)
    monkeypatch.setattr(cpu_probe, "IMPORTS", ("json", "json, csv"))
    monkeypatch.setattr(cpu_probe, "GEMM_SHAPES", ((64, 64, 64), (256, 64, 64), (64, 16, 256), (16, 64, 128)))
    monkeypatch.setattr(cpu_probe, "STREAM_BYTES", (2**14, 2**18))
    monkeypatch.setattr(cpu_probe, "ATTENTION_SHAPES", ((2, 2, 32, 16), (2, 2, 64, 16)))


@pytest.fixture
def one_thread():
    """One torch thread: the probe then times by the thread's CPU clock (a demo cell's setting), so
    other jobs on this shared machine do not inflate what it measures."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("quick", "one_thread")
def test_probe_measures_caches_and_forces(tmp_path):
    path = tmp_path / "outputs" / "cpu-throughput.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"bf16_tflops": 1.0, "fp32_tflops": 1.0}))  # a version-1 probe
    first = cpu_probe.ensure_cpu_throughput(path)
    on_disk = json.loads(path.read_text())
    assert on_disk == first
    assert cpu_probe.current(first) and first["version"] == cpu_probe.PROBE_VERSION
    # a real measurement of a CPU: positive, and below 100 TFLOP/s
    assert 0 < first["fp32_tflops"] < 100 and 0 < first["bf16_tflops"] < 100
    assert first["cores"] >= 1 and first["measured"].startswith("20")
    g = first["gemm"]["16"]
    assert g["rate"] > 0 and g["stream"] > 0 and g["fixed_s"] >= 0
    assert len(first["gemm"]["points"]) == 2 * len(cpu_probe.GEMM_SHAPES)
    assert all(rate > 0 for _, rate in first["stream"]["16"])
    for method in ("full", "lora", "qlora"):  # seconds of host work per op: µs, not ms
        assert 1e-7 < first["host"][method]["fwd"] < 1e-3 and 1e-7 < first["host"][method]["bwd"] < 1e-3
    assert first["attention"]["fwd"]["rate"] > 0 and first["dequant"] > 0
    for key in ("16", "32"):  # SDPA per dtype: FLOPs, per-row bytes and a fixed cost per phase
        for ph in ("fwd", "bwd"):
            fit = first["attention"][key][ph]
            assert fit["rate"] > 0 and fit["stream"] > 0 and fit["fixed_s"] >= 0
    assert first["torch_threads"] == 1 and first["clock"] == "thread CPU time" and first["rng"] > 0
    assert first["disk"]["write"] > 0 and first["imports"]["base"] > 0
    assert cpu_probe.ensure_cpu_throughput(path) == first  # cached: no second measurement
    assert not cpu_probe.current({"bf16_tflops": 1.0, "fp32_tflops": 1.0})


@pytest.mark.slow
@pytest.mark.usefixtures("quick")
def test_forced_or_unreadable_cache_is_measured_again(tmp_path):
    path = tmp_path / "cpu-throughput.json"
    path.write_text("{not json")
    first = cpu_probe.ensure_cpu_throughput(path)
    assert cpu_probe.current(first)
    again = cpu_probe.ensure_cpu_throughput(path, force=True)
    assert again["measured"] >= first["measured"] and not path.with_name(path.name + ".tmp").exists()

"""The CPU throughput probe measures real matmuls, caches the JSON the advisor reads, and re-measures on demand."""

from __future__ import annotations

import json

from runners import cpu_probe


def test_probe_measures_caches_and_forces(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_probe, "SECONDS_PER_DTYPE", 0.2)
    monkeypatch.setattr(cpu_probe, "MATMUL_N", 256)
    path = tmp_path / "outputs" / "cpu-throughput.json"
    first = cpu_probe.ensure_cpu_throughput(path)
    on_disk = json.loads(path.read_text())
    assert on_disk == first
    assert set(first) >= {"bf16_tflops", "fp32_tflops", "measured", "cores"}
    # a real measurement of a CPU: positive, and below 100 TFLOP/s
    assert 0 < first["fp32_tflops"] < 100 and 0 < first["bf16_tflops"] < 100
    assert first["cores"] >= 1 and first["measured"].startswith("20")
    assert cpu_probe.ensure_cpu_throughput(path) == first  # cached: no second measurement
    again = cpu_probe.ensure_cpu_throughput(path, force=True)
    assert again["measured"] >= first["measured"] and not path.with_name(path.name + ".tmp").exists()


def test_unreadable_cache_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_probe, "SECONDS_PER_DTYPE", 0.1)
    monkeypatch.setattr(cpu_probe, "MATMUL_N", 128)
    path = tmp_path / "cpu-throughput.json"
    path.write_text("{not json")
    assert cpu_probe.ensure_cpu_throughput(path)["fp32_tflops"] > 0

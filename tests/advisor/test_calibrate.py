"""advisor.estimator.calibrate: fitting factors from trial records and applying them to advise rows.

The records here are hand-made inputs for the arithmetic (round numbers whose geometric means are
known), not measurements; the demonstration on real CPU sweep records is in bench/bench_calibrate.py.
"""

from __future__ import annotations

import json
import math

import pytest

from advisor.config.schema import from_names
from advisor.errors import ConfigError
from advisor.estimator.calibrate import ANY_METHOD, as_calibration, fit, load, read_records
from advisor.estimator.estimate import estimate
from advisor.trials.record import TrialRecord


def _record(
    cell, method="lora", gpu="cpu", tps=(100.0, 100.0), alloc=(3.0, 3.0), status="complete", static=1.0
):
    """estimated vs measured tokens/s and allocated GiB (static part = weights + optimizer = `static`)."""
    (e_tps, m_tps), (e_alloc, m_alloc) = tps, alloc
    est = {
        "method": method,
        "gpu": gpu,
        "memory": {
            "weights_gib": static * 0.75,
            "optimizer_gib": static * 0.25,
            "allocated_gib": e_alloc,
            "reserved_gib": e_alloc,
            "device_gib": e_alloc + 0.5,
        },
        "time": {
            "tokens_per_s": e_tps,
            "hours": 1.0,
            "wall_s": {"load": 10.0, "train": 3580.0, "eval": 10.0},
        },
        "cost": {"usd": 2.0},
    }
    meas = {
        "tokens_per_s": m_tps,
        "allocated_gib": m_alloc,
        "rss_gib": m_alloc + 0.5,
        "wall_s": {"load": 20.0, "train": 1.0, "eval": 10.0},
    }
    return {"cell_id": cell, "status": status, "estimate": est, "measured": meas}


def _fit(*records: dict):
    return fit([TrialRecord.from_dict(r) for r in records])


def test_geometric_mean_count_and_spread():
    cal = _fit(_record("a", tps=(100, 50)), _record("b", tps=(100, 200)))
    f = cal.factors[("cpu", "lora")]["time_efficiency"]
    assert f.value == pytest.approx(1.0) and f.count == 2 and f.spread == pytest.approx(2.0)
    assert cal.factors[("cpu", "lora")]["load_ratio"].value == pytest.approx(2.0)


def test_apply_scales_time_cost_and_the_dynamic_memory():
    cal = _fit(_record("a", tps=(100, 50), alloc=(3.0, 5.0)))  # half the speed, twice the dynamic part
    row = _record("x", tps=(100, 100), alloc=(3.0, 3.0))["estimate"] | {"calibrated": []}
    out = cal.apply(row)
    assert out["time"]["tokens_per_s"] == 50
    assert out["time"]["wall_s"] == {"load": 20.0, "train": 7160.0, "eval": 10.0}
    assert out["time"]["hours"] == pytest.approx(7190 / 3600, abs=1e-4)
    assert out["cost"]["usd"] == pytest.approx(2.0 * 7190 / 3600, abs=0.01)
    assert out["memory"]["allocated_gib"] == pytest.approx(1.0 + 2 * 2.0)  # static + 2 × dynamic
    assert out["memory"]["device_gib"] == pytest.approx(5.5)  # measured overhead equals the estimate's
    assert {"time.hours", "time.tokens_per_s", "cost.usd", "memory.allocated_gib"} <= set(out["calibrated"])
    assert row["time"]["tokens_per_s"] == 100  # the input row is not modified


def test_method_fallback_pools_the_gpu_and_never_crosses_gpus():
    cal = _fit(_record("a", method="full", tps=(100, 25)))
    assert ("cpu", ANY_METHOD) in cal.factors
    lora = cal.apply(_record("x", method="lora")["estimate"])
    assert lora["time"]["tokens_per_s"] == 25  # pooled cpu factor
    other = _record("y", gpu="a100-80gb")["estimate"]
    assert cal.apply(other) is other and "calibrated" not in other


def test_unfinished_records_are_ignored(tmp_path):
    recs = [_record("a", status="failed", tps=(100, 1)), _record("b", status="oom"), {"cell_id": "baseline"}]
    (tmp_path / "r.json").write_text(json.dumps(recs))
    with pytest.raises(ConfigError, match=r"advisor.calibration=.*none usable"):
        load(tmp_path / "r.json")


def test_read_sweep_dir_jsonl_and_bad_paths(tmp_path):
    trials = tmp_path / "sweep" / "trials"
    trials.mkdir(parents=True)
    (trials / "c1.json").write_text(json.dumps(_record("c1", tps=(100, 50))))
    (trials / "baseline.json").write_text(json.dumps({"cell_id": "baseline", "status": "complete"}))
    assert [r.cell_id for r in read_records(tmp_path / "sweep")] == ["c1"]
    lines = tmp_path / "r.jsonl"
    lines.write_text("\n".join(json.dumps(_record(c, tps=(100, 50))) for c in "ab") + "\n")
    assert load(lines).records == 2
    with pytest.raises(ConfigError, match="advisor.calibration='.*nope'"):
        load(tmp_path / "nope")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        load(tmp_path / "bad.json")
    (tmp_path / "odd.json").write_text(json.dumps([_record("a", status="done")]))
    with pytest.raises(
        ConfigError, match=r"advisor.calibration='.*odd.json': record 1: status='done': unknown status"
    ):
        load(tmp_path / "odd.json")


def test_a_records_gpu_and_method_are_its_cells():
    """With a config, the record's own cell (coordinates, else config) decides the group, not the
    estimate row's copy of it."""
    rec = _record("a", method="lora", tps=(100, 50)) | {
        "coords": {"method": "qlora"},
        "config": {"gpu": {"name": "a10"}, "method": {"name": "qlora"}},
    }
    assert set(_fit(rec).factors) == {("a10", "qlora"), ("a10", ANY_METHOD)}


def test_estimate_applies_a_calibration_path(tmp_path):
    cfg = from_names("smollm2-135m", "lora", "cpu", train={"seq_len": 256})
    plain = estimate(cfg)
    rec = {
        "cell_id": "c",
        "status": "complete",
        "estimate": plain,
        "measured": {"tokens_per_s": plain["time"]["tokens_per_s"] / 4},
    }
    path = tmp_path / "records.json"
    path.write_text(json.dumps([rec]))
    row = estimate(cfg, calibration=str(path))
    # apply() rounds tokens/s to 0.1: within half of that (and float error) of a quarter of the prior
    assert row["time"]["tokens_per_s"] == pytest.approx(plain["time"]["tokens_per_s"] / 4, abs=0.05 + 1e-9)
    assert "time.hours" in row["calibrated"] and row["time"]["hours"] > plain["time"]["hours"]
    assert as_calibration(str(path)) is as_calibration(str(path))  # cached while unchanged
    assert math.isclose(row["memory"]["allocated_gib"], plain["memory"]["allocated_gib"])  # no memory data

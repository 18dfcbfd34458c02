"""docs/time-model.md's CPU table is what bench/steptime_cpu.py derives today from the recorded
measurement (docs/time-model-cpu.json: step times, batch shapes, profile and the probe they were
predicted with). No timing is asserted here: the measurement itself needs a quiet machine."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("steptime_cpu", ROOT / "bench" / "steptime_cpu.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("steptime_cpu", mod)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_table_is_current():
    bench = _bench()
    data = json.loads(bench.DATA.read_text())
    assert {(c["model"], c["method"]) for c in data["cases"]} == {
        (m, k) for m in ("demo-base", "llama-100m") for k in ("full", "lora", "qlora")
    }
    rows = bench.table_rows(data, trace=False)  # the trace column as recorded (tracing is slow)
    table = bench.render({"probe_measured": data.get("probe_measured"), "rows": rows})
    assert bench.DOC.read_text() == bench.doc_text(table), (
        "regenerate: .venv/bin/python bench/steptime_cpu.py --write"
    )

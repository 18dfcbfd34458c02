"""docs/time-ground-truth.md is what bench/time_ground_truth.py prints today, and the step-time model
beats both the model it replaced and the back-of-envelope rule on those published runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "time_ground_truth", ROOT / "bench" / "time_ground_truth.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("time_ground_truth", mod)
    spec.loader.exec_module(mod)
    return mod


def test_doc_is_current():
    bench = _bench()
    doc = (ROOT / "docs" / "time-ground-truth.md").read_text()
    assert doc == bench.HEAD + bench.render(), (
        "regenerate: .venv/bin/python bench/time_ground_truth.py --write"
    )


def test_after_beats_before_and_the_rule():
    rows = _bench().rows()
    err = {k: [abs(r[f"{k}_err"]) for r in rows] for k in ("after", "before", "rule")}
    for other in ("before", "rule"):
        assert median(err["after"]) < median(err[other]), other
        assert max(err["after"]) < max(err[other]), other

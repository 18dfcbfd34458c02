"""The report's "Why the adapters trail full fine-tuning": each point computed from the sweep's records."""

from __future__ import annotations

from reports.build import build_report
from tests.reports.report_records import cpu_record, write_sweep

HEADING = "Why the adapters trail full fine-tuning"


def _rec(method: str, r: int | None, mid: float, end: float, rows: int = 400, **kw):
    return cpu_record(method, r, rows, loss=end, eval_curve=[[10, 0.5, mid], [20, 1.0, end]], **kw)


def _report(tmp_path, recs, baseline=10.0) -> str:
    md = build_report(write_sweep(tmp_path / "s", recs, baseline=baseline))[0].read_text()
    return " ".join(md.split())


def test_rank_pace_rate_and_share_from_the_records(tmp_path):
    recs = [
        _rec("full", None, 3.0, 1.0),
        _rec("lora", 4, 7.0, 6.0),  # gain (10-6)/(10-1) = 44 %
        _rec("lora", 16, 6.0, 5.0),  # 56 %: 4x the rank recovers (0.556-0.444)/(1-0.444) = 20 % of the gap
        _rec("lora", 16, 2.0, 1.5, rows=100),  # another dataset size: not compared with full at 400 rows
    ]
    flat = _report(tmp_path, recs)
    assert HEADING in flat
    assert (
        "At 400 rows the best adapter, LoRA r=16 · 400 rows, reaches 56 % of full fine-tuning's gain" in flat
    )
    assert "Rank: LoRA reaches r=4 44 %, r=16 56 % of full fine-tuning's gain" in flat
    assert "a larger rank alone would not close the gap (4× the rank recovered 20 % of it)" in flat
    # pace: 1.0 loss per half run = 2.0 per run; 4.0 above full's 1.0 → 1 + 4/2 = 3.0× the steps
    assert "LoRA r=16 · 400 rows 6.000 → 5.000 (≥ 3.0× the steps to reach 1.000 at that pace)" in flat
    assert "LoRA r=4 · 400 rows 7.000 → 6.000 (≥ 3.5× the steps" in flat
    assert "would close the gap only at 3.0× the training or more" in flat
    assert "not tuned by this sweep" in flat
    assert "LoRA r=16 · 100 rows 2.000" not in flat


def test_rank_that_recovers_the_gap_and_adapters_that_stopped_improving(tmp_path):
    recs = [
        _rec("full", None, 3.0, 1.0),
        _rec("lora", 4, 5.5, 5.5),  # 50 %, flat: no longer improving
        _rec("lora", 16, 2.8, 2.8),  # 80 %: 4x the rank recovered 60 % of the gap
    ]
    flat = _report(tmp_path, recs)
    assert "rank limits LoRA here: a larger r is worth a cell" in flat
    assert "(no longer improving)" in flat
    assert "the adapters had stopped improving: more steps would not close the gap" in flat


def test_no_section_when_adapters_are_close_or_there_is_no_full_reference(tmp_path):
    close = [_rec("full", None, 3.0, 1.0), _rec("lora", 16, 2.0, 1.5)]  # (10-1.5)/9 = 94 %
    assert HEADING not in _report(tmp_path / "a", close)
    no_full = [_rec("lora", 4, 7.0, 6.0), _rec("lora", 16, 6.0, 5.0)]
    assert HEADING not in _report(tmp_path / "b", no_full)
    no_baseline = [_rec("full", None, 3.0, 1.0), _rec("lora", 16, 6.0, 5.0)]
    assert HEADING not in _report(tmp_path / "c", no_baseline, baseline=None)

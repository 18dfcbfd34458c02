"""Records are written atomically and storage passwords never reach sweep.json."""

from __future__ import annotations

import os

import pytest

from sweep import records


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    p = tmp_path / "trials" / "abc.json"
    records.write_json(p, {"status": "complete"})

    with pytest.raises(UnicodeEncodeError):  # fails inside the write, after the temp file exists
        records.write_atomic(p, '{"status": "half' + "\ud800")
    assert records.read_json(p) == {"status": "complete"}
    assert os.listdir(p.parent) == ["abc.json"]  # no temporary left behind


def test_redact_url_removes_passwords_only():
    assert records.redact_url("postgresql://tw:s3cret@db:5432/x") == "postgresql://tw:***@db:5432/x"
    assert records.redact_url("postgresql://tw@db/x") == "postgresql://tw@db/x"
    assert records.redact_url("sqlite:///tmp/a/study.db") == "sqlite:///tmp/a/study.db"


def test_results_row_flattens_estimate_and_measured():
    rec = records.new_record(
        "abc", ["method=lora"], None, {"method": "lora", "memory": {"device_gib": 1.5}, "cost": {"usd": 2.0}}
    )
    rec.update(
        status="complete",
        measured={"eval_loss": 1.2, "wall_s": {"train": 3.0}, "eval_curve": [[1, 1.0, 1.2]]},
    )
    row = records.results_row(rec)
    assert row["est.memory.device_gib"] == 1.5 and row["est.cost.usd"] == 2.0
    assert (
        row["measured.eval_loss"] == 1.2
        and row["measured.wall_s.train"] == 3.0
        and row["measured.evals"] == 1
    )

"""Trial records (advisor.trials): written atomically, read back typed and validated, older versions
still read; storage passwords never reach sweep.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from advisor.trials.record import RECORD_VERSION, Attempt, RecordError, TrialRecord
from advisor.trials.store import read_json, read_records, write_atomic, write_json
from sweep.records import redact_url

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SWEEP_ALL = Path(__file__).resolve().parents[1] / "reports" / "fixtures" / "sweep_all"


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    p = tmp_path / "trials" / "abc.json"
    write_json(p, {"status": "complete"})

    with pytest.raises(UnicodeEncodeError):  # fails inside the write, after the temp file exists
        write_atomic(p, '{"status": "half' + "\ud800")
    assert read_json(p) == {"status": "complete"}
    assert os.listdir(p.parent) == ["abc.json"]  # no temporary left behind


def test_redact_url_removes_passwords_only():
    assert redact_url("postgresql://tw:s3cret@db:5432/x") == "postgresql://tw:***@db:5432/x"
    assert redact_url("postgresql://tw@db/x") == "postgresql://tw@db/x"
    assert redact_url("sqlite:///tmp/a/study.db") == "sqlite:///tmp/a/study.db"


def _config(method: str, r: int, rows: int, seed: int = 0) -> dict:
    return {"method": {"name": method, "r": r}, "data": {"rows": rows}, "gpu": {"name": "cpu"}, "seed": seed}


def test_a_record_names_its_coordinates_once_and_round_trips():
    rec = TrialRecord(
        "abc",
        {"method": "lora", "method.r": 16, "seed": 1},
        _config("lora", 16, 500, seed=1),
        status="complete",
        attempts=[
            Attempt(
                3, "2025-01-01T00:00:00Z", "2025-01-01T00:01:00Z", "complete", lr=2e-4, evals=[[1, 1.0, 2.5]]
            )
        ],
    )
    d = rec.to_dict()
    assert d["version"] == RECORD_VERSION and d["coords"] == {"method": "lora", "method.r": 16, "seed": 1}
    assert d["overrides"] == ["method=lora", "method.r=16", "seed=1"]  # written for people, never read
    for key in (
        "cell_id",
        "overrides",
        "config",
        "status",
        "reason",
        "estimate",
        "measured",
        "attempts",
        "provenance",
    ):
        assert key in d  # design.md's keys
    back = TrialRecord.from_dict(json.loads(json.dumps(d)))
    assert back == rec
    # values: the coordinate when the cell has one, else the resolved config; rows is not a coordinate here
    assert (back.method, back.r, back.rows, back.seed) == ("lora", 16, 500, 1)
    assert back.group_key == "method.r=16 method=lora"  # without the seed: one configuration
    d["overrides"] = ["method.r=64"]  # overrides are derived: the coordinates come from `coords`
    assert TrialRecord.from_dict(d).r == 16


def test_full_fine_tuning_has_no_rank_even_when_its_config_holds_one():
    rec = TrialRecord("f", {"method": "full", "data.rows": 100}, _config("full", 16, 100))
    assert rec.method == "full" and rec.r is None and rec.rows == 100


def test_bad_records_name_the_file_the_key_and_what_is_allowed():
    with pytest.raises(RecordError) as e:
        TrialRecord.from_dict(
            {"cell_id": "", "status": "done", "attempts": [{"status": "meh"}], "config": [1], "version": 99},
            "trials/x.json",
        )
    text = "\n".join(e.value.problems)
    for part in (
        "trials/x.json: version=99",
        "trials/x.json: cell_id=''",
        "trials/x.json: status='done': unknown status (allowed: pending, running, complete",
        "trials/x.json: attempts[0].status='meh'",
        "trials/x.json: config=[1]: must be a mapping or null",
    ):
        assert part in text, part


def test_round_1_records_still_read():
    """Records as round 1's sweep wrote them (no version; overrides strings, coords, a top-level seed)."""
    done = TrialRecord.from_dict(json.loads((FIXTURES / "round1_complete.json").read_text()))
    assert done.version == RECORD_VERSION and done.cell_id == "d8daa9131e"
    assert done.coords == {"method": "lora", "method.r": 4, "data.rows": 24, "seed": 1}
    assert (done.method, done.r, done.rows, done.seed, done.lr) == ("lora", 4, 24, 1, 2e-4)
    (att,) = done.attempts
    assert (att.trial_number, att.status, att.cpu_s, att.evals) == (
        3,
        "complete",
        120.5,
        [[3, 0.5, 2.9], [6, 1.0, 2.7]],
    )
    skipped = TrialRecord.from_dict(json.loads((FIXTURES / "round1_infeasible.json").read_text()))
    assert (skipped.status, skipped.r, skipped.attempts[0].started) == ("infeasible", None, None)
    # without `coords` (what the sweep wrote before it added them): the override strings, typed
    d = json.loads((FIXTURES / "round1_complete.json").read_text())
    del d["coords"]
    d["overrides"] = [*d["overrides"], "train.lr=1e-05", "method.target_modules=[q_proj,v_proj]"]
    coords = TrialRecord.from_dict(d).coords
    assert coords["method.r"] == 4 and coords["train.lr"] == 1e-05
    assert coords["method.target_modules"] == ["q_proj", "v_proj"]


def test_the_report_fixtures_records_still_read():
    """tests/reports/fixtures/sweep_all: overrides as a mapping, hand-picked cell ids, no version."""
    records, problems = read_records(SWEEP_ALL)
    assert problems == [] and len(records) == 15
    by_id = {r.cell_id: r for r in records}
    assert (by_id["c04lo16x5000"].method, by_id["c04lo16x5000"].r, by_id["c04lo16x5000"].rows) == (
        "lora",
        16,
        5000,
    )
    assert by_id["c00fu0x1000"].r is None and by_id["c14ql64x10000"].status == "running"


def test_unreadable_files_are_reported_not_fatal(tmp_path):
    write_json(tmp_path / "trials" / "good.json", TrialRecord("good", {}, None).to_dict())
    (tmp_path / "trials" / "half.json").write_text('{"cell_id": "half", "sta')
    write_json(tmp_path / "trials" / "odd.json", {"cell_id": "odd", "status": "finished"})
    records, problems = read_records(tmp_path)
    assert [r.cell_id for r in records] == ["good"]
    # nothing in cells/ to rebuild them from: each named, with why and what was tried (issue 16)
    assert (
        problems[0].startswith("trials/half.json: not JSON") and "cells/half/ holds no result" in problems[0]
    )
    assert "odd.json: status='finished'" in problems[1]

"""Issue 16's machinery on hand-made sweep folders (fast; tests/sweep/test_integrity.py runs it end to
end on real sweeps): records rebuilt from their cell's files or named, the config comparison that
refuses a relabelling rerun, failure causes and their retries, storage URLs that cannot work."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from advisor.config.schema import from_names
from advisor.errors import ConfigError
from advisor.trials.record import Attempt, TrialRecord
from advisor.trials.store import load_record, read_baseline, read_records, save_record, write_json
from sweep.integrity import differences
from sweep.retry import MAX_TRIES, cause_of, lr_trial_done, retry_reason
from sweep.settings import settings_from
from sweep.study import make_pruner, open_study

CFG = from_names("demo-base", "lora", "cpu").to_dict()


def _cell_folder(d: Path, cid: str, coords: dict, status: str = "complete", loss: float = 1.25) -> dict:
    """plan.json's entry and the runner's files of one finished cell."""
    measured = {"eval_loss": loss, "usd": 0.001, "wall_s": {"load": 1.0, "train": 2.0, "eval": 0.5}}
    write_json(d / "cells" / cid / "result.json", {"status": status, "reason": None, "measured": measured})
    write_json(d / "cells" / cid / "config.json", CFG)
    return {
        "cell_id": cid,
        "assignment": [[k, v] for k, v in coords.items()],
        "config": CFG,
        "estimate": {"cost": {"usd": 0.002}},
        "status": "run",
        "reason": None,
        "lr_trials": 1,
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "sweep"
    cells = [
        _cell_folder(d, "aaaaaaaaaa", {"method": "full"}, loss=0.5),
        _cell_folder(d, "bbbbbbbbbb", {"method": "lora"}, loss=0.9),
    ]
    write_json(d / "plan.json", {"cells": cells})
    for c in cells:
        rec = TrialRecord(c["cell_id"], dict(c["assignment"]), CFG, status="complete")
        rec.measured = json.loads((d / "cells" / c["cell_id"] / "result.json").read_text())["measured"]
        save_record(d, rec)
    write_json(
        d / "cells" / "baseline" / "result.json", {"status": "complete", "measured": {"eval_loss": 9.0}}
    )
    return d


# -- records repair or refuse -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_text(p.read_text()[:40]),  # truncated
        lambda p: p.write_text(""),  # empty
        lambda p: p.write_bytes(b"\xff\xfe garbage"),  # not UTF-8
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "status": 3, "attempts": "x"})),
        lambda p: p.write_text("[" * 100_000),  # nested too deeply for json
    ],
    ids=["truncated", "empty", "binary", "wrong-types", "deep"],
)
def test_an_unreadable_record_is_rebuilt_from_its_cells_files(folder, damage):
    path = folder / "trials" / "aaaaaaaaaa.json"
    damage(path)
    records, problems = read_records(folder)
    assert problems == []
    rec = {r.cell_id: r for r in records}["aaaaaaaaaa"]
    assert rec.status == "complete" and rec.coords == {"method": "full"} and rec.measured["eval_loss"] == 0.5
    assert rec.estimate == {"cost": {"usd": 0.002}} and rec.repaired and rec.spent["wall_s"] == 3.5
    assert TrialRecord.from_dict(json.loads(path.read_text())).repaired == rec.repaired  # written back
    (kept,) = (folder / "trials" / "unreadable").iterdir()  # the damaged file, kept aside
    assert kept.name.startswith("aaaaaaaaaa.json.")


def test_the_coordinates_come_from_sweep_json_when_plan_json_is_gone(folder):
    meta = {"matrix": {"axes": {"method": ["full", "lora"]}, "exclude": []}, "base_config": CFG}
    write_json(folder / "sweep.json", meta)
    (folder / "plan.json").unlink()
    from advisor.trials.matrix import expand

    cells = {c.cell_id: c for c in expand(meta["matrix"], "lora", 1, 0)}
    cid = next(iter(cells))
    (folder / "cells" / "aaaaaaaaaa").rename(folder / "cells" / cid)
    (folder / "trials" / f"{cid}.json").write_text("{")
    rec = load_record(folder, cid)
    assert rec is not None and rec.coords == dict(cells[cid].coords) and rec.status == "complete"


def test_a_record_without_results_is_named_and_load_record_refuses(folder):
    (folder / "trials" / "bbbbbbbbbb.json").write_text('{"cell_id": ')
    (folder / "cells" / "bbbbbbbbbb" / "result.json").unlink()
    records, problems = read_records(folder)
    assert [r.cell_id for r in records] == ["aaaaaaaaaa"]
    assert problems and problems[0].startswith("trials/bbbbbbbbbb.json: not JSON")
    assert "cells/bbbbbbbbbb/ holds no result" in problems[0]
    with pytest.raises(ConfigError, match="bbbbbbbbbb.json: not JSON"):
        load_record(folder, "bbbbbbbbbb")


def test_a_newer_record_is_never_rebuilt_over(folder):
    path = folder / "trials" / "aaaaaaaaaa.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": 99}))
    _, problems = read_records(folder)
    assert "unknown record version" in problems[0] and json.loads(path.read_text())["version"] == 99


def test_an_unreadable_baseline_is_rebuilt(folder):
    (folder / "trials" / "baseline.json").write_text("{")
    base = read_baseline(folder)
    assert base is not None and base.measured == {"eval_loss": 9.0} and base.status == "complete"


# -- the config a measurement was made with -----------------------------------------------------------
def test_differences_name_what_changes_a_run_and_ignore_the_rest():
    new = from_names("demo-base", "lora", "cpu", train={"epochs": 5}, budget={"usd": 3.0}).to_dict()
    assert differences(CFG, new) == {"train.epochs": (3, 5)}  # the budget may change
    full = from_names("demo-base", "full", "cpu").to_dict()
    full_new = from_names("demo-base", "full", "cpu", train={"lr_adapter": 0.5}, lora={"r": 64}).to_dict()
    assert differences(full, full_new) == {}  # what full fine-tuning never reads
    seq = from_names("demo-base", "lora", "cpu", train={"seq_len": 64, "epochs": 9}).to_dict()
    assert set(differences(CFG, seq, baseline=True)) == {"train.seq_len"}  # the untrained base: no epochs


def test_sweep_rerun_takes_null_changed_or_failed():
    with pytest.raises(
        ConfigError, match=r"sweep.rerun='everything': unknown choice \(allowed: null, changed, failed\)"
    ):
        settings_from({"sweep": {"rerun": "everything"}})
    assert settings_from({"sweep": {"rerun": "changed"}}).rerun == "changed"


# -- failures retried when they can succeed now ---------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "reason", "cause"),
    [
        (
            "failed",
            "runner killed by SIGKILL (what the kernel's OOM killer sends) before writing result.json",
            "signal",
        ),
        ("failed", "runner exited with code -9 without writing result.json", "signal"),
        ("failed", "runner exited with code 139 without writing result.json", "crash"),
        ("failed", "data.path='/x.jsonl': file not found", "data"),
        ("failed", "/data/train.jsonl:3: missing field `output`", "data"),
        ("failed", "model.path='/models/x': folder not found", "model"),
        ("failed", "OSError: /models/x does not appear to have a file named config.json", "model"),
        ("failed", "stalled: no progress for 30 min at step 4", "stalled"),
        (
            "failed",
            "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 303872 vs 303760",
            "disk",
        ),
        ("failed", "OSError: [Errno 28] No space left on device", "disk"),
        ("failed", "ValueError: Target modules {'nope_proj'} not found in the base model", "error"),
        ("died", "worker host:1 stopped (no heartbeat for 61 s)", "died"),
        ("complete", None, None),
        ("interrupted", "interrupted by the user", None),
    ],
)
def test_each_failure_has_a_cause(status, reason, cause):
    assert cause_of(status, reason) == cause


def _att(status: str, reason: str | None = None, k: int = 0) -> Attempt:
    return Attempt(1, "t0", "t1", status, reason, lr_index=k, cause=cause_of(status, reason))


def test_retried_causes_run_again_until_their_tries_are_spent():
    killed = "runner killed by SIGKILL before writing result.json"
    rec = TrialRecord("c", {}, CFG, status="failed", attempts=[_att("failed", killed)])
    assert retry_reason(rec) == f"signal (try 2 of at most {MAX_TRIES})"
    assert lr_trial_done(rec.attempts, 0) is None
    rec.attempts += [_att("interrupted", "interrupted by the user")] + [_att("failed", killed)] * (
        MAX_TRIES - 1
    )
    assert retry_reason(rec) is None and lr_trial_done(rec.attempts, 0) is rec.attempts[-1]
    assert retry_reason(rec, force=True) == "sweep.rerun=failed (last: signal)"  # sweep.rerun=failed
    bug = TrialRecord("c", {}, CFG, status="failed", attempts=[_att("failed", "ValueError: NaN loss")])
    assert retry_reason(bug) is None  # the same config fails the same way
    done = TrialRecord("c", {}, CFG, status="complete", attempts=[_att("failed", killed), _att("complete")])
    assert retry_reason(done) is None and lr_trial_done(done.attempts, 0).status == "complete"


# -- storage URLs that cannot work -------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("nosuchdb://x/y", "not a storage URL this tunewise can use"),
        ("postgresql://me:secret@127.0.0.1:{port}/db", "cannot open the Optuna study there"),
        ("sqlite:////nonexistent-folder/sub/study.db", "cannot create or open that SQLite file"),
        ("CORRUPT", "is not a readable SQLite database"),
    ],
)
def test_a_storage_that_cannot_work_is_a_message(tmp_path, url, says):
    if url == "CORRUPT":
        (tmp_path / "study.db").write_bytes(b"SQLite format 2\0" + b"x" * 4000)
        url = f"sqlite:///{tmp_path / 'study.db'}"
    url = url.replace("{port}", str(_closed_port()))
    with pytest.raises(ConfigError) as e:
        open_study(url, "s", make_pruner("none", 1))
    text = "\n".join(e.value.problems)
    assert says in text and "secret" not in text

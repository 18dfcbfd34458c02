"""Issue 16: a sweep's results stay true through reruns, crashes and corrupt files — nothing stale,
nothing lost. Real runner, tiny real model (tests/sweep/conftest.py), no stubs.

The sweeps here are slow-marked (each runs real runner processes); tests/sweep/test_integrity_units.py
checks the same machinery on hand-made folders in the default suite. Each test names what it showed
before the fix: a rerun with another config printed "2 complete" and
relabelled the old measurements; a truncated record dropped the recommended cell from the report; a
new study.db ran finished cells again; `failed` was forever; the memory cap counted the libraries."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep.compose import compose
from tests.sweep.conftest import ROOT, base_overrides, env_for, load_records, tunewise


def _mtimes(d: Path) -> dict[str, int]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in sorted(d.glob("cells/*/result.json"))}


@pytest.fixture(scope="module")
def finished(tiny_assets, tmp_path_factory) -> Path:
    """A finished two-cell sweep (full and LoRA on 24 rows) with its baseline and report."""
    d = tmp_path_factory.mktemp("finished") / "sweep"
    out = tunewise(tiny_assets, base_overrides(tiny_assets, d, "matrix=t_small", "sweep.pruner=none"))
    assert out.returncode == 0, out.stderr[-3000:]
    return d


def _copy(finished: Path, tmp_path: Path) -> Path:
    d = tmp_path / "sweep"  # the same folder name: the same Optuna study name
    shutil.copytree(finished, d)
    return d


def _args(assets, d: Path, *extra: str) -> list[str]:
    return base_overrides(assets, d, "matrix=t_small", "sweep.pruner=none", *extra)


def _report(d: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweep.cli", "report", str(d)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def _recommendation(d: Path) -> str:
    text = (d / "report.md").read_text()
    return text.split("## Recommendation", 1)[1].split("\n\n", 2)[1]


# -- one config per folder --------------------------------------------------------------------------
@pytest.mark.slow
def test_a_rerun_with_another_config_is_refused_naming_the_keys(tiny_assets, finished, tmp_path):
    """Before: `train.epochs=5 train.lr_full=0.5` printed "sweep done: 2 complete" and the report
    labelled the old measurements with the new config."""
    d = _copy(finished, tmp_path)
    before = {p.name: p.read_bytes() for p in (d / "trials").glob("*.json")}
    for extra in ([], ["sweep.dry_run=true"]):
        out = tunewise(tiny_assets, _args(tiny_assets, d, "train.epochs=5", "train.lr_full=0.5", *extra))
        assert out.returncode == 2, out.stderr[-3000:]
        assert "train.epochs=1 (now 5)" in out.stderr and "train.lr_full=" in out.stderr
        assert f"sweep.dir={d}-2" in out.stderr and "sweep.rerun=changed" in out.stderr
        assert "sweep done" not in out.stdout
    assert {p.name: p.read_bytes() for p in (d / "trials").glob("*.json")} == before


@pytest.mark.slow
def test_what_may_change_safely_reruns_nothing(tiny_assets, finished, tmp_path):
    d = _copy(finished, tmp_path)
    mtimes, recs = _mtimes(d), load_records(d)
    safe = [
        "sweep.pruner=median",
        "budget.usd=100",
        "sweep.cell_stall_minutes=5",
        "sweep.heartbeat_timeout_s=30",
    ]
    out = tunewise(tiny_assets, _args(tiny_assets, d, *safe))
    assert out.returncode == 0, out.stderr[-3000:]
    assert _mtimes(d) == mtimes
    assert {c: r["attempts"] for c, r in load_records(d).items()} == {
        c: r["attempts"] for c, r in recs.items()
    }


@pytest.mark.slow
def test_sweep_rerun_changed_moves_the_old_results_aside_and_measures_again(tiny_assets, finished, tmp_path):
    d = _copy(finished, tmp_path)
    old = load_records(d)
    out = tunewise(tiny_assets, _args(tiny_assets, d, "train.epochs=2", "sweep.rerun=changed"))
    assert out.returncode == 0, out.stderr[-3000:]
    (replaced,) = (d / "replaced").iterdir()
    assert {p.stem for p in (replaced / "trials").glob("*.json")} == set(old)
    assert json.loads((replaced / "why.json").read_text())["cells"]  # what changed, per cell
    new = load_records(d)
    assert set(new) == set(old)
    for r in new.values():
        assert r["config"]["train"]["epochs"] == 2 and [a["status"] for a in r["attempts"]] == ["complete"]
    meta = json.loads((d / "sweep.json").read_text())
    assert meta["study_name"].endswith("-g2")  # a new study: the pruner never sees the replaced runs
    again = tunewise(tiny_assets, _args(tiny_assets, d, "train.epochs=2"))
    assert again.returncode == 0 and load_records(d) == new  # the folder now belongs to epochs=2


# -- claims follow the records ----------------------------------------------------------------------
@pytest.mark.slow
def test_a_new_or_corrupt_study_db_never_reruns_a_finished_cell(tiny_assets, finished, tmp_path):
    """Before: a fresh study.db (a corrupt one moved aside, another storage) ran every cell again;
    a corrupt one ended in a traceback."""
    d = _copy(finished, tmp_path)
    mtimes, recs = _mtimes(d), load_records(d)
    (d / "study.db").write_bytes(b"this is not a database" * 100)
    out = tunewise(tiny_assets, _args(tiny_assets, d))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "is not a readable SQLite database" in out.stderr and f"mv {d / 'study.db'}" in out.stderr
    (d / "study.db").rename(d / "study.db.corrupt")
    out = tunewise(tiny_assets, _args(tiny_assets, d))
    assert out.returncode == 0, out.stderr[-3000:]
    assert _mtimes(d) == mtimes and load_records(d) == recs


# -- records repair or refuse -----------------------------------------------------------------------
@pytest.mark.slow
def test_a_truncated_record_is_rebuilt_and_the_recommendation_stands(tiny_assets, finished, tmp_path):
    """Before: truncating the best cell's record made `report` exit 0 with that cell missing and
    another recommended, though cells/<id>/result.json still held its measurement."""
    d = _copy(finished, tmp_path)
    env = env_for(tiny_assets)
    assert _report(d, env).returncode == 0
    said = _recommendation(d)
    best = min(load_records(d).values(), key=lambda r: r["measured"]["eval_loss"])
    path = d / "trials" / f"{best['cell_id']}.json"
    path.write_text(path.read_text()[:150])
    out = _report(d, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _recommendation(d) == said
    rebuilt = json.loads(path.read_text())
    assert rebuilt["measured"] == best["measured"] and rebuilt["coords"] == best["coords"]
    assert rebuilt["status"] == best["status"] and "rebuilt from cells/" in rebuilt["repaired"]
    assert list((d / "trials" / "unreadable").iterdir())  # the bad file kept for inspection


@pytest.mark.slow
def test_a_record_with_wrong_types_and_no_result_is_named_and_report_exits_1(tiny_assets, finished, tmp_path):
    d = _copy(finished, tmp_path)
    env = env_for(tiny_assets)
    cid = sorted(load_records(d))[0]
    path = d / "trials" / f"{cid}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": 5, "attempts": "many"}))
    (d / "cells" / cid / "result.json").unlink()
    out = _report(d, env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"trials/{cid}.json" in out.stderr and "status=5" in out.stderr
    assert "could not be read, nor rebuilt" in (d / "report.md").read_text()


@pytest.mark.slow
def test_a_record_with_wrong_types_is_rebuilt_from_its_result(tiny_assets, finished, tmp_path):
    d = _copy(finished, tmp_path)
    recs = load_records(d)
    cid = sorted(recs)[0]
    path = d / "trials" / f"{cid}.json"
    path.write_text(json.dumps({**recs[cid], "attempts": [{"status": 3}], "measured": [1, 2]}))
    out = _report(d, env_for(tiny_assets))
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(path.read_text())["measured"] == recs[cid]["measured"]


# -- failures retried when they can succeed now -----------------------------------------------------
@pytest.mark.slow
def test_cells_that_failed_for_a_missing_model_run_once_it_is_there(tiny_assets, tmp_path):
    """Before: after the missing model.path was created, the same command printed "1 cell(s) to run"
    then "done in 0 s: 1 failed" — `failed` was forever, and so was the failed baseline."""
    later = tmp_path / "model-later"
    d = tmp_path / "sweep"
    args = [*base_overrides(tiny_assets, d, "matrix=single", "data.rows=24"), f"model.path={later}"]
    out = tunewise(tiny_assets, args)
    assert out.returncode == 1 and "no cell could run" in out.stderr, out.stderr[-3000:]
    (rec,) = load_records(d).values()
    assert rec["status"] == "failed" and "model.path" in rec["reason"]
    assert rec["attempts"][-1]["cause"] == "model"
    shutil.copytree(tiny_assets["model"], later)
    out = tunewise(tiny_assets, args)
    assert out.returncode == 0, out.stderr[-3000:]
    (rec,) = load_records(d).values()
    assert rec["status"] == "complete"
    assert [(a["status"], a["cause"]) for a in rec["attempts"]] == [("failed", "model"), ("complete", None)]
    base = json.loads((d / "trials" / "baseline.json").read_text())
    assert base["status"] == "complete" and [a["status"] for a in base["attempts"]] == ["failed", "complete"]


@pytest.mark.slow
def test_a_sweep_whose_data_is_missing_is_bad_input_and_runs_once_it_is_there(tiny_assets, tmp_path):
    data = tmp_path / "later.jsonl"
    d = tmp_path / "sweep"
    args = [*base_overrides(tiny_assets, d, "matrix=t_small", "train.max_steps=2"), f"data.path={data}"]
    out = tunewise(tiny_assets, args)
    assert out.returncode == 2 and f"data.path='{data}': file not found" in out.stderr, out.stderr[-3000:]
    assert not (d / "trials").exists()  # nothing recorded as failed for good
    shutil.copy(tiny_assets["data"], data)
    out = tunewise(tiny_assets, args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert {r["status"] for r in load_records(d).values()} == {"complete"}


def _runner_pids(cell_dir: Path) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"runners.protocol" in cmd and str(cell_dir).encode() in cmd:
            pids.append(int(p.name))
    return pids


def _wait(cond, timeout_s: float = 300, what: str = "") -> None:
    deadline = time.time() + timeout_s
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _long_cell(assets, d: Path) -> list[str]:
    """One cell long enough to be killed mid-training, checkpointing every 10 steps: 1,152 steps, ~8 s
    of training here (at 288 steps the whole training took 2.1 s: a narrow window for a kill)."""
    return base_overrides(
        assets,
        d,
        "matrix=single",
        "data.rows=96",
        "train.epochs=48",
        "train.checkpoint_every_steps=10",
        "sweep.pruner=none",
    )


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _evals(d: Path) -> int:
    recs = load_records(d) if (d / "trials").exists() else {}
    return sum(
        len(a.get("evals") or [])
        for r in recs.values()
        for a in r["attempts"][-1:]
        if r["status"] == "running"
    )


@pytest.mark.slow
def test_kill_9_of_the_runner_mid_cell_then_the_same_command_completes_the_cell(tiny_assets, tmp_path):
    """What the kernel's OOM killer does: SIGKILL to the runner while it trains. Before: the cell was
    `failed` for good; now the same command resumes it from its checkpoint and completes it."""
    d = tmp_path / "sweep"
    args = _long_cell(tiny_assets, d)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "sweep", *args],
        cwd=ROOT,
        env=env_for(tiny_assets),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait(lambda: _evals(d) >= 1, what="an eval of the running cell")
    (cid,) = load_records(d)
    pids = _runner_pids(d / "cells" / cid)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "no cell could run" in err, err[-3000:]
    rec = load_records(d)[cid]
    assert rec["status"] == "failed" and rec["reason"].startswith("runner killed by SIGKILL")
    assert rec["attempts"][-1]["cause"] == "signal"

    out = tunewise(tiny_assets, args)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = load_records(d)[cid]
    assert rec["status"] == "complete"
    assert [a["status"] for a in rec["attempts"]] == ["failed", "complete"]
    assert rec["measured"]["resumed_from_step"] > 0  # from the checkpoint it had written
    assert not list((d / "cells").rglob("*.tmp"))


@pytest.mark.slow
def test_ctrl_c_during_a_cell_is_no_failure(tiny_assets, tmp_path):
    """Before: two Ctrl-C's during one cell made it "failed: died twice"."""
    d = tmp_path / "sweep"
    args = _long_cell(tiny_assets, d)
    for n in (1, 2):
        proc = subprocess.Popen(
            [sys.executable, "-m", "sweep.cli", "sweep", *args],
            cwd=ROOT,
            env=env_for(tiny_assets),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
            # with SIGINT at its default, as a terminal starts it: a shell without job control starts
            # background commands (`pytest … &`) with SIGINT ignored, and the sweep would inherit that
            preexec_fn=_sigint_default,
        )
        _wait(lambda: _evals(d) >= 1, what="an eval of the running cell")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
        (rec,) = load_records(d).values()
        assert rec["status"] == "pending"
        assert [a["status"] for a in rec["attempts"]] == ["interrupted"] * n
    out = tunewise(tiny_assets, args, timeout_s=600)  # at once: no heartbeat timeout to wait for
    assert out.returncode == 0, out.stderr[-3000:]
    (rec,) = load_records(d).values()
    assert rec["status"] == "complete" and [a["status"] for a in rec["attempts"]][-1] == "complete"


@pytest.mark.slow
def test_kill_9_of_the_sweep_during_the_baseline_then_the_rerun_measures_it(tiny_assets, tmp_path):
    """Before: rerun at once, the sweep ended with exit 0 and no baseline ever measured."""
    d = tmp_path / "sweep"
    args = base_overrides(tiny_assets, d, "matrix=single", "data.rows=24")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "sweep", *args],
        cwd=ROOT,
        env=env_for(tiny_assets),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait(lambda: bool(_runner_pids(d / "cells" / "baseline")), what="the baseline's runner")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = tunewise(tiny_assets, args)
    assert out.returncode == 0, out.stderr[-3000:]
    base = json.loads((d / "trials" / "baseline.json").read_text())
    assert base["status"] == "complete" and base["measured"]["eval_loss"] > 0


# -- the report's reproduce command -----------------------------------------------------------------
def test_the_reproduce_overrides_carry_the_demos_training_settings():
    """Before: `matrix=single` dropped what conf/matrix/demo.yaml sets (seq_len 128, micro-batch 8, …)."""
    from sweep.provenance import reproduce_overrides

    demo = compose("config", [])
    again = compose("config", ["matrix=single", *reproduce_overrides(demo, [])])
    assert (
        again["train"] == demo["train"] and again["data"] == demo["data"] and again["model"] == demo["model"]
    )


@pytest.mark.slow
def test_the_reproduce_command_runs_as_printed_and_reproduces_the_cell(tiny_assets, finished, tmp_path):
    """Before: `Could not override 'matrix.axes'`, and the demo's training settings were dropped."""
    d = _copy(finished, tmp_path)
    env = env_for(tiny_assets)
    assert _report(d, env).returncode == 0
    text = (d / "report.md").read_text()
    (cmd,) = re.findall(r"^(tunewise sweep matrix=single .*)$", text, re.M)
    cell_id = re.search(r"reproduce-(\w+)", cmd).group(1)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (again,) = load_records(work / "outputs" / "sweeps" / f"reproduce-{cell_id}").values()
    original = load_records(d)[cell_id]
    assert again["status"] == "complete"
    assert again["measured"]["eval_loss"] == pytest.approx(original["measured"]["eval_loss"], rel=1e-4)
    assert again["config"]["train"] == original["config"]["train"]


# -- the memory cap counts what it says -------------------------------------------------------------
def test_the_memory_cap_counts_the_cells_memory_not_the_libraries(tiny_assets, tmp_path):
    """Before: the cap's starting point came before transformers and peft were imported, so their
    ~0.2 GiB counted against it: a 0.15 GiB cap stopped this cell, whose tensors peak at a few MiB."""
    from advisor.config.schema import RunConfig

    cfg = RunConfig.from_dict(
        compose(
            "config",
            [*base_overrides(tiny_assets, tmp_path / "s", "data.rows=24"), "train.memory_cap_gib=0.15"],
        )
    )
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "cell"
    proc = subprocess.run(
        [sys.executable, "-m", "runners.protocol", str(tmp_path / "config.json"), str(out)],
        cwd=ROOT,
        env=env_for(tiny_assets),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "result.json").read_text())
    assert res["status"] == "complete", res["reason"]
    assert res["measured"]["allocated_gib"] < 0.05 < res["measured"]["rss_gib"]

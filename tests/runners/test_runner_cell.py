"""The cell as the sweep uses it: bad data fails before any model loads; a real out-of-memory under
train.memory_cap_gib ends `oom` and the caller carries on; a SIGKILLed run resumes from its checkpoint;
the subprocess protocol (stdout protocol lines only, prune answers on stdin)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners import model as model_mod
from runners.cell import run_cell
from runners.protocol import PREFIX
from tests.runners.conftest import make_cfg, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"instruction": "What colour is item1?", "output": "red"}
BAD_ROWS = {
    "malformed": ([GOOD, '{"instruction": "x", "output": '], 2, "malformed JSON"),
    "missing_field": ([GOOD, GOOD, {"instruction": "x"}], 3, "missing field `output`"),
    "empty_response": ([{"instruction": "x", "output": "   "}, GOOD], 1, "field `output` is empty"),
    "unknown_role": (
        [GOOD, {"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}],
        2,
        "unknown role",
    ),
}


def _cell(cfg, out: Path, *flags: str, **kw) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict()))
    cmd = [sys.executable, "-m", "runners.protocol", str(out / "config.json"), str(out), *flags]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _events(stdout: str) -> list[dict]:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert all(ln.startswith(PREFIX) for ln in lines), lines  # stdout carries protocol lines only
    return [json.loads(ln[len(PREFIX) :]) for ln in lines]


@pytest.mark.parametrize("case", [*BAD_ROWS, "missing_file"])
def test_bad_data_fails_before_any_model_loads(case, tiny_plain, tmp_path, monkeypatch):
    def no_loading(*a, **k):
        raise AssertionError("a model or tokenizer was loaded before the data was validated")

    monkeypatch.setattr(model_mod, "load_model", no_loading)
    monkeypatch.setattr(model_mod, "load_tokenizer", no_loading)
    if case == "missing_file":
        path, line, what = tmp_path / "nope.jsonl", None, "file not found"
    else:
        items, line, what = BAD_ROWS[case]
        path = write_jsonl(tmp_path / f"{case}.jsonl", items)
    res = run_cell(make_cfg(*tiny_plain, path), tmp_path / "out")
    assert res.status == "failed" and res.reason is not None
    assert what in res.reason and str(path) in res.reason
    if line:
        assert f"{path}:{line}:" in res.reason
    assert json.loads((tmp_path / "out" / "result.json").read_text()) == res.to_dict()


def test_subprocess_reports_bad_data_and_exits_zero(tiny_plain, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, {"instruction": "x"}])
    proc = _cell(make_cfg(*tiny_plain, path), tmp_path / "out")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0
    end = _events(stdout)[-1]
    assert end["type"] == "end" and end["status"] == "failed" and f"{path}:2:" in end["reason"]
    assert f"{path}:2: missing field `output`" in stderr


def test_real_out_of_memory_ends_oom_and_the_caller_carries_on(tmp_path, learn_data):
    from tests.runners.conftest import build_model_dir

    big, vocab = build_model_dir(
        tmp_path / "big", chat=False, hidden_size=512, intermediate_size=1536, layers=4
    )
    cfg = make_cfg(
        big,
        vocab,
        learn_data,
        method="full",
        train={"memory_cap_gib": 0.25, "max_steps": 4, "micro_batch_size": 32},
    )
    proc = _cell(cfg, tmp_path / "oom")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    res = json.loads((tmp_path / "oom" / "result.json").read_text())
    assert res["status"] == "oom", res["reason"]
    assert res["reason"].startswith("out of memory at step 0") and "allocate" in res["reason"]
    m = res["measured"]
    assert m["trainable_params"] > 10_000_000  # the model loaded; training ran past the cap
    assert m["steps"] == 0 and m["rss_gib"] > 0.25
    assert _events(stdout)[-1] == {"type": "end", "status": "oom", "reason": res["reason"]}
    # the caller carries on: the same process launches the next cell, which completes
    small = make_cfg(big, vocab, learn_data, method="lora", train={"max_steps": 2, "metric": "none"})
    proc = _cell(small, tmp_path / "next")
    proc.communicate(timeout=300)
    assert json.loads((tmp_path / "next" / "result.json").read_text())["status"] == "complete"


def test_killed_run_resumes_from_its_checkpoint(tiny_plain, learn_data, tmp_path):
    train = {"max_steps": 24, "checkpoint_every_steps": 4, "metric": "none", "eval_points": 2, "lr": 5e-3}
    cfg = make_cfg(*tiny_plain, learn_data, method="lora", train=train)
    out = tmp_path / "killed"
    proc = _cell(cfg, out)
    state = out / "checkpoint" / "state.pt"
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert state.exists() and not (out / "result.json").exists()
    res = run_cell(cfg, out)  # the rerun
    m = res.measured
    assert res.status == "complete" and m is not None and m.resumed_from_step is not None
    assert m.resumed_from_step >= 4 and m.resumed_from_step % 4 == 0 and m.steps == 24
    straight = run_cell(cfg, tmp_path / "straight", resume=False).measured
    assert straight is not None
    assert m.eval_loss == pytest.approx(straight.eval_loss, abs=1e-4)  # resumed where it stopped
    assert m.train_tokens == straight.train_tokens


def test_protocol_prunes_on_answer(tiny_plain, learn_data, tmp_path):
    cfg = make_cfg(*tiny_plain, learn_data, train={"max_steps": 6, "eval_points": 3, "metric": "none"})
    proc = _cell(cfg, tmp_path / "p", "--control", stdin=subprocess.PIPE)

    def next_event() -> dict:
        while True:
            ev = json.loads(proc.stdout.readline()[len(PREFIX) :])
            if ev["type"] != "heartbeat":
                return ev

    first = next_event()
    assert first["type"] == "start" and first["planned_steps"] == 6 and first["eval_steps"] == [2, 4, 6]
    ev = next_event()
    assert ev["step"] == 2 and ev["index"] == 0 and ev["fraction"] == pytest.approx(1 / 3)
    proc.stdin.write("prune\n")
    proc.stdin.flush()
    rest, _ = proc.communicate(timeout=120)
    assert _events(rest)[-1]["status"] == "pruned" and proc.returncode == 0
    res = json.loads((tmp_path / "p" / "result.json").read_text())
    assert res["status"] == "pruned" and res["measured"]["steps"] == 2
    assert [e[0] for e in res["measured"]["eval_curve"]] == [2]

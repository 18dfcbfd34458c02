"""A hostile user's inputs to every command (issue 16): each must end in a clear message — exit 2 for
bad input (1 for `data check` problems, an unreadable record, a full disk or no cell that could run),
stderr naming the key or the file (and line) — never a Python traceback.

Every case runs the real CLI entry (`sweep.cli.main`) in this process: bad config values, bad files
(not UTF-8, binary, a text file named .parquet, JSON nested too deeply, corrupt tokenizers and records),
bad folders (a file, under a file, on a read-only file system), bad storage URLs, a corrupt study.db,
a full disk (RLIMIT_FSIZE: a file past the limit fails with EFBIG, as writes do on a full disk).
The case ids start with the command, so `pytest tests/test_adversarial.py -q -rA | grep -c PASSED`
per command gives the count the issue asks for. Sweep cases that need a model use the tiny one of
tests/sweep/conftest.py and never get past planning (dry runs, or inputs refused before any cell runs).
"""

from __future__ import annotations

import json
import os
import resource
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sweep.cli import main
from tests.sweep.conftest import base_overrides, tiny_assets  # noqa: F401 (the tiny model fixture)

Setup = Callable[[Path, dict[str, Path]], list[str]]


@dataclass(frozen=True)
class Case:
    command: str  # advise | data check | data prepare | report | sweep | cli
    setup: Setup  # (tmp folder, tiny assets) -> argv after `tunewise`
    code: int  # the exit code a clear message ends with
    says: tuple[str, ...]  # what stderr (or stdout for data check) must say
    needs_model: bool = False
    fsize_bytes: int | None = None  # RLIMIT_FSIZE during the call: a file past it fails as on a full disk


def _w(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


GOOD_ROWS = "".join(json.dumps({"instruction": f"say {i}", "output": f"{i} {i}"}) + "\n" for i in range(40))
BINARY = bytes(range(256)) * 8
DEEP = b"[" * 100_000 + b"]" * 100_000


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def adv(*args: str) -> Setup:
    return lambda _t, _a: ["advise", *args]


def adv_file(name: str, content: str | bytes, key: str, *extra: str) -> Setup:
    return lambda t, _a: ["advise", f"{key}={_w(t / name, content)}", *extra]


def check(name: str, content: str | bytes, *extra: str) -> Setup:
    return lambda t, _a: ["data", "check", f"data.path={_w(t / name, content)}", *extra]


def prep(content: str | bytes, out: Callable[[Path], Path], *extra: str) -> Setup:
    return lambda t, _a: [
        "data",
        "prepare",
        f"data.path={_w(t / 'in.jsonl', content)}",
        f"data.out_dir={out(t)}",
        *extra,
    ]


def report(make: Callable[[Path], Path]) -> Setup:
    return lambda t, _a: ["report", str(make(t))]


def sweep(
    *extra: str, prepare: Callable[[Path], None] | None = None, dry: bool = True, matrix: str = "single"
) -> Setup:
    """A sweep of the tiny model (one cell of 24 rows), as a dry run unless `dry` is False."""

    def setup(t: Path, a: dict[str, Path]) -> list[str]:
        if prepare is not None:
            prepare(t)
        own_dir = any(e.startswith("sweep.dir=") for e in extra)
        base = base_overrides(a, t / "sweep", f"matrix={matrix}", "data.rows=24")
        args = [o for o in base if not (own_dir and o.startswith("sweep.dir="))]
        return ["sweep", *args, *(["sweep.dry_run=true"] if dry else []), *extra]

    return setup


def _a_file(t: Path) -> Path:
    return _w(t / "a_file", "x")


def _sweep_with(
    record: str | None = None, sweep_json: str | None = None, trials_file: bool = False
) -> Callable[[Path], Path]:
    def make(t: Path) -> Path:
        d = t / "s"
        if trials_file:
            _w(d / "trials", "not a folder")
            return d
        (d / "trials").mkdir(parents=True)
        if record is not None:
            _w(d / "trials" / "c1.json", record)
        if sweep_json is not None:
            _w(d / "sweep.json", sweep_json)
        return d

    return make


def _corrupt_db(t: Path) -> None:
    _w(t / "sweep" / "study.db", b"SQLite format 2\0" + b"\x17" * 5000)


def _tokenizer(t: Path, content: str | bytes) -> Path:
    folder = t / "model"
    _w(folder / "tokenizer.json", content)
    return folder


CASES: dict[str, Case] = {
    # -- advise: values, keys, override syntax, files it reads -------------------------------------
    "advise-unknown-model": Case("advise", adv("model=llama-9000"), 2, ("model='llama-9000'", "allowed")),
    "advise-rank-zero": Case("advise", adv("method.r=0"), 2, ("method.r=0",)),
    "advise-rank-text": Case("advise", adv("method.r=abc"), 2, ("method.r",)),
    "advise-negative-seq-len": Case("advise", adv("train.seq_len=-5"), 2, ("train.seq_len=-5",)),
    "advise-unknown-gpu": Case("advise", adv("gpu=nope"), 2, ("gpu='nope'",)),
    "advise-zero-gpus": Case("advise", adv("gpu.count=0"), 2, ("gpu.count=0",)),
    "advise-negative-budget": Case("advise", adv("budget.usd=-1"), 2, ("budget.usd=-1",)),
    "advise-unknown-format": Case("advise", adv("format=xml"), 2, ("format='xml'",)),
    "advise-breakdown-maybe": Case("advise", adv("breakdown=maybe"), 2, ("breakdown='maybe'",)),
    "advise-offline-number": Case("advise", adv("offline=3"), 2, ("offline=3",)),
    "advise-unknown-precision": Case("advise", adv("train.precision=fp8"), 2, ("train.precision='fp8'",)),
    "advise-unknown-mode": Case("advise", adv("advisor.mode=psychic"), 2, ("advisor.mode='psychic'",)),
    "advise-unknown-key": Case("advise", adv("train.nope=1"), 2, ("train.nope",)),
    "advise-key-without-value": Case("advise", adv("train.seq_len"), 2, ("train.seq_len",)),
    "advise-unclosed-list": Case("advise", adv("method.target_modules=[q_proj"), 2, ("overrides",)),
    "advise-missing-config-path": Case(
        "advise", adv("model.config_path=/nonexistent/config.json"), 2, ("model.config_path",)
    ),
    "advise-config-path-not-json": Case(
        "advise", adv_file("config.json", "{not json", "model.config_path"), 2, ("model.config_path",)
    ),
    "advise-config-path-binary": Case(
        "advise", adv_file("config.json", BINARY, "model.config_path"), 2, ("model.config_path",)
    ),
    "advise-config-path-deep": Case(
        "advise", adv_file("config.json", DEEP, "model.config_path"), 2, ("model.config_path",)
    ),
    "advise-config-path-list": Case(
        "advise", adv_file("config.json", "[1, 2]", "model.config_path"), 2, ("model.config_path",)
    ),
    "advise-missing-data": Case("advise", adv("data.path=/nonexistent/train.jsonl"), 2, ("data.path",)),
    "advise-binary-data": Case(
        "advise", adv_file("train.jsonl", BINARY, "data.path"), 2, ("train.jsonl", "no readable rows")
    ),
    "advise-empty-data": Case(
        "advise", adv_file("train.jsonl", "", "data.path"), 2, ("train.jsonl", "no readable rows")
    ),
    "advise-missing-calibration": Case(
        "advise", adv("advisor.calibration=/nonexistent"), 2, ("advisor.calibration",)
    ),
    "advise-calibration-not-json": Case(
        "advise", adv_file("cal.json", "{{", "advisor.calibration"), 2, ("advisor.calibration",)
    ),
    "advise-calibration-binary": Case(
        "advise", adv_file("cal.json", BINARY, "advisor.calibration"), 2, ("advisor.calibration",)
    ),
    "advise-calibration-wrong-types": Case(
        "advise",
        adv_file("cal.json", '[{"cell_id": 5, "status": []}]', "advisor.calibration"),
        2,
        ("advisor.calibration",),
    ),
    "advise-corrupt-tokenizer": Case(
        "advise",
        lambda t, _a: [
            "advise",
            f"model.path={_tokenizer(t, '{broken')}",
            f"data.path={_w(t / 'd.jsonl', GOOD_ROWS)}",
        ],
        2,
        ("model.path", "tokenizer.json"),
    ),
    # -- data check: files that are not what they say -----------------------------------------------
    "data-check-no-path": Case("data check", lambda _t, _a: ["data", "check"], 2, ("data.path=None",)),
    "data-check-missing": Case(
        "data check", lambda t, _a: ["data", "check", f"data.path={t / 'no.jsonl'}"], 2, ("file not found",)
    ),
    "data-check-unknown-suffix": Case(
        "data check", check("train.txt", GOOD_ROWS), 2, ("unknown file type '.txt'",)
    ),
    "data-check-no-suffix": Case(
        "data check", lambda _t, _a: ["data", "check", "data.path=/dev/null"], 2, ("/dev/null",)
    ),
    "data-check-folder-without-shards": Case(
        "data check",
        lambda t, _a: ["data", "check", f"data.path={(t / 'empty_dir').mkdir() or t / 'empty_dir'}"],
        2,
        ("no .arrow shards",),
    ),
    "data-check-latin1": Case(
        "data check",
        check("l.jsonl", b'{"instruction": "caf\xe9", "output": "x"}\n'),
        1,
        ("line 1: not UTF-8",),
    ),
    "data-check-binary": Case("data check", check("b.jsonl", BINARY), 1, ("not UTF-8",)),
    "data-check-text-parquet": Case(
        "data check", check("t.parquet", "plain text\n"), 1, ("not readable as a Parquet file",)
    ),
    "data-check-deep-json": Case("data check", check("d.json", DEEP), 1, ("nested too deeply",)),
    "data-check-deep-jsonl": Case("data check", check("d.jsonl", DEEP + b"\n"), 1, ("nested too deeply",)),
    "data-check-json-object": Case("data check", check("o.json", '{"a": 1}'), 1, ("must be a list of rows",)),
    "data-check-latin1-csv": Case(
        "data check", check("l.csv", b"instruction,output\ncaf\xe9,x\n"), 1, ("line 2: not UTF-8",)
    ),
    "data-check-csv-ragged": Case(
        "data check", check("r.csv", "instruction,output\na,b,c,d\n"), 1, ("more value(s) than header",)
    ),
    "data-check-empty": Case("data check", check("e.jsonl", ""), 1, ("no_rows",)),
    "data-check-blank-lines": Case("data check", check("e.jsonl", "\n \n\t\n"), 1, ("no_rows",)),
    "data-check-nul-bytes": Case(
        "data check", check("n.jsonl", b'{"instruction": "a\x00", "output": "b"}\x00\n'), 1, ("malformed",)
    ),
    "data-check-missing-val": Case(
        "data check",
        lambda t, _a: [
            "data",
            "check",
            f"data.path={_w(t / 'd.jsonl', GOOD_ROWS)}",
            f"data.val_path={t / 'nope.jsonl'}",
        ],
        2,
        ("data.val_path",),
    ),
    "data-check-unknown-format": Case(
        "data check", check("d.jsonl", GOOD_ROWS, "data.format=yaml"), 2, ("data.format='yaml'",)
    ),
    "data-check-corrupt-tokenizer": Case(
        "data check",
        lambda t, _a: [
            "data",
            "check",
            f"data.path={_w(t / 'd.jsonl', GOOD_ROWS)}",
            f"model.path={_tokenizer(t, BINARY)}",
        ],
        2,
        ("tokenizer.json",),
    ),
    "data-no-subcommand": Case("data check", lambda _t, _a: ["data"], 2, ("no subcommand",)),
    "data-unknown-subcommand": Case(
        "data check", lambda _t, _a: ["data", "frobnicate"], 2, ("'frobnicate'",)
    ),
    # -- data prepare: where it writes ----------------------------------------------------------------
    "data-prepare-into-a-file": Case(
        "data prepare", prep(GOOD_ROWS, _a_file), 2, ("data.out_dir", "is a file")
    ),
    "data-prepare-under-a-file": Case(
        "data prepare", prep(GOOD_ROWS, lambda t: _a_file(t) / "sub"), 2, ("data.out_dir",)
    ),
    "data-prepare-read-only-fs": Case(
        "data prepare", prep(GOOD_ROWS, lambda _t: Path("/proc/tunewise-out")), 2, ("data.out_dir",)
    ),
    "data-prepare-unknown-key": Case(
        "data prepare", prep(GOOD_ROWS, lambda t: t / "out", "+data.nothing=1"), 2, ("data.nothing",)
    ),
    "data-prepare-overwrite-input": Case(
        "data prepare",
        lambda t, _a: [
            "data",
            "prepare",
            f"data.path={_w(t / 'o' / 'train.jsonl', GOOD_ROWS)}",
            f"data.out_dir={t / 'o'}",
        ],
        2,
        ("would overwrite the input",),
    ),
    "data-prepare-full-disk": Case(
        "data prepare",
        prep(GOOD_ROWS * 4, lambda t: t / "out"),
        2,
        ("data.out_dir", "free some space"),
        fsize_bytes=1024,
    ),
    "data-prepare-empty": Case("data prepare", prep("", lambda t: t / "out"), 2, ("too few",)),
    "data-prepare-binary": Case("data prepare", prep(BINARY, lambda t: t / "out"), 2, ("too few",)),
    # -- report: folders and records ---------------------------------------------------------------------
    "report-no-folder": Case("report", lambda _t, _a: ["report"], 2, ("SWEEP_DIR",)),
    "report-two-folders": Case("report", lambda t, _a: ["report", str(t), str(t)], 2, ("SWEEP_DIR",)),
    "report-missing-folder": Case("report", report(lambda t: t / "nope"), 2, ("not a sweep directory",)),
    "report-a-file": Case("report", report(_a_file), 2, ("not a sweep directory",)),
    "report-trials-is-a-file": Case(
        "report", report(_sweep_with(trials_file=True)), 2, ("not a sweep directory",)
    ),
    "report-truncated-record": Case(
        "report", report(_sweep_with('{"cell_id": "c1", "sta')), 1, ("trials/c1.json", "not JSON")
    ),
    "report-binary-record": Case(
        "report", report(_sweep_with(BINARY.decode("latin-1"))), 1, ("trials/c1.json",)
    ),
    "report-wrong-types": Case(
        "report",
        report(_sweep_with('{"cell_id": "c1", "status": 5, "attempts": "x"}')),
        1,
        ("status=5", "attempts"),
    ),
    "report-deep-record": Case("report", report(_sweep_with("[" * 100_000)), 1, ("trials/c1.json",)),
    "report-newer-record": Case(
        "report",
        report(_sweep_with('{"cell_id": "c1", "status": "complete", "version": 99}')),
        1,
        ("unknown record version",),
    ),
    "report-corrupt-sweep-json": Case(
        "report", report(_sweep_with('{"cell_id": "c1", "sta', sweep_json="{{{")), 1, ("trials/c1.json",)
    ),
    # -- sweep: folders, storage, settings, data, every cell misconfigured ----------------------------------
    "sweep-dir-is-a-file": Case(
        "sweep", sweep("sweep.dir=/etc/hostname"), 2, ("sweep.dir", "is a file"), True
    ),
    "sweep-dir-under-a-file": Case(
        "sweep", sweep("sweep.dir=/etc/hostname/sub"), 2, ("sweep.dir", "is a file"), True
    ),
    "sweep-dir-read-only-fs": Case(
        "sweep", sweep("sweep.dir=/proc/tunewise-sweep"), 2, ("sweep.dir", "not writable"), True
    ),
    "sweep-storage-not-a-url": Case(
        "sweep", sweep("sweep.storage=study.db"), 2, ("sweep.storage", "RDB URL"), True
    ),
    "sweep-storage-unknown-scheme": Case(
        "sweep",
        sweep("sweep.storage=nosuchdb://x/y", dry=False),
        2,
        ("sweep.storage", "not a storage URL"),
        True,
    ),
    "sweep-storage-unreachable": Case(
        "sweep",
        lambda t, a: sweep(f"sweep.storage=postgresql://me:pw@127.0.0.1:{_closed_port()}/db", dry=False)(
            t, a
        ),
        2,
        ("sweep.storage", "cannot open"),
        True,
    ),
    "sweep-storage-no-folder": Case(
        "sweep",
        sweep("sweep.storage=sqlite:////nonexistent-dir/x/study.db", dry=False),
        2,
        ("sweep.storage",),
        True,
    ),
    "sweep-corrupt-study-db": Case(
        "sweep", sweep(prepare=_corrupt_db, dry=False), 2, ("not a readable SQLite database", "mv "), True
    ),
    "sweep-zero-workers": Case("sweep", sweep("sweep.workers=0"), 2, ("sweep.workers=0",), True),
    "sweep-unknown-pruner": Case("sweep", sweep("sweep.pruner=oracle"), 2, ("sweep.pruner='oracle'",), True),
    "sweep-unknown-rerun": Case("sweep", sweep("sweep.rerun=all"), 2, ("sweep.rerun='all'",), True),
    "sweep-stall-zero": Case(
        "sweep", sweep("sweep.cell_stall_minutes=0"), 2, ("sweep.cell_stall_minutes=0",), True
    ),
    "sweep-seeds-text": Case("sweep", sweep("sweep.seeds=many"), 2, ("sweep.seeds",), True),
    "sweep-unknown-sweep-key": Case("sweep", sweep("+sweep.turbo=true"), 2, ("sweep.turbo",), True),
    "sweep-unknown-matrix": Case("sweep", sweep("matrix=nope"), 2, ("matrix='nope'",), True),
    "sweep-negative-cap": Case(
        "sweep", sweep("train.memory_cap_gib=-1"), 2, ("train.memory_cap_gib=-1",), True
    ),
    "sweep-missing-data": Case(
        "sweep", sweep("data.path=/nonexistent.jsonl"), 2, ("data.path='/nonexistent.jsonl'",), True
    ),
    "sweep-binary-data": Case(
        "sweep",
        lambda t, a: sweep(f"data.path={_w(t / 'b.jsonl', BINARY)}")(t, a),
        2,
        ("b.jsonl", "no readable rows"),
        True,
    ),
    "sweep-empty-data": Case(
        "sweep",
        lambda t, a: sweep(f"data.path={_w(t / 'e.jsonl', '')}")(t, a),
        2,
        ("e.jsonl", "no readable rows"),
        True,
    ),
    "sweep-full-disk": Case(
        "sweep", sweep(dry=False), 1, ("no space left to write", "rerun the same command"), True, 64 * 1024
    ),
    "sweep-every-cell-misconfigured": Case(
        "sweep",
        sweep("method.target_modules=[nope_proj]", dry=False),
        2,
        ("no cell of the sweep can run", "nope_proj"),
        True,
    ),
    "sweep-delete-an-axis": Case(
        "sweep", sweep("~method", matrix="demo"), 2, ("method.name: missing",), True
    ),
    # -- the command line itself -----------------------------------------------------------------------
    "cli-unknown-command": Case("cli", lambda _t, _a: ["frobnicate"], 2, ("unknown command 'frobnicate'",)),
    "cli-help-flag-typo": Case("cli", lambda _t, _a: ["advise", "--hepl"], 2, ("--hepl",)),
}


@pytest.fixture
def clean_env(monkeypatch):
    """The CLI switches the process offline (and back): keep this test process's environment as it was."""
    for k in list(os.environ):
        monkeypatch.setenv(k, os.environ[k])
    yield


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_ends_in_a_clear_message(name, tmp_path, capsys, request):
    case = CASES[name]
    assets = request.getfixturevalue("tiny_assets") if case.needs_model else {}
    argv = case.setup(tmp_path, assets)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    if case.fsize_bytes is not None:  # Python ignores SIGXFSZ: a write past it raises EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize_bytes, limit[1]))
    try:
        code = main(argv)  # an exception escaping here is the traceback a user would have seen
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    out, err = capsys.readouterr()
    assert not list(tmp_path.rglob("*.tmp")), "temporary files left behind"
    assert "Traceback" not in err, err[-3000:]
    assert code == case.code, f"exit {code}\n{err[-3000:]}"
    shown = err + out
    for s in case.says:
        assert s in shown, f"{s!r} not in:\n{shown[-3000:]}"

"""`tunewise` through the real entry point: what each command accepts, shows and refuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sweep.commands import COMMANDS, CONFIG, NOT_READ
from sweep.compose import compose, flatten

ROOT = Path(__file__).resolve().parent.parent


def tw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweep.cli", *args], capture_output=True, text=True, cwd=ROOT
    )


def _read_back(text: str) -> Any:
    """A value as --help prints it, read back (YAML; `2e-05` is a float to Hydra, not to PyYAML)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _help_keys(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.partition("Keys with their defaults")[2].splitlines():
        if line.startswith("  "):
            key, _, rest = line.strip().partition("=")
            out[key] = rest.split("  # ")[0]
    return out


@pytest.mark.parametrize("cmd", sorted(CONFIG))
def test_help_lists_every_key_with_its_default_from_conf(cmd):
    out = tw(cmd, "--help")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    shown = _help_keys(out.stdout)
    expected = {k: v for k, v in flatten(compose(CONFIG[cmd], [])).items() if not k.startswith(NOT_READ[cmd])}
    assert set(shown) == set(expected), set(shown) ^ set(expected)
    for key, value in expected.items():
        if key != "gpu.prices":  # shown as provider and price per row
            assert _read_back(shown[key]) == value, (key, shown[key], value)
    # the defaults are the command's own: advise prices a real card, the sweep runs the CPU demo
    assert shown["gpu.name"] == ("cpu" if cmd == "sweep" else "a100-80gb")
    assert ("sweep.workers" in shown) == (cmd == "sweep")


def test_help_documents_keys_from_the_yaml_comments():
    out = tw("advise", "--help")
    lines = {line.strip().split("=")[0]: line for line in out.stdout.splitlines() if "=" in line}
    assert "# tokens per sequence at most" in lines["train.seq_len"]
    assert "# adapter rank" in lines["method.r"]
    assert "# model width d (elements)" in lines["model.hidden_size"]


def test_usage_and_unknown_command():
    out = tw("--help")
    assert out.returncode == 0
    for cmd in COMMANDS:
        assert f"\n  {cmd} " in out.stdout
    bad = tw("advize")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "unknown command 'advize' (allowed: advise, sweep, report, data, export)" in bad.stderr


def test_unknown_key_exits_2_naming_the_key():
    out = tw("advise", "train.sequence_len=2048")
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stdout == ""
    assert "train.sequence_len" in out.stderr


def test_output_format_checked_with_the_other_problems():
    out = tw("advise", "format=xml", "train.seq_len=0")
    assert out.returncode == 2 and out.stdout == ""
    assert "format='xml': unknown output format (allowed: rich, json)" in out.stderr
    assert "train.seq_len=0: must be a positive integer" in out.stderr


def test_report_and_data_need_their_argument():
    out = tw("report")
    assert out.returncode == 2 and "SWEEP_DIR" in out.stderr
    out = tw("data")
    assert out.returncode == 2 and "allowed: check, prepare" in out.stderr
    out = tw("data", "chek")
    assert out.returncode == 2 and "'chek'" in out.stderr


def test_unknown_group_option_lists_allowed_values_without_traceback():
    out = tw("advise", "model=llama-9000", "gpu=tpu")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "model='llama-9000'" in out.stderr and "llama-3.1-8b" in out.stderr
    assert "gpu='tpu'" in out.stderr and "a100-80gb" in out.stderr


def test_a_real_model_without_data_path_is_refused():
    """The demo task's 900 rows serve only the demo base: a real model.path without data.path would
    plan the same run for every data.rows above 900 — refused, naming data.path."""
    out = tw(
        "sweep", "matrix=method_rank_size", "model=llama-3.1-8b", "model.path=/models/x", "gpu=a100-80gb"
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "data.path='outputs/demo/data/train.jsonl'" in out.stderr
    assert "serves only the demo base" in out.stderr and "set data.path=" in out.stderr
    assert out.stdout == ""  # nothing planned


def test_the_demo_data_is_kept_for_the_demo_base_and_any_data_path_for_a_real_model():
    from sweep.settings import settings_from

    settings_from(compose("config", []))  # the demo: demo base on demo data
    settings_from(compose("config", ["model.path=/models/x", "data.path=/data/train.jsonl"]))
    settings_from(compose("config", ["model=llama-3.1-8b"]))  # no weights: nothing runs on the demo data

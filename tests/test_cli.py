from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweep.cli", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_help_lists_commands():
    out = tw("--help")
    assert out.returncode == 0
    for cmd in ("advise", "sweep", "report", "data"):
        assert cmd in out.stdout


def test_unknown_group_option_lists_allowed_values_without_traceback():
    out = tw("advise", "model=llama-9000", "gpu=tpu")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "model='llama-9000'" in out.stderr and "llama-3.1-8b" in out.stderr
    assert "gpu='tpu'" in out.stderr and "a100-80gb" in out.stderr

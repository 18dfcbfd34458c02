"""report.html opens in headless Chromium without console errors and the screenshot shows the plots.

Needs Debian's `chromium` (and `fonts-dejavu-core`). Skipped where Chromium is missing, except in CI
(CI=true), where a missing Chromium fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from reports.build import build_report
from tests.reports.report_records import copy_fixture

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "screenshot_report.py"
CHROMIUM = Path("/usr/bin/chromium")


def _need_chromium() -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(
                "CI=true but /usr/bin/chromium is missing: apt-get install -y chromium fonts-dejavu-core"
            )
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")


def _shoot(html: Path, png: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(html), str(png), "--height", "6000"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_report_renders_without_console_errors_and_shows_plots(tmp_path):
    _need_chromium()
    d = copy_fixture("sweep_all", tmp_path)
    build_report(d)
    png = tmp_path / "shot.png"
    out = _shoot(d / "report.html", png)
    assert out.returncode == 0, out.stderr
    img = imread(png)[..., :3]
    assert img.shape[:2] == (6000, 1280)
    rgb = (img * 255).round().astype(int)
    # the plots' method colours (LoRA blue #0969da, QLoRA green #1a7f37) are only in the plot images
    for colour in ((0x09, 0x69, 0xDA), (0x1A, 0x7F, 0x37)):
        hits = (np.abs(rgb - np.array(colour)).sum(axis=-1) < 12).sum()
        assert hits > 2000, f"plot colour {colour} barely visible ({hits} px): plots not rendered?"


def test_console_errors_are_caught(tmp_path):
    """The check can fail: a page with a script error makes the script exit 1 and name it."""
    _need_chromium()
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>no_such_function();</script></body></html>")
    out = _shoot(bad, tmp_path / "bad.png")
    assert out.returncode == 1
    assert "Uncaught ReferenceError: no_such_function is not defined" in out.stderr

"""Open a report.html in headless Chromium, save a screenshot and fail on console errors.

    python scripts/screenshot_report.py REPORT_HTML OUT_PNG [--width 1280] [--height 4000]

Exit status: 0 = screenshot written and no console errors; 1 = console errors (printed) or no
screenshot; 2 = no Chromium (install Debian's `chromium` package). Console messages reach the log
through `--enable-logging=stderr`. Chromium logs console.log and console.error alike (at INFO), and the
report has no scripts at all, so any console message — an uncaught exception, a blocked or missing
resource — counts as an error.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
# e.g. '[13355:13355:1129/102127.28:INFO:CONSOLE:1] "Uncaught ReferenceError: …", source: file:///…'
# (older builds write CONSOLE(1)).
CONSOLE = re.compile(r":[A-Z]+\d*:CONSOLE(?::\d+|\(\d+\))?\]\s*(?P<msg>.*)")


def chromium() -> str | None:
    for c in CANDIDATES:
        if Path(c).exists():
            return c
    return shutil.which("chromium")


def console_errors(log: str) -> list[str]:
    """Every console message (the report runs no scripts, so each one means something went wrong)."""
    out = []
    for line in log.splitlines():
        m = CONSOLE.search(line)
        if m:
            out.append(m.group("msg"))
        elif "Uncaught" in line:
            out.append(line.strip())
    return out


def screenshot(
    html: Path, png: Path, width: int = 1280, height: int = 4000, timeout_s: float = 90
) -> list[str]:
    """Write `png`; return the console errors (empty = clean). Raises FileNotFoundError without Chromium."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium)")
    png = png.resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    if png.exists():
        png.unlink()
    with tempfile.TemporaryDirectory(prefix="tunewise-chromium-") as profile:
        cmd = [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
            "--enable-logging=stderr", "--v=0", f"--screenshot={png}", f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    errors = console_errors(proc.stderr + proc.stdout)
    if not png.exists() or png.stat().st_size == 0:
        errors.append(f"no screenshot written (chromium exit {proc.returncode}): {proc.stderr[-2000:]}")
    return errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=4000)
    a = ap.parse_args(argv)
    try:
        errors = screenshot(a.html, a.png, a.width, a.height)
    except FileNotFoundError as e:
        print(f"screenshot_report: {e}", file=sys.stderr)
        return 2
    for e in errors:
        print(f"console error: {e}", file=sys.stderr)
    if not errors:
        print(a.png)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

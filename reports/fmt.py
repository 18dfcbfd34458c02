"""Numbers with units and sensible rounding, cell labels, and scrubbing of secrets and home paths."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from advisor.config import methods

DASH = "—"


def label(method: str, r: int | None, rows: int | None, extra: str = "") -> str:
    """'LoRA r=16 · 1,000 rows' (rank omitted for full)."""
    s = methods.short(method)
    if r is not None and method != "full":
        s += f" r={r}"
    if rows is not None:
        s += f" · {rows:,} rows"
    return s + (f" · {extra}" if extra else "")


def rows_phrase(rows: int | None, max_rows: int | None) -> str:
    if rows is None:
        return "the sweep's data"
    if max_rows is None or rows >= max_rows:
        return f"all {rows:,} rows"
    return f"{rows:,} of the {max_rows:,} rows"


def pct(x: float | None, digits: int = 0) -> str:
    return DASH if x is None else f"{100 * x:.{digits}f} %"


def usd(x: float | None) -> str:
    if x is None:
        return DASH
    if x >= 100:
        return f"${x:,.0f}"
    if x >= 10:
        return f"${x:.0f}" if abs(x - round(x)) < 0.05 else f"${x:.1f}"
    if x >= 0.995:
        return f"${x:.2f}"
    if x == 0:
        return "$0"
    return f"${x:.2g}" if x >= 0.0001 else "<$0.0001"


def gib(x: float | None) -> str:
    if x is None:
        return DASH
    if x >= 100:
        return f"{x:,.0f} GiB"
    if x < 0.1:  # tiny models: MiB keeps the digits that matter
        return f"{x * 1024:.3g} MiB"
    return f"{x:.1f} GiB" if x >= 10 else f"{x:.2f} GiB"


def size_bytes(n: float | None) -> str:
    if n is None:
        return DASH
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            v = n / scale
            return f"{v:.1f} {unit}" if v < 100 else f"{v:,.0f} {unit}"
    return f"{n:.0f} B"


def duration(hours: float | None) -> str:
    """Wall-clock time: seconds, minutes or hours, whichever reads best."""
    if hours is None:
        return DASH
    s = hours * 3600
    if s < 90:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{hours:.1f} h" if hours < 100 else f"{hours:,.0f} h"


def loss(x: float | None, std: float | None = None, n: int = 1) -> str:
    if x is None:
        return DASH
    return f"{x:.3f} ± {std:.3f} (n={n})" if std is not None else f"{x:.3f}"


def signed_pct(x: float | None) -> str:
    if x is None:
        return DASH
    return "0 %" if round(100 * x) == 0 else f"{100 * x:+.0f} %".replace("-", "−")


def rate(x: float | None, unit: str) -> str:
    if x is None:
        return DASH
    return f"{x:,.0f} {unit}" if x >= 100 else f"{x:.3g} {unit}"


_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]+):[^/\s]*@"
)  # up to the last @ of the authority
_HOME = re.compile(r"(?<![\w.])/(?:home|Users)/[^/\s'\"]+")


_SAFE = re.compile(r"^[\w@%+=:,./~-]+$")


def shq(s: str) -> str:
    """Shell-quote only when needed (keeps ~ expandable in printed commands)."""
    return s if _SAFE.match(s) else "'" + s.replace("'", "'\"'\"'") + "'"


def strip_password(url: str | None) -> str:
    """'postgresql://user:secret@host/db' -> 'postgresql://user:***@host/db'."""
    return _PASSWORD.sub(r"\g<head>:***@", url) if url else ""


def scrub(text: str) -> str:
    """Remove passwords in URLs and absolute home paths (replaced by ~)."""
    text = strip_password(text)
    home = str(Path.home())
    if home not in ("/", "/root", ""):
        text = text.replace(home, "~")
    text = text.replace("/root/", "~/")
    return _HOME.sub("~", text)


def scrub_data(x: Any) -> Any:
    """scrub() every string inside nested dicts and lists."""
    if isinstance(x, str):
        return scrub(x)
    if isinstance(x, dict):
        return {k: scrub_data(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [scrub_data(v) for v in x]
    return x

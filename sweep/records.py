"""What the sweep writes beside the trial records: results.csv, and storage URLs without passwords.

The records themselves (typed, versioned, written atomically) are advisor.trials; results.csv is
`reports.results(SWEEP_DIR)` — one tidy row per attempt — written out, atomically too.
"""

from __future__ import annotations

import re
from pathlib import Path

from advisor.trials.store import write_atomic

_PASSWORD = re.compile(r"(://[^:/@]+:)[^@]*@")


def redact_url(url: str) -> str:
    """A storage URL without its password (postgresql://user:***@host/db)."""
    return _PASSWORD.sub(r"\1***@", url)


def write_results_csv(sweep_dir: Path) -> Path:
    """sweep_dir/results.csv: the results frame (reports.results), one row per attempt."""
    from reports import results  # pandas: loaded when a results.csv is written, not at import

    path = Path(sweep_dir) / "results.csv"
    write_atomic(path, results(sweep_dir).to_csv(index=False))
    return path

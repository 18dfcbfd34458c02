"""The recommendation report, and a sweep's results as data.

- `reports.results(SWEEP_DIR) -> pandas.DataFrame`: one tidy row per attempt, the trial record's
  fields flattened (reports.frame); results.csv is that frame written out.
- `reports.build.build_report(sweep_dir)`: report.md / report.html / plots, its tables built from
  that frame (reports.tables); `reports.recommend` holds the decision rule as a pure function.

Reads only sweep.json and trials/*.json; imports only `advisor` of ours. pandas and matplotlib load
when a frame or a report is made, not at `import reports`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def results(sweep_dir: str | Path) -> pd.DataFrame:
    """One tidy row per attempt of every cell in SWEEP_DIR (see reports.frame for the columns)."""
    from reports.frame import results as _results

    return _results(sweep_dir)


__all__ = ["results"]

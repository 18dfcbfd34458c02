"""Cells and trial records, defined once: what the sweep plans, writes and what the report and the
calibration read back.

- `advisor.trials.matrix`: a matrix's axes expanded into cells (collapse per method from
  `advisor.config.methods`, exclusions, seeds, stable ids), the axes a command-line override or a
  small dataset rewrites, and the override syntax of a value (written and read back).
- `advisor.trials.record`: the typed, versioned trial record (one JSON per cell) and its attempts;
  records of older versions still read.
- `advisor.trials.store`: the files of a sweep folder, written atomically (a `kill -9` leaves the old
  file or the new one, never half of one) and read back as typed records.

Pure: imports only `advisor.config` and `advisor.errors` of ours, no torch, hydra, optuna or pandas.
"""

from advisor.trials.matrix import Cell, cell_id, expand, format_value, parse_value, validate_matrix
from advisor.trials.record import RECORD_VERSION, Attempt, RecordError, TrialRecord

__all__ = [
    "RECORD_VERSION",
    "Attempt",
    "Cell",
    "RecordError",
    "TrialRecord",
    "cell_id",
    "expand",
    "format_value",
    "parse_value",
    "validate_matrix",
]

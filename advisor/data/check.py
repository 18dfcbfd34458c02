"""`tunewise data check|prepare`: every problem of a dataset with its line numbers, and its token statistics.

Checks (per file; the validation file gets the same ones), each reported with a count and the first
MAX_LINES line numbers (JSONL/CSV lines; row numbers for JSON, Parquet and datasets folders):
- problems (exit code 1; `prepare` removes or fixes them): no_rows (an empty file), malformed, schema, missing, empty,
  unknown_role, stray_whitespace, exact_duplicate, near_duplicate, conflicting_answer and, with
  data.val_path, val_overlap_exact / val_overlap_near (training rows that reappear in validation);
- warnings (reported, exit code stays 0; `prepare` keeps the rows): truncated (longer than
  train.seq_len tokens), mixed_templates (prompt templates such as "### Instruction:" in some rows
  only), mixed_shapes (instruction/response rows and chat rows in one file).
Duplicates keep the first occurrence: a later row is the duplicate, paired with the line it repeats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advisor.config.schema import RunConfig
from advisor.data import neardup
from advisor.data.dataset import PROBLEM_KINDS, DataError, path_problems
from advisor.data.scan import SHAPES, STYLES, Scan, scan
from advisor.data.stats import TokenCounter

MAX_LINES = 10  # line numbers listed per check
WARNINGS = ("truncated", "mixed_templates", "mixed_shapes")
# Why `prepare` drops a readable row, in priority order (code = index; 0 = kept).
DROP_REASONS = ("kept", "exact_duplicate", "conflicting_answer", "near_duplicate", "val_overlap_exact",
                "val_overlap_near")  # fmt: skip
DESCRIPTIONS = {
    "no_rows": "the file holds no rows (empty, or blank lines only)",
    "malformed": "unparseable line or row",
    "schema": "row of the wrong shape or type",
    "missing": "required field missing",
    "empty": "field empty or whitespace-only",
    "unknown_role": "chat role outside system/user/assistant",
    "stray_whitespace": "field starts or ends with whitespace",
    "exact_duplicate": "identical to an earlier row",
    "near_duplicate": f"≥{neardup.THRESHOLD:.0%} similar to an earlier row (word-bigram Jaccard, MinHash), not identical",
    "conflicting_answer": "same prompt as an earlier row, different answer",
    "val_overlap_exact": "training row identical to a validation row",
    "val_overlap_near": "training row near-duplicate of a validation row",
    "truncated": "longer than train.seq_len tokens: training truncates it",
    "mixed_templates": "prompt template differs from most rows",
    "mixed_shapes": "instruction/response and chat rows mixed; row is in the minority shape",
}


@dataclass
class FileResult:
    """The checks of one file and, for its readable rows, why `prepare` would drop each (DROP_REASONS
    code) and the line it repeats (0 = none)."""

    scan: Scan
    checks: list[dict]
    drop: np.ndarray  # uint8 per readable row
    ref: np.ndarray  # int64 per readable row: the line it duplicates / conflicts with / overlaps


def _check(name: str, file: str, rows: np.ndarray, refs: np.ndarray | None = None, **extra) -> dict:
    """rows: line numbers flagged (sorted); refs: the line each repeats (same order), for pair checks."""
    out = {
        "name": name,
        "file": file,
        "severity": "warning" if name in WARNINGS else "problem",
        "count": int(len(rows)),
        "lines": [int(x) for x in rows[:MAX_LINES]],
        "description": DESCRIPTIONS[name],
        **extra,
    }
    if refs is not None:
        out["pairs"] = [[int(a), int(b)] for a, b in zip(rows[:MAX_LINES], refs[:MAX_LINES], strict=True)]
    return out


def _firsts(keys: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row with the same key."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)]


def _minority(values: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Rows whose value differs from the most common one, and the count of each value."""
    counts = np.bincount(values) if len(values) else np.zeros(0, dtype=np.int64)
    present = {int(v): int(c) for v, c in enumerate(counts) if c}
    if len(present) < 2:
        return np.zeros(0, dtype=np.int64), present
    return np.flatnonzero(values != int(counts.argmax())), present


def analyse(s: Scan, file: str, seq_len: int, estimated: bool, val: Scan | None = None) -> FileResult:
    """Every check of one scanned file (and, given `val`, its overlap with the validation file)."""
    checks = []
    # an empty file is a problem, not a clean dataset: nothing to train or evaluate on
    checks.append({**_check("no_rows", file, np.zeros(0, dtype=np.int64)), "count": int(s.read == 0)})
    for k, kind in enumerate(PROBLEM_KINDS):
        checks.append(_check(kind, file, np.unique(s.bad_lines[s.bad_kinds == k])))
    checks.append(_check("stray_whitespace", file, s.lines[s.stray_ws]))
    n = s.rows
    drop = np.zeros(n, dtype=np.uint8)
    ref = np.zeros(n, dtype=np.int64)

    def mark(code: int, idx: np.ndarray, ref_idx_lines: np.ndarray) -> None:
        new = drop[idx] == 0
        drop[idx[new]], ref[idx[new]] = code, ref_idx_lines[new]

    first = _firsts(s.exact) if n else np.zeros(0, dtype=np.int64)
    exact = np.flatnonzero(first != np.arange(n))
    checks.append(_check("exact_duplicate", file, s.lines[exact], s.lines[first[exact]]))
    mark(1, exact, s.lines[first[exact]])

    pfirst = _firsts(s.prompt) if n else np.zeros(0, dtype=np.int64)
    conflict = np.flatnonzero((s.response != s.response[pfirst]) & (s.prompt != 0))
    checks.append(_check("conflicting_answer", file, s.lines[conflict], s.lines[pfirst[conflict]]))
    mark(2, conflict, s.lines[pfirst[conflict]])

    roots = neardup.cluster_roots(n, neardup.near_pairs(s.sig))
    # each row under its most specific check: identical rows and conflicting answers are not repeated here
    near = np.flatnonzero(
        (roots != np.arange(n)) & (first == np.arange(n)) & ~np.isin(np.arange(n), conflict)
    )
    checks.append(_check("near_duplicate", file, s.lines[near], s.lines[roots[near]]))
    mark(3, near, s.lines[roots[near]])

    if val is not None:
        in_val = np.isin(s.exact, val.exact)
        vidx = {int(h): int(line) for h, line in zip(val.exact[::-1], val.lines[::-1], strict=True)}
        ov = np.flatnonzero(in_val)
        ov_ref = np.array([vidx[int(h)] for h in s.exact[ov]], dtype=np.int64)
        checks.append(_check("val_overlap_exact", file, s.lines[ov], ov_ref))
        mark(4, ov, ov_ref)
        pairs = neardup.cross_pairs(val.sig, s.sig)
        pairs = pairs[~in_val[pairs[:, 1]]] if len(pairs) else pairs
        rows, pos = np.unique(pairs[:, 1], return_index=True)
        checks.append(_check("val_overlap_near", file, s.lines[rows], val.lines[pairs[pos, 0]]))
        mark(5, rows, val.lines[pairs[pos, 0]])

    long = np.flatnonzero(s.tokens > seq_len)
    label = " (estimated: bytes/4)" if estimated else ""
    checks.append(_check("truncated", file, s.lines[long], seq_len=seq_len, tokens_estimated=estimated,
                         description=f"longer than train.seq_len={seq_len} tokens{label}: training truncates it"))  # fmt: skip
    rows, present = _minority(s.styles)
    checks.append(
        _check("mixed_templates", file, s.lines[rows], styles={STYLES[k]: c for k, c in present.items()})
    )
    rows, present = _minority(s.shapes)
    checks.append(
        _check("mixed_shapes", file, s.lines[rows], shapes={SHAPES[k]: c for k, c in present.items()})
    )
    return FileResult(s, checks, drop, ref)


def check(cfg: RunConfig) -> tuple[dict, list[FileResult]]:
    """The `data check` JSON document for data.path (and data.val_path), and the per-file results."""
    bad_paths = path_problems(cfg.data.path, "data.path")
    if cfg.data.val_path:
        bad_paths += path_problems(cfg.data.val_path, "data.val_path")
    if bad_paths:
        raise DataError(bad_paths)
    counter = TokenCounter(cfg.model.path)
    seq_len = cfg.train.seq_len
    assert cfg.data.path is not None
    val = scan(cfg.data.val_path, cfg, counter) if cfg.data.val_path else None
    train = analyse(scan(cfg.data.path, cfg, counter), "train", seq_len, counter.tokenizer is None, val)
    results = [train]
    if val is not None:
        results.append(analyse(val, "val", seq_len, counter.tokenizer is None))
    checks = [c for r in results for c in r.checks]
    problems = sum(c["count"] for c in checks if c["severity"] == "problem")
    doc = {
        "command": "check",
        "path": cfg.data.path,
        "val_path": cfg.data.val_path,
        "clean": problems == 0,
        "problems": problems,
        "warnings": sum(c["count"] for c in checks if c["severity"] == "warning"),
        "checks": checks,
        "problem_messages": {r.checks[0]["file"]: r.scan.messages for r in results},  # first rows per file
        "stats": train.scan.stats(seq_len).to_dict(),
        "val_stats": val.stats(seq_len).to_dict() if val is not None else None,
        "near_duplicates": {
            "shingle_words": neardup.SHINGLE_WORDS,
            "minhashes": neardup.MINHASHES,
            "bands": neardup.BANDS,
            "threshold_jaccard": neardup.THRESHOLD,
        },  # fmt: skip
    }
    return doc, results

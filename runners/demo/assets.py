"""The embedded demo's assets: the pretrained base (outputs/demo/base) and the task data
(outputs/demo/data/train.jsonl), built on first use and cached.

`tunewise sweep` with no overrides points `model.path` and `data.path` here and calls
`ensure_assets` before planning. Each asset carries a version stamp (`tunewise_demo.json`); an asset
is rebuilt only when it is missing or was built by another version of its builder, so a change to
the generator or the base's recipe can never be mixed with a stale cache. Both builds are
deterministic in their seed and written atomically (temp file/folder, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from runners.demo import text as demo_text
from runners.demo.spec import BaseSpec

# Bump when the generated text or the base's recipe changes: cached assets are then rebuilt.
DATA_VERSION = 2  # 2: routing answers (category, size, weekend) instead of copied fields
BASE_VERSION = 2
DATA_ROWS = 1000  # rows in train.jsonl (the runner carves 10 % for validation, before any subsampling)
DATA_SEED = 0  # seeds the task rows
STAMP = "tunewise_demo.json"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _stamp_ok(path: Path, want: dict) -> bool:
    try:
        have = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return all(have.get(k) == v for k, v in want.items())


def data_stamp_path(data_path: str | Path) -> Path:
    p = Path(data_path)
    return p.with_name(STAMP)


def write_data(data_path: str | Path, rows: int = DATA_ROWS, seed: int = DATA_SEED) -> dict:
    """Write the demo task as instruction/input/output JSONL (atomically) and its stamp; return the stamp."""
    path = Path(data_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in demo_text.task_rows(rows, seed)]
    body = ("\n".join(lines) + "\n").encode()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(body)
    os.replace(tmp, path)
    stamp = {
        "data_version": DATA_VERSION,
        "rows": rows,
        "seed": seed,
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    sp = data_stamp_path(path)
    tmp = sp.with_name(f".{sp.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(tmp, sp)
    return stamp


def data_is_current(data_path: str | Path) -> bool:
    path = Path(data_path)
    want = {"data_version": DATA_VERSION, "rows": DATA_ROWS, "seed": DATA_SEED}
    if not path.is_file() or not _stamp_ok(data_stamp_path(path), want):
        return False
    have = json.loads(data_stamp_path(path).read_text())
    return have.get("sha256") == hashlib.sha256(path.read_bytes()).hexdigest()


def base_is_current(model_path: str | Path) -> bool:
    path = Path(model_path)
    needed = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    if not all((path / n).is_file() for n in needed):
        return False
    return _stamp_ok(path / STAMP, {"base_version": BASE_VERSION, "spec": asdict(BaseSpec())})


def ensure_assets(model_path: str | None, data_path: str | None) -> None:
    """Build whatever of the demo base (at model_path) and the demo data (at data_path) is missing or
    stale; a None path is left alone. Prints what it built and the base's held-out perplexity."""
    if data_path and not data_is_current(data_path):
        t0 = time.perf_counter()
        stamp = write_data(data_path)
        _say(f"demo data: wrote {stamp['rows']} rows to {data_path} in {time.perf_counter() - t0:.1f} s")
    if model_path and not base_is_current(model_path):
        from runners.demo.base import build_base

        _say(f"demo base: building {model_path} (first use; about a minute on 2 CPU cores)")
        build_base(model_path, BaseSpec(), stamp={"base_version": BASE_VERSION}, log=_say)

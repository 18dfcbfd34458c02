"""`tunewise data check|prepare`: runs the check or the preparation and prints its document."""

from __future__ import annotations

import json

from advisor.config.schema import RunConfig
from advisor.data.check import check
from advisor.data.prepare import prepare
from advisor.data.render import render


def run_data_command(sub: str, cfg: RunConfig, fmt: str = "rich") -> int:
    """`tunewise data check|prepare`. Exit code: check → 0 clean, 1 problems found (warnings alone
    keep 0); prepare → 0 once the cleaned split is written. Bad input raises ConfigError (exit 2)."""
    if sub == "prepare":
        doc = prepare(cfg)
        code = 0
    else:
        doc, _ = check(cfg)
        code = 0 if doc["clean"] else 1
    if fmt == "json":
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        render(doc)
    return code

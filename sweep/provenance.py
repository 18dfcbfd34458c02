"""sweep.json: what was swept, with what, where the study lives (password removed) and by which code."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from typing import Any

from advisor.config import catalog
from advisor.config.schema import RunConfig
from advisor.trials.store import now_iso
from sweep.compose import compose, flatten, override_value
from sweep.records import redact_url
from sweep.settings import SweepSettings

PACKAGES = (
    "tunewise",
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "accelerate",
    "optuna",
    "hydra-core",
    "sqlalchemy",
)


def _no_home(text: str) -> str:
    """Paths under the user's home as ~/… (sweep.json is shared; the home path is nobody's business)."""
    home = os.path.expanduser("~")
    return text.replace(home + "/", "~/") if home not in ("", "/") else text


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def git_revision() -> str | None:
    """HEAD of the repository tunewise runs from, with `+dirty` when there are uncommitted changes."""
    root = catalog.repo_root()
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


NOT_REPRODUCED = ("matrix", "sweep", "budget", "format", "breakdown")  # sections a single run sets itself
_HYDRA_SPECIAL = re.compile(r"[\s,\[\]{}()=:'\"\\$*?]|^$")


def _hydra_value(v: Any) -> str:
    """A value as the right-hand side of a Hydra override, quoted when Hydra would read it otherwise."""
    if isinstance(v, str) and (_HYDRA_SPECIAL.search(v) or v in ("null", "true", "false") or _number(v)):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, list):
        return "[" + ",".join(_hydra_value(x) for x in v) + "]"
    return override_value(v)


def _number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def reproduce_overrides(cfg_dict: dict[str, Any], overrides: list[str]) -> list[str]:
    """The overrides that turn `tunewise sweep matrix=single` into this sweep's base config: the user's
    group choices (model=, method=, gpu=, data=) and every key whose composed value differs — the
    training settings a matrix option like `demo` sets included. A report adds a cell's coordinates."""
    groups = [o for o in overrides if o.partition("=")[0] in ("model", "method", "gpu", "data")]
    single = flatten(compose("config", ["matrix=single", *groups]))
    out = list(groups)
    for key, value in flatten(cfg_dict).items():
        if key.split(".")[0] in NOT_REPRODUCED or single.get(key, _MISSING) == value:
            continue
        out.append(f"{'' if key in single else '+'}{key}={_hydra_value(value)}")
    return out


_MISSING = object()


def sweep_doc(
    settings: SweepSettings,
    matrix: dict[str, Any],
    notes: list[str],
    overrides: list[str],
    base: RunConfig,
    created: str | None,
    reproduce: list[str] | None = None,
) -> dict[str, Any]:
    """`matrix` is the matrix as run ({axes, exclude} after overrides and the rows cap: what the
    report expands to count the planned cells); `notes` says what was rewritten."""
    s = settings.to_dict()
    s["storage"] = _no_home(redact_url(settings.storage))
    s["dir"] = _no_home(s["dir"])
    return {
        "matrix": {
            "name": settings.matrix_name,
            "axes": matrix["axes"],
            "exclude": matrix["exclude"],
            **({"notes": notes} if notes else {}),
        },
        "overrides": [_no_home(redact_url(o)) for o in overrides],
        # `tunewise sweep matrix=single <these> <a cell's coordinates>` runs one cell as this sweep did
        "reproduce": [redact_url(o) for o in (reproduce or [])],
        "base_config": base.to_dict(),
        "storage": s["storage"],
        "study_name": settings.study_name,
        "settings": s,
        "budget": {"usd": base.budget_usd, "hours": base.budget_hours},
        "created": created or now_iso(),
        "updated": now_iso(),
        "git_revision": git_revision(),
        "versions": versions(),
    }

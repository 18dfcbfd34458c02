"""The trial record: one JSON file per cell (design.md's shape), typed, validated and versioned.

A record names its cell's coordinates once, in `coords` (key → typed value, in axis order); `overrides`
is written beside it for people and for design.md (the same coordinates as Hydra override strings)
and never read back. Values a cell does not vary come from `config`, the resolved configuration
(`RunConfig.to_dict()`): `TrialRecord.value(key)` is the one lookup, and a key the cell's method
ignores (rank for full fine-tuning) has no value.

Version 2 (this one) adds `version` and `coords`. Version 1 records (round 1: no `version`; `overrides`
as strings or as a mapping, `coords` sometimes, a top-level `seed`) still read: `from_dict` takes
their coordinates from `coords`, else from `overrides`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from advisor.config.methods import METHODS
from advisor.errors import ConfigError, Problems
from advisor.trials.matrix import config_key, extra_label, format_value, override_key, parse_value

RECORD_VERSION = 2
# design.md's statuses, plus `pending`: a record written before its cell started
STATUSES = ("pending", "running", "complete", "pruned", "infeasible", "over_budget", "failed", "oom")
FINISHED = ("complete", "pruned", "infeasible", "over_budget", "failed", "oom")
# `died`: its worker died mid-run; `interrupted`: the user stopped the sweep (Ctrl-C, SIGTERM) — no failure
ATTEMPT_STATUSES = (*STATUSES, "died", "interrupted")


class RecordError(ConfigError):
    """A record file that does not hold a trial record (names the file, the key and what is wrong)."""


def _dig(d: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


@dataclass
class Attempt:
    """One try at a cell: one Optuna trial (one runner process, or none for a skipped cell)."""

    trial_number: int | None
    started: str | None  # ISO time (UTC); None for a cell that never started a process
    ended: str | None
    status: str  # complete | pruned | oom | failed | infeasible | over_budget | running | died
    reason: str | None = None
    lr: float | None = None  # the learning rate this attempt ran with
    lr_index: int | None = None  # which of the cell's sweep.lr_trials (None: no runner)
    host: str | None = None
    pid: int | None = None
    evals: list[list[Any]] = field(default_factory=list)  # [step, fraction, eval_loss] as reported
    planned_steps: int | None = None
    eval_loss: float | None = None
    usd: float | None = None  # measured dollars of this attempt
    wall_s: float | None = None
    cpu_s: float | None = None  # user + system CPU seconds of its runner process
    cause: str | None = None  # why a failed/died attempt failed (sweep.retry.CAUSES): what its retries count

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str, p: Problems) -> Attempt:
        status = d.get("status")
        if status not in ATTEMPT_STATUSES:
            p.add(f"{where}.status", status, "unknown attempt status", ATTEMPT_STATUSES)
        evals = d.get("evals")
        return cls(
            trial_number=_int(d.get("trial_number")),
            started=d.get("started") if isinstance(d.get("started"), str) else None,
            ended=d.get("ended") if isinstance(d.get("ended"), str) else None,
            status=str(status),
            reason=None if d.get("reason") is None else str(d.get("reason")),
            lr=_num(d.get("lr")),
            lr_index=_int(d.get("lr_index")),
            host=d.get("host") if isinstance(d.get("host"), str) else None,
            pid=_int(d.get("pid")),
            evals=[list(e) for e in evals if isinstance(e, (list, tuple))] if isinstance(evals, list) else [],
            planned_steps=_int(d.get("planned_steps")),
            eval_loss=_num(d.get("eval_loss")),
            usd=_num(d.get("usd")),
            wall_s=_num(d.get("wall_s")),
            cpu_s=_num(d.get("cpu_s")),
            cause=d.get("cause") if isinstance(d.get("cause"), str) else None,
        )


@dataclass
class TrialRecord:
    """trials/<cell_id>.json: the cell, its resolved config and estimate, what was measured, every attempt."""

    cell_id: str
    coords: dict[str, Any]  # the cell's coordinates (key → value, axis order): the one source of them
    config: dict[str, Any] | None  # RunConfig.to_dict() of the batch-fitted config (None: it did not build)
    status: str = "pending"
    reason: str | None = None
    estimate: dict[str, Any] | None = None  # the advise row of `config`
    measured: dict[str, Any] | None = None  # the chosen attempt's result.json `measured`
    attempts: list[Attempt] = field(default_factory=list)
    provenance: dict[str, Any] | None = None  # versions, device, seed, git_revision
    lr: float | None = None  # learning rate of the chosen attempt
    lr_trials: int = 1  # sweep.lr_trials when the cell was planned
    lr_results: list[dict[str, Any]] | None = None  # per LR trial {lr, status, eval_loss}, when > 1
    spent: dict[str, float] | None = None  # {usd, wall_s, cpu_s} over every attempt that ran
    heartbeat: dict[str, Any] | None = None  # last sign of life of the running attempt
    version: int = RECORD_VERSION
    repaired: str | None = None  # set when the file was unreadable and rebuilt from cells/<id>/ (what, when)

    # -- coordinates and values --------------------------------------------------------------------
    @property
    def overrides(self) -> list[str]:
        """The coordinates as Hydra overrides (`method=lora`, `method.r=16`)."""
        return [f"{k}={format_value(v)}" for k, v in self.coords.items()]

    def value(self, key: str, base: dict[str, Any] | None = None) -> Any:
        """The value of a config key for this cell: its coordinate, else its resolved config (else
        `base`, the sweep's base config, for a cell whose config did not build). A config group
        (`method`, `gpu`, `model`) gives its option's name. None for a key its method ignores."""
        if key in self.coords:
            return self.coords[key]
        method = self.coords.get("method") or _dig(self.config or base, "method", "name")
        if key != "method" and method in METHODS and key in METHODS[method].ignores:
            return None
        node = _dig(self.config or base, *key.split("."))
        return node.get("name") if isinstance(node, dict) else node

    @property
    def method(self) -> str | None:
        v = self.value("method")
        return None if v is None else str(v)

    @property
    def r(self) -> int | None:
        return _int(self.value("method.r"))

    @property
    def rows(self) -> int | None:
        return _int(self.value("data.rows"))

    @property
    def seed(self) -> int | None:
        return _int(self.value("seed"))

    @property
    def learning_rate(self) -> float | None:
        """The chosen attempt's learning rate; else the cell's `train.lr`."""
        return self.lr if self.lr is not None else _num(self.value("train.lr"))

    @property
    def group_key(self) -> str:
        """The configuration this cell repeats (coordinates without seed and learning rate)."""
        return config_key(self.coords)

    @property
    def extra(self) -> str:
        return extra_label(self.coords)

    # -- reading and writing ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "cell_id": self.cell_id,
            "coords": dict(self.coords),
            "overrides": self.overrides,
            "config": self.config,
            "status": self.status,
            "reason": self.reason,
            "estimate": self.estimate,
            "measured": self.measured,
            "attempts": [a.to_dict() for a in self.attempts],
            "provenance": self.provenance,
            "lr": self.lr,
            "lr_trials": self.lr_trials,
            "lr_results": self.lr_results,
            "spent": self.spent,
            "heartbeat": self.heartbeat,
            **({"repaired": self.repaired} if self.repaired else {}),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "record") -> TrialRecord:
        """A record from its JSON (this version or an older one); RecordError naming `where` and
        every problem when it is not one."""
        p = Problems()
        if not isinstance(d, dict):
            raise RecordError(f"{where}: not a JSON object ({type(d).__name__})")
        version = d.get("version", 1)
        if _int(version) is None or not 1 <= version <= RECORD_VERSION:
            p.add(
                f"{where}: version",
                version,
                f"unknown record version (this tunewise reads 1 to {RECORD_VERSION})",
            )
        cid = d.get("cell_id")
        if not isinstance(cid, str) or not cid:
            p.add(f"{where}: cell_id", cid, "must be a non-empty string")
        status = d.get("status")
        if status not in STATUSES:
            p.add(f"{where}: status", status, "unknown status", STATUSES)
        for key in ("config", "estimate", "measured", "provenance", "heartbeat", "spent"):
            if d.get(key) is not None and not isinstance(d[key], dict):
                p.add(f"{where}: {key}", d[key], "must be a mapping or null")
        attempts = d.get("attempts") or []
        if not isinstance(attempts, list) or not all(isinstance(a, dict) for a in attempts):
            p.add(f"{where}: attempts", attempts, "must be a list of mappings")
            attempts = []
        coords = _coords(d, where, p)
        parsed = [Attempt.from_dict(a, f"{where}: attempts[{i}]", p) for i, a in enumerate(attempts)]
        if p.items:
            raise RecordError(p.items)
        results = d.get("lr_results")
        return cls(
            cell_id=str(cid),
            coords=coords,
            config=d.get("config"),
            status=str(status),
            reason=None if d.get("reason") in (None, "") else str(d["reason"]),
            estimate=d.get("estimate"),
            measured=d.get("measured"),
            attempts=parsed,
            provenance=d.get("provenance"),
            lr=_num(d.get("lr")),
            lr_trials=_int(d.get("lr_trials")) or 1,
            lr_results=[r for r in results if isinstance(r, dict)] if isinstance(results, list) else None,
            spent=d.get("spent"),
            heartbeat=d.get("heartbeat"),
            repaired=d.get("repaired") if isinstance(d.get("repaired"), str) else None,
        )


def _coords(d: dict[str, Any], where: str, p: Problems) -> dict[str, Any]:
    """Version 2: `coords`. Version 1: `coords` when the sweep wrote it, else `overrides` (a mapping,
    or `key=value` strings in override syntax)."""
    coords = d.get("coords")
    if isinstance(coords, dict):
        return {str(k): v for k, v in coords.items()}
    if coords is not None:
        p.add(f"{where}: coords", coords, "must be a mapping of config key to value")
        return {}
    overrides = d.get("overrides")
    if isinstance(overrides, dict):
        return {override_key(str(k)): v for k, v in overrides.items()}
    if isinstance(overrides, list) and all(isinstance(o, str) and "=" in o for o in overrides):
        return {override_key(o): parse_value(o.partition("=")[2]) for o in overrides}
    if overrides is not None:
        p.add(f"{where}: overrides", overrides, "must be a list of key=value strings or a mapping")
    return {}

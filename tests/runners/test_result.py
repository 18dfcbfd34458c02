"""result.json's shape is the typed result's: design.md's `measured` keys and docs/internals.md's
additions are all there (extend, never drop), and the file is `CellResult.to_dict()`."""

from __future__ import annotations

import dataclasses
import json

from runners.result import CellResult, Measured, Progress, Provenance

DESIGN_KEYS = [  # design.md, "Sweep: cells, trials and records": a record's measured
    "allocated_gib",
    "reserved_gib",
    "device_gib",
    "rss_gib",
    "tokens_per_s",
    "train_tokens",
    "padding_fraction",
    "wall_s",
    "usd",
    "eval_loss",
    "eval_curve",
    "metric",
    "trainable_params",
    "adapter_bytes",
]
INTERNALS_KEYS = [  # docs/internals.md, "Runner"
    "steps",
    "planned_steps",
    "static_bytes",
    "truncated_examples",
    "metric_name",
    "metric_rows",
    "resumed_from_step",
]


def _measured() -> Measured:
    p = Progress(step=3, eval_curve=[[3, 1.0, 2.5]], train_tokens=90, batch_tokens=120)
    values = {f.name: None for f in dataclasses.fields(Measured)}
    values.update(
        train_tokens=p.train_tokens, wall_s=p.wall_s, usd=0.0, eval_curve=p.eval_curve, steps=p.step
    )
    return Measured(**values)


def test_measured_has_every_promised_key(tmp_path):
    fields = [f.name for f in dataclasses.fields(Measured)]
    assert set(DESIGN_KEYS + INTERNALS_KEYS) <= set(fields)
    result = CellResult(
        status="complete",
        reason=None,
        measured=_measured(),
        provenance=Provenance(versions={"torch": "2"}, device="cpu: x", seed=0, git_revision=None),
    )
    result.write(tmp_path)
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc == result.to_dict() and not list(tmp_path.glob("*.tmp"))
    assert list(doc) == ["status", "reason", "measured", "provenance"]
    assert list(doc["measured"]) == fields
    assert doc["provenance"] == {
        "versions": {"torch": "2"},
        "device": "cpu: x",
        "seed": 0,
        "git_revision": None,
    }


def test_unreadable_config_writes_empty_measured(tmp_path):
    CellResult(status="failed", reason="ConfigError: x").write(tmp_path)
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc == {"status": "failed", "reason": "ConfigError: x", "measured": {}, "provenance": {}}


def test_progress_round_trips_through_a_checkpoint_state():
    p = Progress(step=4, loss=1.5, eval_curve=[[2, 0.5, 3.0]], train_tokens=10, static_bytes={"weights": 8})
    state = json.loads(json.dumps(p.to_state()))  # checkpoint.save stores it as JSON
    assert Progress.from_state(state) == p

"""The Optuna side without a runner: trials carry the cell's coordinates, skipped cells are PRUNED with
their reason, the median pruner stops a clearly losing curve, LR proposals are per cell and seeded."""

from __future__ import annotations

import pytest

from advisor.errors import ConfigError
from advisor.trials.matrix import expand
from sweep.study import (
    LR_RANGES,
    ask_trial,
    make_pruner,
    open_study,
    should_prune,
    suggest_lr,
    tell_end,
    tell_skipped,
)

AXES = {"method": ["full", "lora"], "method.r": [4, 16], "data.rows": [10, 20]}


def _study(tmp_path, pruner="median"):
    return open_study(f"sqlite:///{tmp_path / 'study.db'}", "s", make_pruner(pruner, 6))


def test_trials_carry_cell_coordinates_and_skips_are_pruned_with_reason(tmp_path):
    study = _study(tmp_path)
    cells = expand({"axes": AXES}, "lora")
    lora = next(c for c in cells if c.coords["method"] == "lora")
    t = ask_trial(study, lora, AXES, [0], 2e-4, "lora", {"cell_id": lora.cell_id})
    assert t.params == {**lora.coords, "lr": 2e-4}
    tell_end(study, t, "complete", 1.5, None)
    full = next(c for c in cells if c.coords["method"] == "full")
    n = tell_skipped(study, full, AXES, [0], "infeasible", "does not fit")
    again = _study(tmp_path)  # reopening is idempotent (load_if_exists)
    frozen = again.trials[n]
    assert frozen.state.name == "PRUNED" and frozen.user_attrs["reason"] == "does not fit"
    assert frozen.params == full.coords and "method.r" not in frozen.params
    assert again.best_trial.params["method"] == "lora" and again.best_value == 1.5


def test_median_pruner_stops_a_losing_curve_after_startup_trials(tmp_path):
    study = _study(tmp_path)
    cells = expand({"axes": AXES}, "lora")
    for c, curve in zip(cells[:2], ([3.0, 2.0, 1.5, 1.2], [3.1, 2.1, 1.6, 1.3]), strict=True):
        t = ask_trial(study, c, AXES, [0], None, "lora", {})
        assert not any(should_prune(t, i, v) for i, v in enumerate(curve))
        tell_end(study, t, "complete", curve[-1], None)
    loser = ask_trial(study, cells[2], AXES, [0], None, "lora", {})
    assert not should_prune(loser, 0, 5.0)  # never at the first eval (warm-up)
    assert should_prune(loser, 1, 5.0)
    winner = ask_trial(study, cells[3], AXES, [0], None, "lora", {})
    assert not should_prune(winner, 1, 1.9)


def test_lr_proposals_stay_in_the_method_range_and_repeat_on_rerun():
    lo, hi = LR_RANGES["full"]
    first = [
        suggest_lr("full", [], seed=0xFFFFFF + 3, index=i) for i in range(3)
    ]  # cell-hash seeds are large
    assert all(lo <= x <= hi for x in first) and len(set(first)) == 3
    assert first == [suggest_lr("full", [], seed=0xFFFFFF + 3, index=i) for i in range(3)]
    hist = [(1e-5, 2.0), (5e-5, 1.0), (8e-6, 2.5)]
    assert lo <= suggest_lr("full", hist, seed=3, index=3) <= hi


def test_unknown_pruner_names_the_allowed_ones():
    with pytest.raises(ConfigError, match="successive_halving"):
        make_pruner("best", 4)

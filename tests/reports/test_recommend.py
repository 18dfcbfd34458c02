"""The recommendation rule, table-driven on hand-written cells (reports.recommend is pure)."""

from __future__ import annotations

import pytest

from reports.recommend import NOISE_GAIN, TOLERANCE_GAIN, CellResult, gain_fraction, recommend

GPU = "NVIDIA A100 80GB SXM4"


def C(method, r, rows, losses, usd, status="complete", hours=None, peak=None, **kw) -> CellResult:
    losses = (losses,) if isinstance(losses, float) else tuple(losses or ())
    return CellResult(
        method, r, rows, status, losses, None, usd, hours if hours is not None else usd, peak, **kw
    )


BASE = 2.0

CASES = {
    # name: (cells, baseline, kwargs, expected pick label, phrases that must appear)
    "cheapest within tolerance of the best": (
        [
            C("full", None, 10000, 1.00, 45.0),
            C("lora", 16, 10000, 1.03, 4.10),
            C("lora", 64, 10000, 1.01, 5.0),
            C("qlora", 16, 10000, 1.08, 2.30),
        ],
        BASE,
        {},
        "LoRA r=16 · 10,000 rows",
        [
            "Use LoRA r=16 with all 10,000 rows: 97 % of full fine-tuning's gain at 9 % of its cost ($4.10 vs $45 per run"
        ],
    ),
    "full only when LoRA falls short": (
        [C("full", None, 1000, 1.00, 9.0), C("lora", 16, 1000, 1.20, 1.0), C("qlora", 16, 1000, 1.25, 0.8)],
        BASE,
        {},
        "Full · 1,000 rows",
        ["Use full fine-tuning with all 1,000 rows: the lowest eval loss measured, 1.000"],
    ),
    "adapters before full when equally good, even if full is cheaper": (
        [C("full", None, 600, 1.00, 0.02), C("lora", 16, 600, 1.02, 0.03)],
        BASE,
        {},
        "LoRA r=16 · 600 rows",
        ["98 % of full fine-tuning's gain"],
    ),
    "budget-constrained pick": (
        [
            C("full", None, 10000, 1.00, 45.0),
            C("lora", 16, 10000, 1.15, 4.0),
            C("lora", 64, 10000, 1.06, 12.0),
        ],
        BASE,
        {"budget_usd": 15.0},
        "LoRA r=64 · 10,000 rows",
        [
            "94 % of full fine-tuning's gain",
            "The lowest loss overall, Full · 10,000 rows, is over the per-run budget ($15: $45)",
        ],
    ),
    "hours budget": (
        [C("lora", 16, 1000, 1.05, 2.0, hours=1.0), C("lora", 16, 10000, 1.00, 20.0, hours=10.0)],
        BASE,
        {"budget_hours": 5.0},
        "LoRA r=16 · 1,000 rows",
        ["is over the per-run budget (5 h: $20)"],
    ),
    "only QLoRA fits": (
        [
            C("full", None, 1000, None, None, "infeasible"),
            C("lora", 16, 1000, None, None, "infeasible"),
            C("lora", 64, 1000, None, None, "oom"),
            C("qlora", 16, 1000, 1.10, 3.0),
            C("qlora", 64, 1000, 1.09, 3.4),
        ],
        BASE,
        {},
        "QLoRA r=16 · 1,000 rows",
        [
            "Full fine-tuning and LoRA did not fit on NVIDIA A100 80GB SXM4 (infeasible / out of memory), "
            "so gains are relative to the best cell.",
        ],
    ),
    "full failed with OOM": (
        [
            C("full", None, 1000, None, None, "oom"),
            C("lora", 16, 1000, 1.10, 3.0),
            C("lora", 16, 5000, 1.02, 12.0),
        ],
        BASE,
        {},
        "LoRA r=16 · 5,000 rows",
        [
            "Use LoRA r=16 with all 5,000 rows: the lowest eval loss measured, 1.020 (untrained base 2.000)",
            "Full fine-tuning did not fit on NVIDIA A100 80GB SXM4 (out of memory), so gains are relative to the best cell.",
        ],
    ),
    "full failed for another reason": (
        [C("full", None, 1000, None, None, "failed"), C("lora", 16, 1000, 1.10, 3.0)],
        BASE,
        {},
        "LoRA r=16 · 1,000 rows",
        ["Full fine-tuning did not finish, so gains are relative to the best cell."],
    ),
    "no full fine-tuning in the sweep": (
        [C("lora", 8, 1000, 1.10, 3.0), C("lora", 16, 1000, 1.09, 3.1), C("qlora", 16, 1000, 1.30, 2.0)],
        BASE,
        {},
        "LoRA r=8 · 1,000 rows",
        [
            "99 % of the best cell's gain",
            "Full fine-tuning is not in this sweep, so gains are relative to the best cell.",
        ],
    ),
    "sweep still running": (
        [
            C("lora", 16, 1000, 1.10, 3.0),
            C("lora", 16, 5000, None, None, "running"),
            C("qlora", 16, 1000, None, None, "running"),
        ],
        BASE,
        {"running": (1, 6)},
        "LoRA r=16 · 1,000 rows",
        ["Provisional (1 of 6 cells finished):"],
    ),
    "two cells within seed noise: the cheaper wins": (
        [C("lora", 64, 1000, (1.00, 1.06, 0.94), 10.0), C("lora", 16, 1000, (1.04, 1.10, 0.98), 3.0)],
        1.5,
        {},
        "LoRA r=16 · 1,000 rows",
        ["by less than their seed-to-seed spread, so the cheaper one is recommended"],
    ),
    "same gap, tight seeds: not noise, the better one wins": (
        [C("lora", 64, 1000, (1.00, 1.005, 0.995), 10.0), C("lora", 16, 1000, (1.04, 1.045, 1.035), 3.0)],
        1.5,
        {},
        "LoRA r=64 · 1,000 rows",
        ["the lowest eval loss measured, 1.000"],
    ),
    "no baseline: tolerance on eval loss": (
        [C("lora", 16, 1000, 1.005, 3.0), C("lora", 64, 1000, 1.00, 6.0), C("qlora", 16, 1000, 1.03, 2.0)],
        None,
        {},
        "LoRA r=16 · 1,000 rows",
        ["eval loss 1.005 vs 1.000 for LoRA r=64 · 1,000 rows"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_recommendation_table(name):
    cells, baseline, kw, expected, phrases = CASES[name]
    rec = recommend(cells, baseline, GPU, **kw)
    assert rec.pick is not None, rec.text
    assert rec.pick.label == expected, f"{name}: picked {rec.pick.label}\n{rec.text}"
    for ph in phrases:
        assert ph in rec.text, f"{name}: missing {ph!r} in\n{rec.text}"


def test_within_noise_flag_and_rule_text():
    rec = recommend(CASES["two cells within seed noise: the cheaper wins"][0], 1.5, GPU)
    assert rec.within_noise and rec.best.label == "LoRA r=64 · 1,000 rows"
    assert f"{TOLERANCE_GAIN:.0%}".replace("%", " %") in rec.rule
    rec1 = recommend([C("lora", 16, 1000, 1.0, 1.0), C("lora", 8, 1000, 1.004, 0.5)], 1.5, GPU)
    assert rec1.pick.r == 8  # 0.004 < 1 % of the 0.5 gain: noise, and within tolerance anyway
    assert f"{NOISE_GAIN:.0%}".replace("%", " %") in rec1.rule


def test_nothing_to_recommend():
    assert "no trial records yet" in recommend([], 2.0, GPU).text
    running = recommend([C("lora", 16, 1000, None, None, "running")], 2.0, GPU, running=(0, 4))
    assert running.pick is None and "No recommendation yet: 0 of 4 cells finished" in running.text
    failed = recommend(
        [C("full", None, 1000, None, None, "oom"), C("lora", 16, 1000, None, None, "failed")], 2.0, GPU
    )
    assert failed.pick is None and "no cell completed training" in failed.text
    broke = recommend([C("lora", 16, 1000, 1.0, 30.0)], 2.0, GPU, budget_usd=10.0)
    assert broke.pick is None and "No finished cell fits the per-run budget of $10" in broke.text


def test_small_card_sentence_only_from_advisor_numbers():
    cells = [
        C("lora", 16, 1000, 1.00, 4.0, small_card_fits=False),
        C("qlora", 16, 1000, 1.03, 3.0, small_card_fits=True, small_card_usd=2.3),
    ]
    rec = recommend(cells, 2.0, GPU, small_card="24 GB card (GeForce RTX 4090)")
    assert rec.pick.method == "qlora"  # cheaper and within 5 %
    assert (
        "On a 24 GB card (GeForce RTX 4090), the same QLoRA r=16 fits for an estimated $2.30 per run"
        in rec.text
    )
    cells[0] = C("lora", 16, 1000, 1.00, 2.0, small_card_fits=False)
    rec = recommend(cells, 2.0, GPU, small_card="24 GB card (GeForce RTX 4090)")
    assert rec.pick.method == "lora"
    assert "On a 24 GB card (GeForce RTX 4090), QLoRA r=16 reaches 97 % for an estimated $2.30" in rec.text
    rec = recommend(cells, 2.0, GPU)  # no advisor numbers: no sentence
    assert "24 GB" not in rec.text
    too_big = [C("lora", 16, 1000, 1.00, 2.0, small_card_fits=False, small_card_gib=31.0),
               C("qlora", 16, 1000, 1.03, 3.0, small_card_fits=False, small_card_gib=26.5)]  # fmt: skip
    rec = recommend(too_big, 2.0, GPU, small_card="24 GB card (GeForce RTX 4090)")
    assert "No measured configuration fits a 24 GB card (GeForce RTX 4090), even at micro-batch 1" in rec.text
    assert "QLoRA r=16, at 26.5 GiB" in rec.text


def test_gain_fraction_and_std():
    full, lora = C("full", None, 1, 1.0, 1.0), C("lora", 8, 1, (1.2, 1.4), 1.0)
    assert gain_fraction(lora, full, 2.0) == pytest.approx(0.7)
    assert gain_fraction(lora, full, None) is None
    assert gain_fraction(lora, full, 0.5) is None  # the base is better than the reference: no gain to share
    assert lora.std == pytest.approx(0.1414, abs=1e-4) and full.std is None

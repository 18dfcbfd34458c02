"""The quality prior: how close LoRA and QLoRA usually get to full fine-tuning, before measuring.

This is a prior from the literature, not a measurement of the user's task: the advise document and
the terminal table label it as such, and the sweep replaces it with measured eval loss.
"""

from __future__ import annotations

from typing import Any

KIND = "prior (literature), not a measurement"
SOURCE = (
    "tunewise product brief, summarising the LoRA (Hu et al. 2021, arXiv:2106.09685) and QLoRA "
    "(Dettmers et al. 2023, arXiv:2305.14314) literature. Task- and data-dependent: measure it "
    "on your data with `tunewise sweep`."
)

# Task quality relative to full fine-tuning on the same data (percent; full = 100 by definition).
RELATIVE_QUALITY_PCT: dict[str, tuple[float, float]] = {
    "full": (100.0, 100.0),
    "lora": (90.0, 95.0),
    "qlora": (88.0, 93.0),
}


def quality_prior(methods: tuple[str, ...]) -> dict[str, Any]:
    """The prior for `methods`: {"kind", "source", "relative_to": "full", "methods": {m: {low, high}}}."""
    return {
        "kind": KIND,
        "source": SOURCE,
        "relative_to": "full",
        "methods": {
            m: {"low_pct": RELATIVE_QUALITY_PCT[m][0], "high_pct": RELATIVE_QUALITY_PCT[m][1]}
            for m in methods
        },
    }

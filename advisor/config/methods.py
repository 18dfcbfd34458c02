"""The fine-tuning methods, defined once: names, how people read them, and the keys each ignores.

Every table of method names (the advise table, the verdict's sentences, the report's columns and
plots, the matrix's collapse rule) reads this one, so a method added or renamed here is added or
renamed everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

LORA_KEYS = ("method.r", "method.alpha", "method.dropout", "method.target_modules")
QUANT_KEYS = ("method.quant_type", "method.double_quant")


@dataclass(frozen=True)
class Method:
    name: str  # the config value (`method=lora`)
    short: str  # column and legend label ("Full", "LoRA")
    title: str  # heading / start of a sentence ("Full fine-tuning")
    phrase: str  # inside a sentence ("full fine-tuning")
    ignores: tuple[str, ...]  # config keys without effect for this method: a matrix axis over them collapses


METHODS: dict[str, Method] = {
    "full": Method("full", "Full", "Full fine-tuning", "full fine-tuning", LORA_KEYS + QUANT_KEYS),
    "lora": Method("lora", "LoRA", "LoRA", "LoRA", QUANT_KEYS),
    "qlora": Method("qlora", "QLoRA", "QLoRA", "QLoRA", ()),
}
METHOD_NAMES = tuple(METHODS)  # ("full", "lora", "qlora"): the allowed values of `method`


def short(name: str) -> str:
    """ "Full" / "LoRA" / "QLoRA"; an unknown name as it is."""
    m = METHODS.get(name)
    return m.short if m else name


def title(name: str) -> str:
    m = METHODS.get(name)
    return m.title if m else name


def phrase(name: str) -> str:
    m = METHODS.get(name)
    return m.phrase if m else name

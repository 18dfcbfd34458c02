"""conf/ YAML is the one source of defaults and the dataclasses are its schema: every key of a YAML
section is a field of its dataclass and every field a key, with agreeing types; from_names, the
dataclass defaults and the sweep's settings give what composing conf/ gives."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from advisor.config import catalog, fieldtypes
from advisor.config.schema import (
    GROUPS,
    OTHER_KEYS,
    OUTPUT_ONLY,
    SECTION_TYPES,
    SECTIONS,
    TOP_LEVEL,
    DataConfig,
    PriceRow,
    RunConfig,
    TrainConfig,
    from_names,
)
from sweep.commands import OUTPUT_FORMATS
from sweep.compose import compose
from sweep.settings import DERIVED, NULL_DERIVED, SweepSettings, settings_from

# Keys whose YAML null means "read this machine when the config is built" (resolved, then recorded).
DETECTED = {("cpu", "usable_mib")}


def _mismatches(section: dict[str, Any], cls: type, where: str, *, partial: bool = False) -> list[str]:
    hints = fieldtypes.hints(cls)
    out = [f"{where}: {k} is no field of {cls.__name__}" for k in set(section) - set(hints)]
    if not partial:
        out += [f"{where}: field {k} of {cls.__name__} is not in the YAML" for k in set(hints) - set(section)]
    out += [
        f"{where}: {k}={v!r} is not {fieldtypes.describe(hints[k])}"
        for k, v in section.items()
        if k in hints and not fieldtypes.matches(v, hints[k])
    ]
    return out


def test_config_yaml_top_level_keys_are_the_schemas():
    raw = yaml.safe_load((catalog.conf_dir() / "config.yaml").read_text())
    top = {k.split(".")[0] for k in TOP_LEVEL}
    groups = {"matrix"}  # a group option, like model/method/gpu/data
    assert set(raw) - {"defaults"} == set(SECTIONS) | top | set(OTHER_KEYS) - groups
    assert not set(OUTPUT_ONLY) & set(raw)
    for part in ("budget", "advisor"):
        assert {f"{part}.{k}" for k in raw[part]} == {k for k in TOP_LEVEL if k.startswith(f"{part}.")}
    hints = fieldtypes.hints(RunConfig)
    for key, field in TOP_LEVEL.items():
        section, _, sub = key.partition(".")
        value = raw[section][sub] if sub else raw[section]
        assert fieldtypes.matches(value, hints[field]), (key, value)
    assert raw["price"] == {"provider": None}  # the price is chosen from the card's rows
    assert raw["format"] in OUTPUT_FORMATS and isinstance(raw["breakdown"], bool)


@pytest.mark.parametrize("section", ["train", "data"])
def test_base_sections_equal_their_dataclass(section):
    assert _mismatches(catalog.defaults(section), SECTION_TYPES[section], f"config.yaml {section}") == []


def test_sweep_section_equals_sweep_settings():
    raw = catalog.defaults("sweep")
    hints = fieldtypes.hints(SweepSettings)
    assert set(raw) == set(hints) - set(DERIVED)
    for k, v in raw.items():
        assert fieldtypes.matches(v, hints[k]) or (k in NULL_DERIVED and v is None), (k, v)


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_is_a_complete_section(group):
    problems = []
    for name in catalog.option_names(group):
        option = catalog.load_option(group, name)
        if group == "gpu":
            for i, row in enumerate(option["prices"]):
                problems += _mismatches(row, PriceRow, f"gpu={name} prices[{i}]")
            # null = read this machine when built (an int from then on, recorded in to_dict())
            option.update({k: 1 for n, k in DETECTED if n == name and option[k] is None})
        problems += _mismatches(option, SECTION_TYPES[group], f"{group}={name}")
    assert problems == []


def test_data_options_set_data_keys():
    for name in catalog.option_names("data"):
        assert _mismatches(catalog.load_option("data", name), DataConfig, f"data={name}", partial=True) == []


def test_dataclass_defaults_are_the_yaml():
    d = compose("advise", [])  # train and data as config.yaml writes them (data=estimate sets the same)
    assert TrainConfig() == RunConfig.from_dict(d).train
    assert DataConfig() == RunConfig.from_dict(d).data
    for f in dataclasses.fields(TrainConfig):
        assert getattr(TrainConfig(), f.name) == catalog.defaults("train")[f.name]


def test_sweep_settings_defaults_are_the_yaml():
    s = settings_from(compose("config", ["matrix=single"]))
    raw = catalog.defaults("sweep")
    for f in dataclasses.fields(SweepSettings):
        if f.name not in DERIVED + NULL_DERIVED:
            assert getattr(s, f.name) == raw[f.name] == f.default, f.name


def test_advise_choices_are_what_hydra_composes():
    d = compose("advise", [])
    chosen = catalog.choices("advise")
    assert {g: d[g]["name"] for g in ("model", "method", "gpu")} == {
        g: chosen[g] for g in ("model", "method", "gpu")
    }
    assert d["matrix"]["name"] == chosen["matrix"]


FROM_NAMES = [
    ({}, []),
    ({"model": "qwen2.5-7b", "method": "qlora", "gpu": "t4"}, ["model=qwen2.5-7b", "method=qlora", "gpu=t4"]),
    ({"method": "full", "gpu": "cpu"}, ["method=full", "gpu=cpu"]),
    (
        {
            "train": {"seq_len": 2048, "lr": 1e-4},
            "lora": {"r": 8},
            "data": {"rows": 1000},
            "budget": {"usd": 50},
        },
        ["train.seq_len=2048", "train.lr=1e-4", "method.r=8", "data.rows=1000", "budget.usd=50"],
    ),
    (
        {"card": {"count": 2}, "parallel": "fsdp", "price": {"provider": "aws"}, "seed": 3},
        ["gpu.count=2", "parallel=fsdp", "price.provider=aws", "seed=3"],
    ),
    ({"data": {"fields": {"input": "context"}}}, ["data.fields.input=context"]),
]


@pytest.mark.parametrize("kw,overrides", FROM_NAMES, ids=[" ".join(o) or "defaults" for _, o in FROM_NAMES])
def test_from_names_is_what_the_cli_composes(kw, overrides):
    assert from_names(**kw) == RunConfig.from_dict(compose("advise", overrides))


def test_a_left_out_key_takes_its_conf_default_and_a_wrong_type_is_named():
    cfg = from_names(train={"seq_len": 256})
    assert cfg.train.grad_accum == catalog.defaults("train")["grad_accum"]
    with pytest.raises(Exception) as e:
        from_names(train={"gradient_checkpointing": "yes", "seq_len": "long"}, arch={"rope_scaling": 2})
    msg = str(e.value)
    assert "train.gradient_checkpointing='yes': must be true or false" in msg
    assert "train.seq_len='long': must be an integer" in msg
    assert "model.rope_scaling=2: unknown key" in msg

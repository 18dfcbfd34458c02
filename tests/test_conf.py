"""Every YAML file under conf/ composes through Hydra and builds a valid RunConfig (style.md: a config
no test composes is a broken config); every matrix names real keys with valid values."""

from __future__ import annotations

import pytest

from advisor.config import catalog, fieldtypes
from advisor.config.schema import RunConfig, key_type
from advisor.trials.matrix import expand
from sweep.compose import compose, override_value

GROUP_OPTIONS = [
    (g, name) for g in ("model", "method", "gpu", "data", "matrix") for name in catalog.option_names(g)
]


@pytest.mark.parametrize("config_name", ["config", "advise"])
def test_primary_configs_compose(config_name):
    d = compose(config_name, [])
    cfg = RunConfig.from_dict(d)
    assert cfg.model.name and cfg.gpu.name


@pytest.mark.parametrize("group,name", GROUP_OPTIONS, ids=[f"{g}={n}" for g, n in GROUP_OPTIONS])
def test_every_group_option_composes(group, name):
    overrides = [f"{group}={name}"]
    if group == "gpu" and name == "mi300x":
        overrides.append("method=lora")  # no bitsandbytes there; lora is the default anyway
    cfg = RunConfig.from_dict(compose("advise", overrides))
    if group in ("model", "method", "gpu"):
        assert getattr(cfg, group).name == name


# cells of each matrix with one seed: rank collapses for full fine-tuning
MATRIX_CELLS = {
    "demo": 2 + 2 * 2 + 2,  # full, LoRA r4/r16, QLoRA r16 (r4 excluded) × 2 sizes
    "method_rank_size": 3 + 3 * 3 + 3 * 3,
    "single": 1,
}


def test_every_matrix_is_counted_here():
    assert set(catalog.option_names("matrix")) == set(MATRIX_CELLS)


@pytest.mark.parametrize("name", catalog.option_names("matrix"))
def test_every_matrix_axis_is_a_schema_key_and_every_value_builds(name):
    d = compose("config", [f"matrix={name}"])
    matrix = d["matrix"]
    assert matrix["name"] == name
    base = RunConfig.from_dict(d)
    for key, values in matrix["axes"].items():
        hint = key_type(key)  # KeyError: the axis names no config key
        for v in values:
            assert fieldtypes.matches(v, hint), (key, v, fieldtypes.describe(hint))
            cfg = RunConfig.from_dict(compose("config", [f"matrix={name}", f"{key}={override_value(v)}"]))
            if key == "method":
                assert cfg.method.name == v
            elif key.startswith(("method.", "data.", "train.")) and not (
                key == "method.r" and base.method.name == "full"
            ):
                section, field = key.split(".")
                assert getattr(getattr(cfg, section), field) == v, (key, v)
    cells = expand(matrix, base.method.name, seeds=1, base_seed=base.seed)
    assert len(cells) == MATRIX_CELLS[name]
    assert len({c.cell_id for c in cells}) == len(cells)
    for c in cells:  # every cell's assignment takes only values of its axes
        for key, v in c.assignment:
            assert v in matrix["axes"][key]


def test_catalog_yaml_is_plain():
    """The advisor reads conf/ without Hydra: no interpolation in catalog files."""
    for group in ("model", "gpu", "method", "matrix"):
        for f in (catalog.conf_dir() / group).glob("*.yaml"):
            assert "${" not in f.read_text(), f"{f} uses interpolation"


def test_every_reference_model_and_gpu_is_in_the_catalog():
    import csv

    ref = catalog.repo_root().parent / "shared" / "reference"
    if not ref.exists():
        pytest.skip("shared/reference not beside the checkout")
    with open(ref / "models.csv") as f:
        models = {r["name"]: r for r in csv.DictReader(f)}
    with open(ref / "gpus.csv") as f:
        gpus = {r["id"] for r in csv.DictReader(f)}
    with open(ref / "prices.csv") as f:
        prices = list(csv.DictReader(f))
    cat_models = catalog.models()
    assert set(models) <= set(cat_models)
    for name, row in models.items():
        assert cat_models[name]["total_params"] == int(row["total_params"])
        assert cat_models[name]["hidden_size"] == int(row["hidden_size"])
    assert gpus <= set(catalog.gpus())
    for p in prices:
        rows = catalog.gpus()[p["gpu_id"]]["prices"]
        assert any(
            r["provider"] == p["provider"]
            and float(r["usd_per_gpu_hour"]) == float(p["usd_per_gpu_hour"])
            and str(r["as_of"]) == p["as_of"]
            for r in rows
        ), p


def test_default_price_is_cheapest_on_demand_specialist_row():
    from advisor.config.schema import from_names

    cfg = from_names("llama-3.1-8b", "lora", "a100-80gb")
    assert cfg.price.provider == "Lambda" and cfg.price.usd_per_gpu_hour == 1.79 and cfg.price.as_of == "2024"
    cfg = from_names("llama-3.1-8b", "lora", "a100-80gb", price={"provider": "aws"})
    assert cfg.price.usd_per_gpu_hour == 5.12 and cfg.price.as_of == "2025-05"
    cfg = from_names("llama-3.1-8b", "lora", "t4")  # no specialist row: the cheapest hyperscaler one
    assert cfg.price.tier == "hyperscaler" and "fp16" in cfg.notes[0]

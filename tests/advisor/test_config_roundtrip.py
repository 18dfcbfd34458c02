"""`RunConfig.from_dict(cfg.to_dict()) == cfg` for every catalog GPU (priced or not) and method; what
was chosen or detected (the price, this machine's RAM and cores, a HF config.json) is recorded and
never chosen or read again on load; records written in round 1 still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advisor.config import catalog
from advisor.config.methods import METHOD_NAMES
from advisor.config.schema import RunConfig, from_names
from advisor.errors import ConfigError

FIXTURE_TRIALS = Path(__file__).resolve().parents[1] / "reports" / "fixtures" / "sweep_all" / "trials"


def _reloaded(cfg: RunConfig) -> RunConfig:
    """Through JSON, as records and plan.json hold it."""
    return RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))


@pytest.mark.parametrize("gpu", catalog.option_names("gpu"))
def test_round_trip_on_every_catalog_gpu_priced_or_not(gpu):
    bnb = catalog.load_option("gpu", gpu)["bnb_supported"]
    for method in METHOD_NAMES:
        if method == "qlora" and not bnb:
            with pytest.raises(ConfigError, match="bitsandbytes 4-bit does not run"):
                from_names("llama-3.1-8b", method, gpu)
            continue
        for card in ({}, {"prices": []}, {"usd_per_hour": 3.25}):
            cfg = from_names("llama-3.1-8b", method, gpu, card=card)
            assert _reloaded(cfg) == cfg, (gpu, method, card)
            assert _reloaded(cfg).to_dict() == cfg.to_dict()
        unpriced = from_names("llama-3.1-8b", method, gpu, card={"prices": []})
        assert unpriced.price.usd_per_gpu_hour == 0.0 and "no catalog price" in unpriced.price.provider


def test_the_recorded_price_is_kept_not_chosen_again():
    cfg = from_names("llama-3.1-8b", "lora", "a100-80gb", price={"provider": "aws"})
    assert cfg.price.usd_per_gpu_hour == 5.12
    d = cfg.to_dict()
    for row in d["gpu"]["prices"]:  # the catalog changed since: every row now cheaper
        row["usd_per_gpu_hour"] = 0.5
    again = RunConfig.from_dict(d)
    assert again.price == cfg.price
    d["price"] = {"provider": None}  # asking for a choice chooses (what search and reports do per card)
    assert RunConfig.from_dict(d).price.usd_per_gpu_hour == 0.5


def test_a_cpu_record_from_another_machine_loads_as_recorded():
    """A gpu=cpu config records the RAM it read and the price per core × cores; loading it here
    reads neither this machine's RAM nor its core count."""
    d = from_names("demo-base", "lora", "cpu").to_dict()
    assert d["gpu"]["usable_mib"] > 0 and " cores" in d["price"]["provider"]
    d["gpu"].update(usable_mib=524288, memory_gb=563.0)  # a 512 GiB, 64-core machine wrote it
    row = d["gpu"]["prices"][0]
    d["price"].update(usd_per_gpu_hour=row["usd_per_gpu_hour"] * 64, provider=f"{row['provider']} × 64 cores")
    cfg = RunConfig.from_dict(d)
    assert cfg.gpu.usable_mib == 524288 and cfg.gpu.memory_gb == 563.0
    assert cfg.price.usd_per_gpu_hour == pytest.approx(
        row["usd_per_gpu_hour"] * 64
    ) and cfg.price.provider.endswith("× 64 cores")
    assert _reloaded(cfg) == cfg


def _hf_config(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 512,
                "num_hidden_layers": 3,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
                "intermediate_size": 1024,
                "vocab_size": 1000,
                "max_position_embeddings": 2048,
                "attention_bias": True,
            }
        )
    )
    return folder


def test_a_config_json_is_read_once_and_recorded(tmp_path):
    folder = _hf_config(tmp_path / "m")
    cfg = from_names("llama-3.1-8b", "lora", "a100-80gb", arch={"config_path": str(folder)})
    assert (cfg.model.hidden_size, cfg.model.num_hidden_layers, cfg.model.attention_bias) == (512, 3, True)
    d = cfg.to_dict()
    (folder / "config.json").unlink()  # the record is loaded where the file is not
    assert RunConfig.from_dict(d) == cfg
    d.pop("resolved")  # an unresolved dict reads the file, and says when it cannot
    with pytest.raises(ConfigError, match=r"model\.config_path=.*cannot read a HF config\.json"):
        RunConfig.from_dict(d)


def test_derived_notes_round_trip():
    cfg = from_names("llama-3.1-8b", "lora", "t4")
    assert cfg.notes and "no bf16" in cfg.notes[0]
    assert _reloaded(cfg) == cfg


def test_round_1_records_still_load():
    """Records written before the price was kept and before train.lr_full/lr_adapter and data.out_dir
    existed: they load with their stored price, the missing keys from conf/."""
    paths = sorted(FIXTURE_TRIALS.glob("*.json"))
    loaded = 0
    for path in paths:
        config = json.loads(path.read_text()).get("config")
        if not config:
            continue
        assert "resolved" not in config and "lr_full" not in config["train"]
        cfg = RunConfig.from_dict(config)
        assert cfg.price.usd_per_gpu_hour == config["price"]["usd_per_gpu_hour"]
        assert cfg.price.provider == config["price"]["provider"]
        assert cfg.train.lr_full == catalog.defaults("train")["lr_full"]
        assert cfg.data.out_dir is None
        assert cfg.train.seq_len == config["train"]["seq_len"] and cfg.data.rows == config["data"]["rows"]
        assert _reloaded(cfg) == cfg
        loaded += 1
    assert loaded >= 10, f"only {loaded} records with a config in {FIXTURE_TRIALS}"

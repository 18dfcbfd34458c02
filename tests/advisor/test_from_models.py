"""Model ids in trainer configs → an architecture, without the network: a local folder, the local
Hugging Face cache, the catalog's known ids and mirrors (conf/hf_ids.yaml), else a clear error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.config import catalog, hfids
from advisor.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
QWEN_05B = {
    "model_type": "qwen2",
    "hidden_size": 896,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "max_position_embeddings": 32768,
}


def _cache(root: Path, model_id: str, config: dict) -> Path:
    repo = root / ("models--" + model_id.replace("/", "--"))
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (snap / "config.json").write_text(json.dumps(config))
    return snap / "config.json"


def test_known_ids_and_mirrors_resolve_to_catalog_entries():
    cases = {
        "Qwen/Qwen2.5-7B-Instruct": ("qwen2.5-7b", 32768, False),
        "meta-llama/Llama-3.1-8B": ("llama-3.1-8b", None, False),
        "NousResearch/Meta-Llama-3-8B": ("llama-3.1-8b", 8192, False),  # mirror of an official repo
        "unsloth/Llama-3.2-1B-Instruct-bnb-4bit": ("llama-3.2-1b", None, True),  # pre-quantized mirror
        "unsloth/llama-3-8b": ("llama-3.1-8b", 8192, False),
    }
    for mid, want in cases.items():
        assert hfids.known_id(mid) == want, mid
    assert hfids.known_id("someone/Llama-3.1-8B") is None  # not a known mirror organisation


def test_every_listed_id_names_a_catalog_model():
    names = set(catalog.option_names("model"))
    ids, _, _ = hfids._known()
    assert {name for name, _ in ids.values()} <= names


def test_the_local_cache_wins_and_matches_the_catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    _cache(tmp_path, "acme/my-qwen-finetune", QWEN_05B)
    res = hfids.resolve("acme/my-qwen-finetune", "base_model")
    assert res.catalog_name == "qwen2.5-0.5b" and "local Hugging Face cache" in res.how
    other = {**QWEN_05B, "num_hidden_layers": 7}
    path = _cache(tmp_path, "acme/odd", other)
    res = hfids.resolve("acme/odd", "base_model")
    assert res.catalog_name is None and res.config_path == str(path)
    assert res.values() == {"model.config_path": str(path), "model.name": "odd", "model.path": "acme/odd"}


def test_unknown_id_names_the_keys_that_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError) as e:
        hfids.resolve("acme/nothing-7b", "base_model")
    msg = e.value.problems[0]
    assert "base_model='acme/nothing-7b'" in msg and "model=NAME" in msg and "model.config_path=" in msg


def test_make_catalogs_regenerates_conf_byte_for_byte(tmp_path):
    ref = ROOT.parent / "shared" / "reference"
    if not ref.is_dir():
        pytest.skip("shared/reference is not beside the repository")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "make_catalogs.py").write_text(
        (ROOT / "scripts" / "make_catalogs.py").read_text()
    )
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "gpu").mkdir()
    subprocess.run(
        [sys.executable, "scripts/make_catalogs.py", str(ref)], cwd=tmp_path, check=True, capture_output=True
    )
    for f in [*(tmp_path / "conf").rglob("*.yaml")]:
        rel = f.relative_to(tmp_path)
        assert f.read_bytes() == (ROOT / rel).read_bytes(), rel
    assert (tmp_path / "conf" / "hf_ids.yaml").is_file()

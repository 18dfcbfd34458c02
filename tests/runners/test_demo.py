"""The embedded demo: task data generator, pretrained-base builder, asset cache, and the demo path
end to end (`tunewise sweep` on a smaller base built by the same builder, a few cells)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import yaml

from advisor.config.schema import DataConfig
from advisor.data.dataset import split, validate
from runners.demo import assets as demo
from runners.demo import text as demo_text
from runners.demo.spec import BaseSpec

ROOT = Path(__file__).resolve().parents[2]
# The same builder at a CI size: seconds, yet it must learn (perplexity far below the vocabulary).
SMALL = replace(
    BaseSpec(),
    vocab_size=512,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    train_docs=1500,
    heldout_docs=100,
    batch_size=16,
    steps=80,
    warmup_steps=5,
    lr=1e-2,
)


@pytest.fixture(scope="module")
def small_base(tmp_path_factory) -> tuple[Path, dict]:
    from runners.demo.base import build_base

    out = tmp_path_factory.mktemp("demo") / "base"
    facts = build_base(out, SMALL, stamp={"base_version": demo.BASE_VERSION}, log=lambda _msg: None)
    return out, facts


def test_task_data_is_deterministic_valid_and_answers_derive_from_its_input(tmp_path):
    a, b = tmp_path / "a" / "train.jsonl", tmp_path / "b" / "train.jsonl"
    demo.write_data(a, rows=300)
    demo.write_data(b, rows=300)
    assert a.read_bytes() == b.read_bytes()
    assert (
        demo.write_data(tmp_path / "c.jsonl", rows=300, seed=1)["sha256"]
        != json.loads(demo.data_stamp_path(a).read_text())["sha256"]
    )
    cfg = DataConfig(path=str(a), rows=150)
    validate(cfg)  # raises DataError on any bad row
    s = split(cfg, seed=0)
    assert len(s.train) == 150 and len(s.val) == 30 and s.train_pool == 270
    rows = [json.loads(line) for line in a.read_text().splitlines()]
    assert len({r["input"] for r in rows}) == 300  # distinct inputs
    for r in rows:
        answer = json.loads(r["output"])
        assert list(answer) == ["category", "size", "weekend"]
        words = re.findall(r"[A-Za-z]+|\d+", r["input"])
        items = [s for s, p in demo_text.ITEMS.items() if s in words or p in words]
        assert len(items) == 1 and answer["category"] == demo_text.CATEGORIES[items[0]]
        numbers = [int(w) for w in words if w.isdigit()] + [
            demo_text.NUMBER_WORDS.index(w.lower()) for w in words if w.lower() in demo_text.NUMBER_WORDS
        ]
        assert answer["size"] in {demo_text.size_class(q) for q in numbers}
        if not any(d in words for d in demo_text.WEEKEND):
            assert answer["weekend"] is False  # derived from the delivery day, never invented
    shapes = [_shape(t) for t in demo_text.ORDER_TEMPLATES]
    used = {i for r in rows for i, rx in enumerate(shapes) if rx.fullmatch(r["input"])}
    assert used == set(range(len(shapes)))  # every sentence shape occurs


def _shape(template: str) -> re.Pattern:
    parts = re.split(r"\{\w+\}", template)
    return re.compile("(?i:" + ".+".join(re.escape(p) for p in parts) + ")")


def test_assets_are_cached_and_rebuilt_when_stale(tmp_path, monkeypatch):
    data = tmp_path / "data" / "train.jsonl"
    demo.ensure_assets(None, str(data))
    assert demo.data_is_current(data)
    mtime = data.stat().st_mtime_ns
    demo.ensure_assets(None, str(data))
    assert data.stat().st_mtime_ns == mtime  # cached: not rewritten
    with open(data, "a") as f:
        f.write('{"instruction": "x", "output": "y"}\n')  # edited by hand -> stale
    assert not demo.data_is_current(data)
    monkeypatch.setattr(demo, "DATA_VERSION", demo.DATA_VERSION + 1)  # a new generator -> stale
    demo.ensure_assets(None, str(data))
    assert demo.data_is_current(data) and len(data.read_text().splitlines()) == demo.DATA_ROWS
    assert not demo.base_is_current(tmp_path / "no-base")


def test_small_base_learned_and_loads_like_a_downloaded_model(small_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from advisor.data.dataset import read_examples
    from runners.data import encode, prompt_text

    path, facts = small_base
    assert facts["heldout_perplexity"] < SMALL.vocab_size / 20  # it learned the language...
    assert facts["heldout_perplexity"] < facts["heldout_perplexity_untrained"] / 20  # ...from training
    assert facts["spec"] == asdict(SMALL) and json.loads((path / "tunewise_demo.json").read_text()) == facts
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.num_parameters() == facts["total_params"] and len(tok) == SMALL.vocab_size
    assert tok.eos_token == demo_text.END and model.config.eos_token_id == tok.eos_token_id
    data = path.parent / "train.jsonl"
    demo.write_data(data, rows=20)
    ex = read_examples(data, DataConfig(path=str(data)))[0]
    assert prompt_text(tok, ex).endswith(f"{demo_text.ASSISTANT}\n")
    enc = encode(tok, ex, seq_len=256)
    learned = tok.decode([i for i, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != -100])
    assert learned == ex.response + demo_text.END + "\n"  # labels = the JSON answer and end of turn
    assert len(enc.input_ids) < 128  # fits the demo's seq_len even with this smaller vocabulary


def test_demo_base_yaml_is_the_built_architecture():
    import torch
    from transformers import LlamaForCausalLM

    from runners.demo.base import model_config

    entry = yaml.safe_load((ROOT / "conf" / "model" / "demo-base.yaml").read_text())
    spec = BaseSpec()
    for k in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "max_position_embeddings",
    ):
        assert entry[k] == getattr(spec, k), k
    with torch.device("meta"):
        model = LlamaForCausalLM(model_config(spec, eos_token_id=1, pad_token_id=0))
    assert entry["total_params"] == model.num_parameters()
    assert entry["tie_word_embeddings"] is True and entry["path"] == "outputs/demo/base"
    data = yaml.safe_load((ROOT / "conf" / "data" / "demo.yaml").read_text())
    assert data["path"] == "outputs/demo/data/train.jsonl"


def _env(conf: Path) -> dict[str, str]:
    return {**os.environ, "TUNEWISE_CONF": str(conf), "TOKENIZERS_PARALLELISM": "false"}


def test_demo_path_end_to_end(small_base, tmp_path):
    """The demo's own path on a smaller base: data generator, `tunewise sweep` over a few cells with the
    demo's settings, records with measurements and the report."""
    base, _ = small_base
    data = tmp_path / "data" / "train.jsonl"
    demo.write_data(data, rows=200)
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    option = yaml.safe_load((ROOT / "conf" / "matrix" / "demo.yaml").read_text())  # @package _global_
    option["matrix"].update(
        name="demo_ci",
        axes={"method": ["full", "lora", "qlora"], "method.r": [4], "data.rows": [60]},
        exclude=[],
    )
    (conf / "matrix" / "demo_ci.yaml").write_text("# @package _global_\n" + yaml.safe_dump(option))
    sweep_dir = tmp_path / "sweep"
    args = [
        "matrix=demo_ci",
        f"model.path={base}",
        f"model.config_path={base}",
        f"data.path={data}",
        "train.grad_accum=1",
        "train.max_steps=6",
        "train.metric_rows=4",
        "train.max_new_tokens=40",
        "sweep.yes=true",
        "sweep.seeds=1",
        f"sweep.dir={sweep_dir}",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "sweep", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(conf),
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in (sweep_dir / "trials").glob("*.json") if p.stem != "baseline"]
    assert sorted(r["config"]["method"]["name"] for r in recs) == ["full", "lora", "qlora"]
    for r in recs:
        assert r["status"] == "complete", r["reason"]
        m = r["measured"]
        assert m["eval_loss"] > 0 and m["metric"] is not None and m["train_tokens"] > 0
        assert sorted(m["metric_fields"]) == ["category", "size", "weekend"]  # JSON answers: per field
        assert all(0 <= v <= 1 for v in m["metric_fields"].values())
        assert r["estimate"]["memory"]["allocated_gib"] > 0
    static = {r["config"]["method"]["name"]: sum(r["measured"]["static_bytes"].values()) for r in recs}
    assert static["full"] > static["lora"] > static["qlora"]
    assert (sweep_dir / "report.md").is_file() and (sweep_dir / "results.csv").is_file()
    # the terminal ends with the answer: the recommendation's sentences, then the report's path
    tail = out.stdout.strip().splitlines()[-2:]
    assert tail[0].startswith("Recommendation: ") and len(tail[0]) > 40, out.stdout[-1500:]
    assert tail[1] == f"The full report: {sweep_dir / 'report.md'} (and report.html)"
    assert "acc." in (sweep_dir / "report.md").read_text()  # per-field columns in the quality table

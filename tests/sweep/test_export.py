"""`tunewise export`: the recommended (or named) cell of a real sweep written for axolotl, LLaMA-Factory
and TRL; read back by `tunewise advise from=…` to the cell's own estimate; every key the trainer's schema
knows (tests/fixtures/trainers/schemas.json; the live packages where they import)."""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advisor.config.trainers import read
from sweep.export import chosen, write
from tests.sweep.conftest import ROOT, env_for, load_records
from tests.sweep.trainer_sweep import tracked_sweep  # noqa: F401 - the shared sweep fixture

pytestmark = pytest.mark.slow  # one real tiny sweep (~1.5 min on 2 cores), shared with test_tracking.py
SCHEMAS = json.loads((ROOT / "tests" / "fixtures" / "trainers" / "schemas.json").read_text())
TOOLS = ("axolotl", "llamafactory", "trl")
# what each trainer's file cannot say, so the check command adds it: the card and tunewise's own keys
TUNEWISE_ONLY = {
    "gpu",
    "data.val_rows_max",
    "train.eval_points",
    "train.metric",
    "train.max_new_tokens",
    "train.metric_rows",
    "train.eval_every_steps",
    "train.checkpoint_every_steps",
    "train.memory_cap_gib",
    "train.merge",
    "model.trust_remote_code",
    "data.val_fraction",
}


def _advise(assets, args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "advise", *args, "format=json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env_for(assets),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def _same_estimate(row: dict, estimate: dict) -> None:
    for k in ("allocated_gib", "reserved_gib", "device_gib", "weights_gib", "activations_gib"):
        assert row["memory"][k] == pytest.approx(estimate["memory"][k], rel=1e-9), k
    assert row["time"]["hours"] == pytest.approx(estimate["time"]["hours"], rel=1e-9)
    assert row["time"]["tokens"] == estimate["time"]["tokens"]
    assert row["cost"]["usd"] == pytest.approx(estimate["cost"]["usd"], rel=1e-9)
    assert (row["method"], row["r"], row["trainable_params"]) == (
        estimate["method"],
        estimate["r"],
        estimate["trainable_params"],
    )


@pytest.mark.parametrize("tool", TOOLS)
def test_export_reads_back_to_the_cells_estimate(tiny_assets, tracked_sweep, tool, tmp_path):  # noqa: F811
    recs = load_records(tracked_sweep)
    for cid, rec in recs.items():
        out = write(tracked_sweep, {"to": tool, "cell": cid, "out": str(tmp_path)})
        config = Path(out["config"])
        doc = yaml.safe_load(config.read_text())
        assert out["run"].endswith(str(config)) and out["check"].startswith(f"tunewise advise from={config}")
        src = read(config)
        assert src.tool == tool and not src.refused
        assert src.values["train.lr"] == pytest.approx(rec["lr"] or rec["config"]["train"]["lr_full"])
        assert Path(src.values["data.path"]).exists()  # the data path (TRL: its rows as messages)
        extra = {o.split("=", 1)[0] for o in out["not_in_file"]}
        assert extra <= TUNEWISE_ONLY, extra  # nothing that the trainer can say was lost
        fields = SCHEMAS[tool]["fields"]
        assert set(doc) <= set(fields), set(doc) - set(fields)  # the tool's own keys only
        args = shlex.split(out["check"])[2:]
        (row,) = _advise(tiny_assets, args)["estimates"]
        _same_estimate(row, rec["estimate"])


def test_recommended_cell_is_the_reports(tracked_sweep):  # noqa: F811
    from reports.context import build_context
    from reports.records import load

    cell, cfg, why = chosen(tracked_sweep, None)
    ctx = build_context(load(tracked_sweep), tracked_sweep / "plots")
    assert cell in next(c for c, r in ctx.pairs if r is ctx.rec.pick).chosen_ids
    assert why.startswith("the report's recommendation") and cfg.method.name == ctx.rec.pick.method


def test_cli_export_and_bad_input(tiny_assets, tracked_sweep, tmp_path):  # noqa: F811
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "sweep.cli", "export", *a],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env_for(tiny_assets),
        timeout=300,
    )
    ok = run(str(tracked_sweep), "to=axolotl", f"out={tmp_path}")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("run:   axolotl train ") and "check: tunewise advise from=" in ok.stdout
    bad = run(str(tracked_sweep), "to=unsloth")
    assert bad.returncode == 2 and "to='unsloth'" in bad.stderr and "axolotl, llamafactory, trl" in bad.stderr
    bad = run(str(tracked_sweep), "to=trl", "cell=nope")
    assert bad.returncode == 2 and "cell='nope': no such cell" in bad.stderr
    bad = run(str(tmp_path), "to=trl")
    assert bad.returncode == 2 and "not a sweep directory" in bad.stderr


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_exports_pass_the_tools_own_schemas(tracked_sweep, tmp_path, monkeypatch):  # noqa: F811
    """axolotl's pydantic AxolotlInputConfig, LLaMA-Factory's HfArgumentParser over its argument
    dataclasses, TRL's parser over ScriptArguments/SFTConfig/ModelConfig/DatasetMixtureConfig —
    each where its package imports (TRL: the dev extra installs it; the others: see
    tests/fixtures/trainers/README.md)."""
    checked = []
    cid = next(iter(load_records(tracked_sweep)))
    if _importable("trl"):
        from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, SFTConfig, TrlParser

        doc = yaml.safe_load(
            Path(write(tracked_sweep, {"to": "trl", "cell": cid, "out": str(tmp_path)})["config"]).read_text()
        )
        parser = TrlParser((ScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig))
        parsed = parser.parse_dict({**doc, "use_cpu": True}, allow_extra_keys=False)
        assert (
            parsed[1].max_length == doc["max_length"]
            and parsed[2].model_name_or_path == doc["model_name_or_path"]
        )
        checked.append("trl")
    if _importable("axolotl"):
        from axolotl.utils.schemas.config import AxolotlInputConfig

        doc = yaml.safe_load(
            Path(
                write(tracked_sweep, {"to": "axolotl", "cell": cid, "out": str(tmp_path)})["config"]
            ).read_text()
        )
        cfg = AxolotlInputConfig(**doc)
        assert cfg.sequence_len == doc["sequence_len"]
        checked.append("axolotl")
    if _importable("llamafactory"):
        monkeypatch.setenv("DISABLE_VERSION_CHECK", "1")
        from llamafactory.hparams import (
            DataArguments,
            FinetuningArguments,
            GeneratingArguments,
            ModelArguments,
            TrainingArguments,
        )
        from transformers import HfArgumentParser

        doc = yaml.safe_load(
            Path(
                write(tracked_sweep, {"to": "llamafactory", "cell": cid, "out": str(tmp_path)})["config"]
            ).read_text()
        )
        parser = HfArgumentParser(
            (ModelArguments, DataArguments, TrainingArguments, FinetuningArguments, GeneratingArguments)
        )
        parsed = parser.parse_dict({**doc, "use_cpu": True}, allow_extra_keys=False)
        assert parsed[1].cutoff_len == doc["cutoff_len"]
        checked.append("llamafactory")
    if not checked:
        pytest.skip("none of trl, axolotl, llamafactory imports here")

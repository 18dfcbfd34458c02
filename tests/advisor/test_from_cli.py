"""`tunewise advise from=PATH`: the file's run estimated, the command line's keys on top, query.source
in the JSON, refusals as bad input naming the key that resolves them."""

from __future__ import annotations

import json
from pathlib import Path

from sweep.cli import main

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "trainers"
LF_LORA = FIX / "llamafactory" / "examples" / "train_lora" / "qwen3_lora_sft.yaml"


def _advise(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main(["advise", *args, "format=json"])
    out = capsys.readouterr()
    return code, json.loads(out.out) if code == 0 else None, out.err


def test_the_files_run_is_estimated_with_its_source(capsys):
    code, doc, _ = _advise(capsys, f"from={LF_LORA}", "gpu=rtx-4090")
    assert code == 0
    q = doc["query"]
    assert q["model"]["name"] == "qwen3-4b" and q["methods"] == ["lora"] and q["ranks"] == [8]
    assert (q["train"]["seq_len"], q["train"]["micro_batch_size"], q["train"]["grad_accum"]) == (2048, 1, 8)
    src = q["source"]
    assert src["tool"] == "llamafactory" and src["path"] == str(LF_LORA)
    assert {r["key"] for r in src["read"]} >= {"lora_rank", "cutoff_len", "per_device_train_batch_size"}
    assert any("LLaMA-Factory's default lora_dropout" in d["why"] for d in src["defaulted"])
    assert any(n.startswith("from: NOT MODELLED") for n in q["notes"])
    (row,) = doc["estimates"]
    assert row["method"] == "lora" and row["r"] == 8


def test_command_line_overrides_win_over_the_file(capsys):
    code, doc, _ = _advise(capsys, f"from={LF_LORA}", "gpu=rtx-4090", "method.r=64", "train.seq_len=512")
    assert code == 0
    q = doc["query"]
    assert q["ranks"] == [64] and q["train"]["seq_len"] == 512
    assert {"method.r", "train.seq_len"} <= set(q["source"]["overridden"])
    code, doc, _ = _advise(capsys, f"from={LF_LORA}", "model=llama-3.2-1b")
    assert doc["query"]["model"]["name"] == "llama-3.2-1b" and "model" in doc["query"]["source"]["overridden"]


def test_refused_settings_are_bad_input_until_the_command_line_resolves_them(capsys):
    cfg = FIX / "axolotl" / "examples" / "llama-3" / "lora-8b.yml"  # load_in_8bit: true
    code, _, err = _advise(capsys, f"from={cfg}")
    assert code == 2 and "load_in_8bit=true" in err and "give method=" in err
    code, doc, _ = _advise(capsys, f"from={cfg}", "method=qlora")
    assert code == 0 and doc["query"]["methods"] == ["qlora"]
    note = next(n for n in doc["query"]["source"]["not_modelled"] if n["key"] == "load_in_8bit")
    assert "estimated without it (method given" in note["why"]


def test_bad_files_are_bad_input(capsys, tmp_path):
    code, _, err = _advise(capsys, f"from={tmp_path / 'missing.yaml'}")
    assert code == 2 and "no such file" in err
    (tmp_path / "x.yaml").write_text("just: [a, list\n")
    code, _, err = _advise(capsys, f"from={tmp_path / 'x.yaml'}")
    assert code == 2 and "not valid YAML or JSON" in err
    (tmp_path / "y.yaml").write_text("hello: world\n")
    code, _, err = _advise(capsys, f"from={tmp_path / 'y.yaml'}")
    assert code == 2 and "not an axolotl, LLaMA-Factory or TRL training config" in err
    (tmp_path / "z.yaml").write_text(
        "base_model: Qwen/Qwen2.5-0.5B\nsequence_len: lots\nlora_r: 8\nadapter: lora\n"
    )
    code, _, err = _advise(capsys, f"from={tmp_path / 'z.yaml'}")
    assert code == 2 and "sequence_len='lots': must be a whole number" in err


def test_a_path_with_spaces_and_a_json_file(capsys, tmp_path):
    folder = tmp_path / "my configs"
    folder.mkdir()
    (folder / "q l.yml").write_text((FIX / "axolotl" / "examples" / "llama-3" / "qlora.yml").read_text())
    code, doc, err = _advise(capsys, f"from={folder / 'q l.yml'}", "gpu=rtx-4090")
    assert code == 0, err
    assert doc["query"]["source"]["path"] == str(folder / "q l.yml") and doc["query"]["methods"] == ["qlora"]
    code, doc, err = _advise(
        capsys, f"from={FIX / 'trl' / 'sft_qlora_fsdp.json'}", "gpu=a100-80gb", "gpu.count=2"
    )
    assert code == 0, err
    assert doc["query"]["parallel"] == "fsdp" and doc["query"]["train"]["optimizer"] == "paged_adamw_8bit"

"""LLaMA-Factory's own example configs (tests/fixtures/trainers/llamafactory, copied from LLaMA-Factory
0.9.5's sdist, kept at their paths so the DeepSpeed files they name resolve) read into tunewise
settings, with LLaMA-Factory's defaults where the file is silent."""

from __future__ import annotations

from pathlib import Path

from advisor.config.trainers import read

EX = Path(__file__).resolve().parents[1] / "fixtures" / "trainers" / "llamafactory" / "examples"


def test_lora_sft_reads_settings_and_llamafactory_defaults():
    s = read(EX / "train_lora" / "qwen3_lora_sft.yaml")
    assert s.tool == "llamafactory"
    v = s.values
    assert v["model"] == "qwen3-4b" and v["model.max_position_embeddings"] == 262144  # Qwen3-4B-Instruct-2507
    assert (v["method"], v["method.r"], v["method.target_modules"]) == ("lora", 8, "all-linear")
    defaulted = {d["as"]: d["why"] for d in s.defaulted}
    assert (
        "LLaMA-Factory's default lora_alpha" in defaulted["method.alpha=null"]
    )  # 2 × rank, as tunewise's null
    assert "method.dropout=0.0" in defaulted and "train.gradient_checkpointing=true" in defaulted
    assert "train.packing=false" in defaulted  # packing only for pre-training
    assert (v["train.seq_len"], v["train.micro_batch_size"], v["train.grad_accum"]) == (2048, 1, 8)
    assert (v["train.precision"], v["train.lr"], v["train.epochs"]) == ("bf16", 1e-4, 3.0)
    assert v["data.rows"] == 2000  # max_samples 1000 per dataset × 2 datasets
    assert {n["key"] for n in s.not_modelled} >= {"max_samples", "dataset"}
    assert not s.refused


def test_full_sft_with_deepspeed_zero3_is_amp_bf16():
    s = read(EX / "train_full" / "qwen3_full_sft.yaml")  # deepspeed: examples/deepspeed/ds_z3_config.json
    v = s.values
    assert v["method"] == "full" and v["parallel"] == "zero3"
    # LLaMA-Factory upcasts trainable parameters to fp32 (pure_bf16 is off): fp32 weights + bf16 autocast
    assert v["train.precision"] == "amp_bf16"
    assert (v["train.lr"], v["train.grad_accum"]) == (1e-5, 2)


def test_qlora_on_the_fly_quantization():
    s = read(EX / "train_qlora" / "qwen3_lora_sft_otfq.yaml")
    v = s.values
    assert v["method"] == "qlora"
    defaulted = {d["as"] for d in s.defaulted}
    assert {"method.quant_type=nf4", "method.double_quant=true"} <= defaulted


def test_lora_with_deepspeed_zero3_and_refusals():
    assert read(EX / "train_lora" / "qwen3_lora_sft_ds3.yaml").values["parallel"] == "zero3"
    dpo = read(EX / "train_lora" / "qwen3_lora_dpo.yaml")
    assert [r["key"] for r in dpo.refused] == ["stage"]  # preference training is not SFT
    gptq = read(EX / "train_qlora" / "llama3_lora_sft_gptq.yaml")
    reasons = " ".join(r["why"] for r in gptq.refused)
    assert "GPTQ" in reasons  # pre-quantized weights: never read as 16-bit LoRA


def test_offload_deepspeed_file_is_refused(tmp_path):
    cfg = tmp_path / "run.yaml"
    offload = EX / "deepspeed" / "ds_z3_offload_config.json"
    cfg.write_text(
        f"model_name_or_path: Qwen/Qwen2.5-7B\nfinetuning_type: full\ndeepspeed: {offload}\nbf16: true\n"
    )
    (ref,) = read(cfg).refused
    assert ref["key"].startswith("deepspeed") and ref["resolve"] == ["parallel"] and "offload" in ref["why"]


def test_local_dataset_through_dataset_info(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.jsonl").write_text('{"q": "a", "a": "b"}\n')
    (tmp_path / "data" / "dataset_info.json").write_text(
        '{"mine": {"file_name": "mine.jsonl", "columns": {"prompt": "q", "response": "a"}}}'
    )
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "model_name_or_path: Qwen/Qwen2.5-0.5B\ndataset: mine\ndataset_dir: data\nmax_samples: 500\n"
    )
    v = read(cfg).values
    assert Path(v["data.path"]).resolve() == (tmp_path / "data" / "mine.jsonl").resolve()
    assert (v["data.format"], v["data.fields.instruction"], v["data.fields.output"], v["data.rows"]) == (
        "instruction",
        "q",
        "a",
        500,
    )

"""Full, LoRA and QLoRA (real bitsandbytes 4-bit on CPU) train a tiny model from a local folder: the eval
loss falls, the saved adapter (or merged weights) reloads with the same eval loss, trainable parameters
and static memory (weights, gradients, optimizer state) equal the advisor's."""

from __future__ import annotations

import json

import pytest
import torch

from advisor.data import dataset
from advisor.estimator.memory import memory
from advisor.estimator.params import targeted, trainable_params
from advisor.estimator.static import step_counter_bytes
from runners import data
from runners import model as model_mod
from runners.cell import run_cell
from runners.train import eval_loss
from tests.runners.conftest import make_cfg

# method, lr, precision, optimizer
CASES = [
    ("full", 2e-3, "fp32", "adamw"),
    ("lora", 5e-3, "bf16", "adamw"),
    ("qlora", 5e-3, "bf16", "adamw_8bit"),
]


def _reload(cfg, out_dir):
    """The trained weights as a user loads them: PeftModel.from_pretrained(base, adapter/) or merged/."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if cfg.method.name == "full":
        return AutoModelForCausalLM.from_pretrained(out_dir / "merged", dtype=torch.float32)
    base = model_mod.load_base(cfg)  # the same base the run trained on (4-bit + kbit prep for QLoRA)
    return PeftModel.from_pretrained(base, out_dir / "adapter")


@pytest.mark.parametrize("method,lr,precision,optimizer", CASES)
def test_method_trains_reloads_and_matches_the_advisor(
    method, lr, precision, optimizer, tiny_plain, learn_data, tmp_path, monkeypatch
):
    folder, vocab = tiny_plain
    # Logits of the trained model as the run saves it (a spy around the real save, which still runs).
    probe = torch.arange(1, 17).remainder(vocab - 1).add(1).unsqueeze(0)
    trained: dict[str, torch.Tensor] = {}
    real_save = model_mod.save_adapter

    def save_and_remember_logits(model, path):
        model.eval()
        with torch.no_grad():
            trained["logits"] = model(input_ids=probe).logits.float()
        return real_save(model, path)

    monkeypatch.setattr(model_mod, "save_adapter", save_and_remember_logits)
    cfg = make_cfg(
        folder,
        vocab,
        learn_data,
        method=method,
        train={
            "lr": lr,
            "precision": precision,
            "optimizer": optimizer,
            "max_steps": 16,
            "grad_accum": 2,
            "eval_points": 2,
            "merge": method == "full",
            "metric_rows": 4,
        },
    )
    res = run_cell(cfg, tmp_path, resume=False)
    m = res.measured
    assert res.status == "complete" and m is not None and m.eval_loss is not None, res.reason
    assert m.steps == m.planned_steps == 16 and [e[0] for e in m.eval_curve] == [8, 16]

    # the eval loss falls below the untrained model's
    base = run_cell(cfg, tmp_path / "baseline", baseline=True).measured
    assert base is not None and base.eval_loss is not None and base.eval_curve[0][0] == 0
    assert m.eval_loss < base.eval_loss - 0.05, (base.eval_loss, m.eval_curve)

    # the saved weights reload (PEFT format / merged) and give the same logits and eval loss
    split = dataset.split(cfg.data, cfg.seed)
    tok = model_mod.load_tokenizer(cfg)
    val = data.build_rows(
        [data.encode(tok, e, cfg.train.seq_len) for e in split.val], cfg.train.seq_len, False, 0
    )
    reloaded = _reload(cfg, tmp_path)
    reloaded.eval()
    with torch.no_grad():
        logits = reloaded(input_ids=probe).logits.float()
    torch.testing.assert_close(logits, trained["logits"], rtol=0, atol=1e-4)  # the same logits
    again = eval_loss(reloaded, val, cfg.train.micro_batch_size, tok.pad_token_id, torch.device("cpu"))
    assert again == pytest.approx(m.eval_loss, abs=1e-4)
    assert (m.adapter_bytes or 0) > 0 or method == "full"

    # the advisor's counts and static memory components, byte for byte
    assert m.trainable_params == trainable_params(cfg.model, cfg.method)
    adv = memory(cfg, cfg.train.seq_len)  # grad_accum > 1: gradients held at every phase
    sb = m.static_bytes
    assert sb is not None
    if method == "full":
        n_param_tensors = len(list(reloaded.parameters()))
    else:  # lora_A and lora_B of every targeted Linear
        n_param_tensors = 2 * sum(lin.count for lin in targeted(cfg.model, cfg.method.target_modules))
    # torch AdamW keeps one 0-dim fp32 `step` tensor per parameter tensor, on the CPU: the advisor counts
    # them on CPU runs (bitsandbytes keeps its step as a Python int)
    assert step_counter_bytes(cfg) == (4 * n_param_tensors if optimizer == "adamw" else 0)
    assert sb["gradients"] == adv.gradients
    assert sb["optimizer"] == adv.optimizer
    assert sb["weights"] == adv.weights  # quant_state (absmax, code tables) counted on both sides
    assert None not in (m.allocated_gib, m.rss_gib, m.tokens_per_s, m.padding_fraction, m.metric)
    assert m.allocated_gib > sum(sb.values()) / 2**30 and m.rss_gib > m.allocated_gib
    assert m.tokens_per_s > 0 and m.train_tokens > 0 and 0 <= m.padding_fraction < 1
    assert m.metric_name == "exact_match" and m.metric_rows == 4 and 0 <= m.metric <= 1
    assert res.provenance is not None and res.provenance.versions["torch"] == torch.__version__
    # result.json is the typed result, key for key
    assert json.loads((tmp_path / "result.json").read_text()) == res.to_dict()

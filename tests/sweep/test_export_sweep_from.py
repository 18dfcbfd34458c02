"""`tunewise sweep from=PATH`: a trainer config as the base of the matrix (a dry run: the plan only)."""

from __future__ import annotations

import re

import pytest

from advisor.config.schema import RunConfig
from sweep.compose import compose
from sweep.fromfile import expand, matrix_axes
from tests.sweep.conftest import tunewise


@pytest.mark.slow  # the tiny model's build and a dry-run sweep process (~1 min on 2 cores)
def test_sweep_from_a_trainer_config_is_the_matrix_base(tiny_assets, tmp_path):
    """`tunewise sweep from=axolotl.yaml matrix=t_small`: the file's settings are every cell's, the matrix
    varies its own axes (the file's adapter does not pin `method`), the command line wins."""
    cfg = tmp_path / "axolotl.yaml"
    cfg.write_text(
        f"base_model: {tiny_assets['model']}\nadapter: lora\nlora_r: 4\nlora_alpha: 8\nsequence_len: 48\n"
        f"micro_batch_size: 2\ngradient_accumulation_steps: 2\nnum_epochs: 1\nlearning_rate: 0.001\n"
        f"optimizer: adamw_torch\nbf16: false\ndatasets:\n  - path: {tiny_assets['data']}\n    type: alpaca\n"
    )
    d = tmp_path / "sweep"
    out = tunewise(
        tiny_assets,
        [
            f"from={cfg}",
            "matrix=t_small",
            "gpu=cpu",
            "train.seq_len=40",
            f"sweep.dir={d}",
            "sweep.dry_run=true",
        ],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "read as an axolotl config" in out.stderr
    assert "method (the matrix varies it)" in out.stderr  # the file's adapter is the matrix's to vary
    plan_rows = [line for line in out.stdout.splitlines() if re.match(r"^[0-9a-f]{10}\s", line)]
    assert len(plan_rows) == 2  # full and lora at 24 rows: the method axis was not pinned
    args = [f"from={cfg}", "matrix=single", "gpu=cpu", "train.seq_len=40"]  # the repository's conf/
    expanded, src = expand(args, matrix_axes(args))
    assert src is not None and src.tool == "axolotl"
    base = RunConfig.from_dict(compose("config", expanded))
    assert (base.train.seq_len, base.train.micro_batch_size, base.train.grad_accum) == (
        40,
        2,
        2,
    )  # 40: the command line
    assert (base.method.name, base.method.r, base.train.optimizer, base.train.precision) == (
        "lora",
        4,
        "adamw",
        "fp32",
    )
    assert base.lr == 0.001 and base.data.path == str(tiny_assets["data"])

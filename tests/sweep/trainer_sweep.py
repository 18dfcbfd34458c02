"""One real tiny CPU sweep with tracking=mlflow, shared by the tracking and export tests: full and LoRA
on the session's tiny Llama (tests/sweep/conftest.py), one seed, bf16 (the precision every trainer can
say), through the real CLI in a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sweep.conftest import tunewise


def overrides(assets: dict[str, Path], sweep_dir: Path) -> list[str]:
    return [
        f"model.path={assets['model']}",
        f"model.config_path={assets['model']}",
        f"data.path={assets['data']}",
        "data.val_rows_max=12",
        "gpu=cpu",
        "matrix=t_small",  # full and lora at 24 rows
        "train.seq_len=64",
        "train.micro_batch_size=4",
        "train.grad_accum=1",
        "train.epochs=2",
        "train.eval_points=2",
        "train.metric=none",
        "train.precision=bf16",
        "train.gradient_checkpointing=false",
        "sweep.yes=true",
        f"sweep.dir={sweep_dir}",
        "tracking=mlflow",
    ]


@pytest.fixture(scope="session")
def tracked_sweep(tiny_assets, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tracked") / "sweep"
    out = tunewise(tiny_assets, overrides(tiny_assets, d))
    assert out.returncode == 0, out.stderr[-4000:]
    return d

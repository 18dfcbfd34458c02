"""TensorBoard's and MLflow's own readers see every cell of a real CPU sweep with its metrics: the loss
curve, the evals, throughput and memory; MLflow one run per cell with its overrides as params."""

from __future__ import annotations

import json

import pytest

from advisor.errors import Problems
from tests.sweep.conftest import load_records
from tests.sweep.trainer_sweep import tracked_sweep  # noqa: F401 - the shared sweep fixture


@pytest.mark.slow
def test_tensorboard_reads_every_cell(tracked_sweep):  # noqa: F811
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recs = load_records(tracked_sweep)
    assert len(recs) == 2 and all(r["status"] == "complete" for r in recs.values())
    for cid, rec in recs.items():
        acc = EventAccumulator(str(tracked_sweep / "cells" / cid))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {"train/loss", "train/tokens", "eval/loss", "memory/allocated_gib", "memory/rss_gib"} <= tags
        assert {"throughput/tokens_per_s", "time/train_s", "cost/usd"} <= tags
        m = rec["measured"]
        loss = acc.Scalars("train/loss")
        assert [e.step for e in loss] == list(range(1, m["steps"] + 1))  # every optimizer step
        evals = [(e.step, round(e.value, 4)) for e in acc.Scalars("eval/loss")]
        assert evals == [(int(s), round(x, 4)) for s, _, x in m["eval_curve"]]
        assert acc.Scalars("memory/allocated_gib")[-1].value == pytest.approx(m["allocated_gib"], rel=1e-6)
        assert acc.Scalars("throughput/tokens_per_s")[-1].value == pytest.approx(m["tokens_per_s"], rel=1e-6)
    # the baseline's untrained eval loss is there too, beside the cells (tensorboard --logdir sweep.dir)
    base = EventAccumulator(str(tracked_sweep / "cells" / "baseline"))
    base.Reload()
    assert "eval/loss" in base.Tags()["scalars"] or "memory/rss_gib" in base.Tags()["scalars"]


@pytest.mark.slow
def test_mlflow_has_one_run_per_cell_with_params_and_metrics(tracked_sweep):  # noqa: F811
    import mlflow

    uri = f"sqlite:///{tracked_sweep.resolve() / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(tracked_sweep.name)
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_ids=[exp.experiment_id])
    recs = load_records(tracked_sweep)
    cells = df[df["tags.tunewise.cell"].isin(list(recs))]
    assert sorted(cells["tags.tunewise.cell"]) == sorted(recs)  # one run per cell
    for _, row in cells.iterrows():
        rec = recs[row["tags.tunewise.cell"]]
        assert row["status"] == "FINISHED" and row["tags.tunewise.status"] == "complete"
        assert row["tags.tunewise.sweep"] == str(tracked_sweep.resolve())
        assert row["params.method.name"] == rec["config"]["method"]["name"]
        for key, value in rec["coords"].items():  # the cell's overrides, as params
            assert row[f"params.{key}"] == str(value), key
        assert f"method={rec['config']['method']['name']}" in row["tags.tunewise.overrides"]
        assert row["metrics.eval/loss"] == pytest.approx(rec["measured"]["eval_loss"], rel=1e-6)
        assert row["metrics.memory/rss_gib"] == pytest.approx(rec["measured"]["rss_gib"], rel=1e-6)
        history = client.get_metric_history(row["run_id"], "train/loss")
        assert len(history) == rec["measured"]["steps"]
        run_file = tracked_sweep / "cells" / row["tags.tunewise.cell"] / "mlflow_run.json"
        assert json.loads(run_file.read_text())["run_id"] == row["run_id"]


def test_a_missing_or_bad_backend_is_a_clear_message(tmp_path, monkeypatch):
    import importlib.util

    from sweep import tracking

    base = {
        "matrix": {"name": "m", "axes": {}},
        "model": {"name": "x"},
        "gpu": {"name": "cpu"},
        "sweep": {"dir": str(tmp_path / "s")},
    }
    p = Problems()
    tracking.configure({**base, "tracking": "wandb"}, p)
    assert "tracking='wandb': unknown tracking (allowed: tensorboard, mlflow, none)" in p.items[0]
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    p = Problems()
    tracking.configure({**base, "tracking": "mlflow"}, p)
    assert "needs the mlflow package" in p.items[0] and "tracking=tensorboard" in p.items[0]
    monkeypatch.setattr(importlib.util, "find_spec", real)
    p = Problems()
    tracking.configure({**base, "tracking": "mlflow", "tracking_uri": "nosuchscheme://x"}, p)
    assert p.items and p.items[0].startswith("tracking_uri='nosuchscheme://x': cannot open the MLflow store")

"""reports.results(SWEEP_DIR): one tidy, typed row per attempt; the report's tables (mean ± sd over
seeds, trends, Pareto frontier, calibration errors) equal pandas group-bys of that frame written here."""

from __future__ import annotations

import re

import pandas as pd
import pytest

import reports
from reports.build import build_report
from reports.fmt import label, pct, signed_pct, usd
from reports.fmt import loss as fmt_loss
from tests.reports.report_records import copy_fixture, cpu_record, write_sweep


@pytest.fixture(scope="module")
def fixture_sweep(tmp_path_factory):
    d = copy_fixture("sweep_all", tmp_path_factory.mktemp("res"))
    build_report(d)
    return d, reports.results(d), " ".join((d / "report.md").read_text().split())


def _table(md: str, first_header: str) -> dict[str, list[str]]:
    """The rows of the Markdown table whose first header is `first_header`, by first cell."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\| {re.escape(first_header)}\s+\|", line))
    out = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def _records(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop_duplicates("cell_id")


def _label(row: pd.Series) -> str:
    r = None if pd.isna(row["r"]) else int(row["r"])
    return label(row["method"], r, int(row["rows"]), row["extra"] or "")


def test_one_typed_row_per_attempt_with_the_record_flattened(fixture_sweep):
    d, frame, _ = fixture_sweep
    assert len(frame) == 15 and frame["cell_id"].is_unique  # each fixture record has one attempt
    lora = frame.set_index("cell_id").loc["c04lo16x5000"]
    assert (lora["method"], lora["r"], lora["rows"], lora["status"]) == ("lora", 16, 5000, "complete")
    assert lora["measured.eval_loss"] == 0.995 and lora["estimate.memory.device_gib"] > 0
    assert lora["config.gpu.name"] == "a100-40gb" and lora["attempt.trial_number"] == 4
    full = frame.set_index("cell_id").loc["c00fu0x1000"]
    assert pd.isna(full["r"]) and pd.isna(full["measured.eval_loss"])  # no rank, nothing measured
    dtypes = frame.dtypes.astype(str)
    for col, dtype in (
        ("cell_id", "string"),
        ("r", "Int64"),
        ("rows", "Int64"),
        ("measured.eval_loss", "Float64"),
        ("estimate.fits", "boolean"),
        ("attempt.trial_number", "Int64"),
    ):
        assert dtypes[col] == dtype, (col, dtypes[col])
    assert dtypes["attempt.started"].startswith("datetime64") and "UTC" in dtypes["attempt.started"]


def test_several_attempts_give_several_rows(tmp_path):
    rec = cpu_record("lora", 4, 100, loss=1.3)
    rec["attempts"] = [
        {"trial_number": 0, "status": "died", "started": "2025-01-01T00:00:00Z", "reason": "worker stopped"},
        {"trial_number": 1, "status": "complete", "started": "2025-01-01T00:05:00Z", "cpu_s": 12.5},
    ]
    pending = cpu_record("full", None, 100, status="pending") | {"attempts": []}
    d = write_sweep(tmp_path / "s", [rec, pending])
    frame = reports.results(d)
    assert list(frame["attempt"].astype("object").where(frame["attempt"].notna(), None)) == [None, 1, 2]
    lora = frame[frame["method"] == "lora"]
    assert list(lora["attempt.status"]) == ["died", "complete"] and list(lora["status"]) == ["complete"] * 2
    assert lora["attempt.cpu_s"].sum() == 12.5 and frame["attempt.started"].notna().sum() == 2


def test_mean_and_sd_over_seeds_equal_a_group_by(tmp_path):
    recs = [cpu_record("lora", 16, 100, loss=x, seed=s) for s, x in enumerate((1.00, 1.02, 0.97))]
    recs += [cpu_record("lora", 16, 400, loss=x, seed=s) for s, x in enumerate((0.90, 0.94))]
    recs += [cpu_record("lora", 16, 400, status="oom", seed=2)]
    recs += [cpu_record("qlora", 4, 100, loss=x, lr=lr) for lr, x in ((1e-4, 1.5), (3e-4, 1.25))]
    d = write_sweep(tmp_path / "s", recs)
    build_report(d)
    table = _table((d / "report.md").read_text(), "Cell")
    frame = reports.results(d)

    done = _records(frame)[lambda r: r["status"] == "complete"]
    done = done.assign(lr=done["lr"].fillna(-1.0))  # no learning rate recorded: one group
    by_lr = done.groupby(["configuration", "lr"])["measured.eval_loss"].mean()
    best = set(by_lr.groupby(level="configuration").idxmin())
    chosen = done[[(c, lr) in best for c, lr in zip(done["configuration"], done["lr"], strict=True)]]
    stats = chosen.groupby("configuration")["measured.eval_loss"].agg(["mean", "std", "count"])
    assert len(stats) == 3
    for key, s in stats.iterrows():
        row = chosen[chosen["configuration"] == key].iloc[0]
        std = None if pd.isna(s["std"]) else float(s["std"])
        assert table[_label(row)][1] == fmt_loss(float(s["mean"]), std, int(s["count"])), key
    assert table["LoRA r=16 · 400 rows"][:2] == ["complete 2/3, oom 1/3", "0.920 ± 0.028 (n=2)"]
    assert table["QLoRA r=4 · 100 rows"][1] == "1.250"  # the better learning rate is the cell's


def test_trends_and_pareto_frontier_equal_group_bys(fixture_sweep):
    d, frame, md = fixture_sweep
    base = 1.62  # trials/baseline.json
    done = _records(frame)[lambda r: r["status"] == "complete"]
    for (method, r), g in done.groupby(["method", "r"]):
        if g["rows"].nunique() < 2:
            continue
        lo, hi = g.loc[g["rows"].idxmin()], g.loc[g["rows"].idxmax()]
        lo_loss, hi_loss = float(lo["measured.eval_loss"]), float(hi["measured.eval_loss"])
        share = pct((base - lo_loss) / (base - hi_loss), 0)
        assert (
            f"{label(method, int(r), None)}: {int(lo['rows']):,} rows reaches {share} of the gain of "
            f"{int(hi['rows']):,} rows (eval loss {lo_loss:.3f} vs {hi_loss:.3f})."
        ) in md
    ranked = done.sort_values(["measured.usd", "measured.eval_loss"])
    front = ranked[
        ranked["measured.eval_loss"] < ranked["measured.eval_loss"].cummin().shift(1, fill_value=9e9)
    ]
    sentence = "; ".join(
        f"{_label(row)} ({usd(float(row['measured.usd']))}, {float(row['measured.eval_loss']):.3f})"
        for _, row in front.iterrows()
    )
    assert f"Pareto frontier (no other cell is both cheaper and better): {sentence}." in md
    assert len(front) == 4


def test_calibration_errors_equal_a_group_by(fixture_sweep):
    d, frame, _ = fixture_sweep
    summary = _table((d / "report.md").read_text(), "Quantity")
    recs = _records(frame)
    measured = recs[recs["status"].isin(["complete", "pruned"])]  # one record per configuration here
    for quantity, key in (
        ("allocated", "allocated_gib"),
        ("reserved", "reserved_gib"),
        ("device", "device_gib"),
    ):
        pred, meas = measured[f"estimate.memory.{key}"], measured[f"measured.{key}"]
        err = ((pred - meas) / meas)[(pred > 0) & (meas > 0)].astype(float)
        assert summary[quantity] == [
            str(len(err)),
            signed_pct(err.median()),
            f"{(err.abs() <= 0.15).sum()} of {len(err)}",
            signed_pct(err[err.abs().idxmax()]),
        ], quantity
    complete = recs[recs["status"] == "complete"]
    cost = ((complete["estimate.cost.usd"] - complete["measured.usd"]) / complete["measured.usd"]).astype(
        float
    )
    assert summary["cost"][:2] == [str(len(cost)), signed_pct(cost.median())]


def test_results_csv_is_the_frame(tmp_path):
    from sweep.records import write_results_csv

    d = copy_fixture("sweep_all", tmp_path)
    frame = reports.results(d)
    back = pd.read_csv(write_results_csv(d))
    assert list(back.columns) == list(frame.columns) and len(back) == len(frame)
    assert back["measured.eval_loss"].sum() == pytest.approx(float(frame["measured.eval_loss"].sum()))

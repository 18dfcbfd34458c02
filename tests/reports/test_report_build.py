"""build_report on hand-written sweeps: every status shown, plain-text Markdown, self-contained HTML."""

from __future__ import annotations

import re

import pytest

from advisor.trials.record import FINISHED
from reports.build import build_report
from tests.reports.report_records import copy_fixture, cpu_record, write_sweep


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = copy_fixture("sweep_all", tmp_path_factory.mktemp("rep"))
    paths = build_report(d)
    return d, paths, (d / "report.md").read_text(), (d / "report.html").read_text()


def _tables(md: str) -> list[list[str]]:
    tables, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    return tables + ([cur] if cur else [])


STATUSES = (*FINISHED, "running")  # design.md's statuses


def test_writes_md_html_and_plots(built):
    d, paths, md, html = built
    assert paths[:2] == [d / "report.md", d / "report.html"]
    plots = sorted(p.name for p in paths[2:])
    assert plots == sorted(
        ["quality_vs_rows.png", "quality_vs_rank.png", "memory.png", "cost_quality.png", "calibration.png"]
    )
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" or p.suffix != ".png"
    assert not [p for p in d.rglob(".*") if ".tmp" in p.name], "temporary files left behind"


def test_every_status_appears(built):
    d, _, md, html = built
    skipped = md.split("## Skipped and failed cells")[1].split("## Deployment")[0]
    for status in STATUSES:
        assert f"| {status} " in md, status
        assert f">{status}</td>" in html, status
    for status in set(STATUSES) - {"complete"}:
        assert f"| {status} " in skipped, f"{status} missing from the skipped/failed table"
    assert "1.190 at 50 % of training" in skipped  # pruned: the last eval kept
    assert "CUDA out of memory at step 410" in skipped


def test_content_in_order_with_the_recommendation_first(built):
    _, _, md, _ = built
    heads = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert heads == [
        "Recommendation",
        "Quality",
        "Cost and resources",
        "Advisor calibration",
        "Skipped and failed cells",
        "Deployment",
        "Reproducibility",
    ]
    top = md.split("## Recommendation")[0]
    assert "Sweep still running: 14 of 15 cells finished" in top
    rec = md.split("## Recommendation")[1].split("## Quality")[0]
    assert (
        "Use LoRA r=16 with 5,000 of the 10,000 rows: 98 % of the best cell's gain at 50 % of its cost ($6.64 vs $13.2"
        in " ".join(rec.split())
    )
    assert "Full fine-tuning did not fit on NVIDIA A100 40GB (infeasible)" in " ".join(rec.split())


def test_markdown_is_plain_text_with_aligned_tables(built):
    d, _, md, _ = built
    assert not re.search(r"<[a-zA-Z/!]", md), "raw HTML in report.md"
    tables = _tables(md)
    assert len(tables) >= 5
    for t in tables:
        assert len({len(row) for row in t}) == 1, "ragged table:\n" + "\n".join(t)
        assert re.fullmatch(r"\|[-:|]+\|", t[1])
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert rel.startswith("plots/") and (d / rel).exists()


def test_html_is_self_contained_and_scriptless(built):
    _, paths, _, html = built
    assert "<script" not in html.lower()
    assert not re.search(r"(src|href)=\"(?!data:)", html), "external reference in report.html"
    assert "http://" not in html and "https://" not in html
    imgs = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="[^"]+">', html)
    assert len(imgs) == len(paths) - 2
    for tag in (
        "<main>",
        '<section id="recommendation">',
        "<thead>",
        "<figure>",
        "<figcaption>",
        "@media print",
    ):
        assert tag in html


def test_no_secrets_or_home_paths(built):
    _, _, md, html = built
    for text in (md, html):
        assert "s3cret" not in text and "/home/alice" not in text
        assert "postgresql://tunewise:***@db.internal:5432/optuna" in text


def test_numbers_sections(built):
    _, _, md, _ = built
    flat = " ".join(md.split())
    assert "| QLoRA r=16 · 1,000 rows | reserved | 13.9 GiB | 17.0 GiB | −18 % ! |" in flat
    assert "Estimates off by more than 15 % (marked !)" in flat
    assert "| reserved | 7 | −7 % | 4 of 7 | −18 % |" in flat  # the per-quantity summary
    assert "8,030,261,248 params × 2 bytes = 15.0 GiB" in flat
    assert "--max-lora-rank 16" in flat and "| 8 | 16.2 GiB |" in flat
    # a sweep.json without `reproduce` (written before issue 16): its overrides, no budget (one cell
    # needs none), into a folder of its own; home folders as "$HOME", which the shell expands
    assert re.search(
        r"tunewise sweep matrix=single sweep\.dir=outputs/sweeps/reproduce-\w+ model=llama-3\.1-8b "
        r'"model\.path=\$HOME/models/llama-3\.1-8b" gpu=a100-40gb train\.seq_len=2048 "data\.path=\$HOME/data/support\.jsonl" '
        r"method=lora method\.r=16 data\.rows=5000",
        flat,
    )
    assert "LoRA r=16: 1,000 rows reaches 89 % of the gain of 10,000 rows" in flat
    assert "Untrained base model: eval loss 1.620, exact match 8.0 %." in flat


def test_seeds_lr_tuning_list_overrides_and_cpu_calibration(tmp_path, capsys):
    recs = [
        cpu_record("lora", 16, 100, loss=x, seed=s, overrides_as_list=True)
        for s, x in enumerate((1.00, 1.02, 0.98))
    ]
    recs += [cpu_record("lora", 4, 100, loss=1.5, lr=1e-4), cpu_record("lora", 4, 100, loss=1.2, lr=3e-4)]
    recs += [cpu_record("full", None, 100, status="pending"), cpu_record("qlora", 4, 100, status="running")]
    d = write_sweep(tmp_path / "s", recs, baseline=2.0)  # no sweep.json: still a report
    build_report(d, print_summary=True)
    md = (d / "report.md").read_text()
    flat = " ".join(md.split())
    assert "| LoRA r=16 · 100 rows | complete | 1.000 ± 0.020 (n=3) |" in flat
    assert (
        "| LoRA r=4 · 100 rows | complete | 1.200 |" in flat and "3.0e-04" in flat
    )  # the better lr is the cell's
    assert (
        "device vs RSS" in flat
        and "| LoRA r=16 · 100 rows (mean of 3 seeds) | device vs RSS | 3.00 GiB | 4.20 GiB | −29 % ! |"
        in flat
    )
    assert "Sweep still running: 2 of 4 cells finished" in flat  # pending and running cells are not finished
    out = capsys.readouterr().out
    assert "Recommendation" in out and "LoRA r=16 · 100 rows" in out


def test_empty_and_baseline_less_sweeps(tmp_path):
    d = write_sweep(tmp_path / "empty", [], baseline=None)
    build_report(d)
    md = (d / "report.md").read_text()
    assert "No recommendation: the sweep has no trial records yet." in " ".join(md.split())
    d2 = write_sweep(
        tmp_path / "nob",
        [cpu_record("lora", 4, 100, loss=1.3), cpu_record("lora", 4, 400, loss=1.2)],
        baseline=None,
    )
    paths = build_report(d2)
    md2 = (d2 / "report.md").read_text()
    assert "No baseline record (trials/baseline.json)" in md2 and "## Recommendation" in md2
    assert (d2 / "plots" / "quality_vs_rows.png") in paths and (
        d2 / "plots" / "quality_vs_rank.png"
    ) not in paths


def test_rebuild_drops_stale_plots(tmp_path):
    d = write_sweep(
        tmp_path / "s", [cpu_record("lora", 4, 100, loss=1.3), cpu_record("lora", 4, 400, loss=1.2)]
    )
    build_report(d)
    assert (d / "plots" / "quality_vs_rows.png").exists()
    (d / "trials" / "lora4-400-None-None.json").unlink()
    build_report(d)
    assert not (d / "plots" / "quality_vs_rows.png").exists()


def test_cli_report_command(tmp_path, capsys):
    from sweep.cli import main

    d = write_sweep(tmp_path / "s", [cpu_record("lora", 4, 100, loss=1.3)])
    assert main(["report", str(d)]) == 0
    assert (d / "report.html").exists() and "Recommendation" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a sweep directory" in capsys.readouterr().err


def test_unreadable_record_is_skipped(tmp_path):
    d = write_sweep(tmp_path / "s", [cpu_record("lora", 4, 100, loss=1.3)])
    (d / "trials" / "broken.json").write_text('{"cell_id": "broken", "status": "comp')
    build_report(d)
    assert "LoRA r=4 · 100 rows" in (d / "report.md").read_text()


def test_small_card_sentence_uses_the_real_advisor(built):
    """The 24 GB sentence comes from advisor.estimator.estimate (fit_batch when micro-batch 4 does not fit)."""
    pytest.importorskip("advisor.estimator.estimate")
    from reports.context import build_context, small_card_rows
    from reports.records import load

    d, _, md, _ = built
    sweep = load(d)
    cells = build_context(sweep, d / "plots").cells
    rows = small_card_rows(sweep, cells, 40.0)
    pick = next(i for i, c in enumerate(cells) if (c.method, c.r, c.rows) == ("lora", 16, 5000))
    rec = " ".join(md.split("## Recommendation")[1].split("## Quality")[0].split())
    if rows[pick]["fits"]:
        assert "On a 24 GB card (GeForce RTX 4090), the same LoRA r=16 fits" in rec
        assert f"${rows[pick]['cost']['usd']:.2f} per run (advisor estimate)" in rec
    else:
        assert "On a 24 GB card (GeForce RTX 4090)" in rec or "fits a 24 GB card" in rec


def test_sweep_json_as_the_sweep_writes_it_and_a_failed_baseline(tmp_path):
    """sweep.json with base_config/settings (sweep.provenance) and a baseline that failed."""
    rec = cpu_record("lora", 4, 100, loss=1.3, overrides_as_list=True)
    meta = {"matrix": {"name": "demo", "axes": {"method": ["lora"], "method.r": [4], "data.rows": [100]}, "exclude": []},
            "overrides": ["sweep.storage=postgresql://u:***@h/db"], "base_config": rec["config"],
            "settings": {"dir": "outputs/sweeps/demo-x-cpu", "seeds": 1}, "storage": "postgresql://u:***@h/db",
            "budget": {"usd": None, "hours": None}}  # fmt: skip
    d = write_sweep(tmp_path / "s", [rec], baseline=None, meta=meta)
    (d / "trials" / "baseline.json").write_text(
        '{"cell_id": "baseline", "status": "failed", "reason": "runner exited 1", "measured": null}'
    )
    build_report(d)
    flat = " ".join((d / "report.md").read_text().split())
    assert "The baseline measurement of the untrained base ended failed (runner exited 1)" in flat
    assert "Sweep folder: outputs/sweeps/demo-x-cpu" in flat and "Sweep still running" not in flat
    assert "Fine-tuning report: llama-3.2-1b on this machine's CPU (demo)" in flat


def test_gpu_axis_cells_on_different_cards(tmp_path):
    """A matrix with a gpu axis: each cell's share of memory is against its own card."""
    a = cpu_record("lora", 4, 100, loss=1.3)
    b = cpu_record("qlora", 4, 100, loss=1.32, rss_gib=6.0)
    b["overrides"]["gpu"] = "small"
    b["config"]["gpu"].update(name="small", display_name="Small card", usable_mib=8192)
    a["overrides"]["gpu"] = "cpu"
    d = write_sweep(tmp_path / "s", [a, b])
    build_report(d)
    flat = " ".join((d / "report.md").read_text().split())
    # static memory (not in this record), peak memory and its share of that cell's own card
    assert "| QLoRA r=4 · 100 rows · gpu=small | complete | — | 6.00 GiB | 75 % |" in flat
    assert "each cell against its own card's usable memory" in flat
    assert "on Small card vs" in flat or "per run on this machine's CPU" in flat


def test_per_field_accuracy_beside_exact_match(tmp_path):
    fields = ({"category": 0.9, "size": 0.5, "weekend": 0.7}, {"category": 0.7, "size": 0.3, "weekend": 0.9})
    recs = [
        cpu_record("lora", 4, 100, loss=1.0 + s / 10, seed=s, metric=0.1, metric_fields=f)
        for s, f in enumerate(fields)
    ]
    recs.append(cpu_record("full", None, 100, loss=0.5))  # a record without per-field data: dashes
    md = (build_report(write_sweep(tmp_path / "s", recs))[0]).read_text()
    flat = " ".join(md.split())
    assert "| Exact match | category acc. | size acc. | weekend acc. |" in flat
    assert "| 10.0 % | 80 % | 40 % | 80 % |" in flat  # means over the two seeds
    assert "| 20.0 % | — | — | — |" in flat

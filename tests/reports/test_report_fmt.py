"""Number formatting, scrubbing and the plain-text table renderer."""

from __future__ import annotations

import pytest

from reports.doc import Doc, Heading, Para, Table, to_html, to_markdown
from reports.fmt import duration, gib, scrub, size_bytes, strip_password, usd


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgresql://tunewise:s3cret@db:5432/optuna", "postgresql://tunewise:***@db:5432/optuna"),
        ("postgresql+psycopg2://u:p@ss@host/db", "postgresql+psycopg2://u:***@host/db"),
        ("sqlite:///outputs/sweeps/demo/study.db", "sqlite:///outputs/sweeps/demo/study.db"),
        ("mysql://user@host/db", "mysql://user@host/db"),
    ],
)
def test_strip_password(url, expected):
    assert strip_password(url) == expected


def test_scrub_home_paths():
    assert scrub("model.path=/home/alice/m data=/Users/bob/d.jsonl") == "model.path=~/m data=~/d.jsonl"
    assert scrub("/work/home/x") == "/work/home/x"


@pytest.mark.parametrize(
    "x, expected",
    [(45.0, "$45"), (13.24, "$13.2"), (4.1, "$4.10"), (0.42, "$0.42"), (0.0051, "$0.0051"), (1234.5, "$1,234"),
     (0.0, "$0"), (None, "—"), (0.00001, "<$0.0001")],
)  # fmt: skip
def test_usd(x, expected):
    assert usd(x) == expected


def test_units():
    assert gib(3.14159) == "3.14 GiB" and gib(33.16) == "33.2 GiB" and gib(None) == "—"
    assert duration(30 / 3600) == "30 s" and duration(0.5) == "30.0 min" and duration(10.2) == "10.2 h"
    assert size_bytes(167_832_240) == "160 MiB" and size_bytes(2**31) == "2.0 GiB"


def test_markdown_table_pads_columns_and_escapes_pipes():
    doc = Doc(
        "t",
        [Heading("H"), Para("p"), Table(["Cell", "Loss"], [["LoRA r=16 · 1,000 rows", "1.0"], ["a|b", "—"]])],
    )
    md = to_markdown(doc)
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert len({len(r) for r in rows}) == 1
    assert "a\\|b" in md and rows[1].endswith("-:|")
    html = to_html(doc)
    assert '<td class="l">a|b</td>' in html and '<section id="h">' in html

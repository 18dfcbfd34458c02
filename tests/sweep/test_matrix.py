"""Matrix expansion (advisor.trials.matrix): product of axes, per-method collapsing, exclusions, seeds,
stable ids; the axes an override or a small dataset rewrites; override values written and read back."""

from __future__ import annotations

import pytest

from advisor.errors import ConfigError
from advisor.trials.matrix import cap_rows, cell_id, expand, format_value, parse_value, pin_axes
from sweep.compose import compose


def test_method_rank_size_collapses_rank_for_full():
    m = compose("config", ["matrix=method_rank_size"])["matrix"]
    cells = expand(m, "lora")
    by_method = {}
    for c in cells:
        by_method.setdefault(c.coords["method"], []).append(c)
    assert len(by_method["full"]) == 3  # rows only
    assert len(by_method["lora"]) == 9 and len(by_method["qlora"]) == 9
    assert all("method.r" not in c.coords for c in by_method["full"])
    assert len({c.cell_id for c in cells}) == len(cells) == 21


def test_single_matrix_is_one_cell_of_the_base_config():
    m = compose("config", ["matrix=single"])["matrix"]
    cells = expand(m, "lora")
    assert len(cells) == 1 and cells[0].overrides == []


def test_exclusions_and_quant_axis_collapse_for_lora():
    m = {
        "axes": {"method": ["lora", "qlora"], "method.quant_type": ["nf4", "fp4"], "data.rows": [10, 20]},
        "exclude": [{"method": "qlora", "data.rows": 20}],
    }
    cells = expand(m, "lora")
    labels = sorted(c.label() for c in cells)
    assert labels == sorted(
        [
            "method=lora data.rows=10",
            "method=lora data.rows=20",
            "method=qlora method.quant_type=nf4 data.rows=10",
            "method=qlora method.quant_type=fp4 data.rows=10",
        ]
    )


def test_seeds_repeat_cells_with_distinct_stable_ids():
    m = {"axes": {"method": ["full", "lora"]}, "exclude": []}
    one = expand(m, "lora")
    three = expand(m, "lora", seeds=3, base_seed=7)
    assert len(three) == 6
    assert {c.seed for c in three} == {7, 8, 9}
    assert {c.cell_id for c in one}.isdisjoint({c.cell_id for c in three})
    assert [c.cell_id for c in expand(m, "lora", seeds=3, base_seed=7)] == [c.cell_id for c in three]
    # the id depends on the assignment, not on axis order
    assert cell_id((("a", 1), ("b", "x"))) == cell_id((("b", "x"), ("a", 1)))


def test_bad_matrix_lists_every_problem():
    m = {"axes": {"method.r": [], "data.rows": [1, 1]}, "exclude": [{"gpu": "a10"}]}
    with pytest.raises(ConfigError) as e:
        expand(m, "lora", seeds=1)
    text = str(e.value)
    assert "matrix.axes.method.r" in text and "matrix.axes.data.rows" in text and "matrix.exclude.gpu" in text
    with pytest.raises(ConfigError, match="sweep.seeds"):
        expand({"axes": {}}, "lora", seeds=0)


def test_override_values_read_back_as_written():
    for v in (
        16,
        -3,
        2e-4,
        1e-05,
        0.5,
        True,
        False,
        None,
        "all-linear",
        ["q_proj", "v_proj"],
        [1, [2, 3]],
        [],
    ):
        assert parse_value(format_value(v)) == v, v
    assert parse_value("'a b'") == "a b" and parse_value("nf4") == "nf4"


def test_an_override_of_an_axis_key_replaces_the_axis_and_says_so():
    axes = {"method": ["full", "lora"], "method.r": [8, 16, 64], "data.rows": [100]}
    pinned, notes = pin_axes(axes, ["model=gpt2", "+method.r=32", "sweep.yes=true"])
    assert pinned["method.r"] == [32] and pinned["method"] == ["full", "lora"]
    assert notes == ["method.r=32 replaces the matrix's method.r axis [8,16,64]: every cell has method.r=32"]
    cells = expand({"axes": pinned}, "lora")
    assert sorted(c.label() for c in cells) == [
        "method=full data.rows=100",
        "method=lora method.r=32 data.rows=100",
    ]
    with pytest.raises(ConfigError, match=r"~method.r: deletes method.r, which matrix.axes varies"):
        pin_axes(axes, ["~method.r"])


def test_rows_above_the_data_collapse_into_one_cell_and_say_so():
    axes = {"method": ["lora"], "data.rows": [100, 1000, 5000, 10000]}
    capped, notes = cap_rows(axes, 900, "demo.jsonl")
    assert capped["data.rows"] == [100, 900]
    assert notes == [
        "data.rows 1000, 5000, 10000 exceed the 900 training rows of demo.jsonl: one cell with all 900 rows "
        "(data.rows=900)"
    ]
    assert cap_rows(axes, 20000, "big.jsonl") == (axes, [])
    # the data's row count itself on the axis: the values above it are that cell
    capped, notes = cap_rows({"data.rows": [900, 1000]}, 900, "d.jsonl")
    assert capped == {"data.rows": [900]} and "one cell" in notes[0]


def test_exclusion_matches_before_collapsing():
    """The issue's case: full has no rank, yet {method.r: 8, data.rows: 100} excludes full at 100 rows
    as well, because it matches the point before the rank collapses (the report counts the same)."""
    m = {
        "axes": {"method": ["full", "lora"], "method.r": [8], "data.rows": [100, 200]},
        "exclude": [{"method.r": 8, "data.rows": 100}],
    }
    assert sorted(c.label() for c in expand(m, "lora")) == [
        "method=full data.rows=200",
        "method=lora method.r=8 data.rows=200",
    ]

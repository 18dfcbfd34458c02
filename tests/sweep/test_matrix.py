"""Matrix expansion: product of axes, per-method collapsing, exclusions, seeds, stable ids."""

from __future__ import annotations

import pytest

from advisor.errors import ConfigError
from sweep.compose import compose
from sweep.matrix import cell_id, expand


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

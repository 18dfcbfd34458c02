"""advisor.data.dataset: every input format reads the same rows, with the right line numbers and problem kinds."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from advisor.config.schema import DataConfig
from advisor.data.dataset import DataError, carve, iter_examples, read_examples, split

INSTRUCTION_ROWS = [
    {
        "instruction": f"Translate sentence {i} to French.",
        "input": f"The cat sat on mat {i}.",
        "output": f"Réponse {i}",
    }
    for i in range(7)
] + [{"instruction": 'Say hi, "quoted"\nover two lines.', "input": "", "output": "hi"}]
CHAT_ROWS = [
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Question {i}?"},
            {"role": "assistant", "content": f"Answer {i}."},
        ]
    }  # fmt: skip
    for i in range(5)
]


def _write(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            w.writeheader()
            for r in rows:
                w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    elif fmt == "parquet":  # every column of every row (from_pylist alone takes the first row's keys)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]), path)
    return path


@pytest.mark.parametrize("rows", [INSTRUCTION_ROWS, CHAT_ROWS], ids=["instruction", "chat"])
def test_every_format_reads_the_same_rows(tmp_path, rows):
    cfg = DataConfig()
    read = {
        fmt: read_examples(_write(tmp_path / f"d.{fmt}", rows, fmt), cfg)
        for fmt in ("jsonl", "json", "csv", "parquet")
    }
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hf_dict"))
    read["hf"] = read_examples(tmp_path / "hf", cfg)
    read["hf_dict"] = read_examples(tmp_path / "hf_dict", cfg)
    want = [ex.messages for ex in read["jsonl"]]
    assert len(want) == len(rows)
    for fmt, examples in read.items():
        assert [ex.messages for ex in examples] == want, fmt
    assert read["jsonl"][0].response in ("Réponse 0", "Answer 0.")


def test_hf_folder_with_several_shards_keeps_row_order(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(40)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"), num_shards=3)
    assert len(list((tmp_path / "hf").glob("*.arrow"))) == 3
    got = read_examples(tmp_path / "hf", DataConfig())
    assert [ex.response for ex in got] == [f"a{i}" for i in range(40)]
    assert [ex.line for ex in got] == list(range(1, 41))


def test_csv_line_numbers_count_multiline_fields(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('instruction,output\n"two\nlines",ok\nthird,\nfourth,fine\n', encoding="utf-8")
    got = {line: (ex, [p.kind for p in probs]) for line, ex, probs in iter_examples(path, DataConfig())}
    assert sorted(got) == [2, 4, 5]  # the quoted field spans lines 2-3
    assert got[4][1] == ["empty"]
    assert got[5][0] is not None and got[5][0].response == "fine"


def test_problems_carry_their_kind_and_line(tmp_path):
    rows = [
        '{"instruction": "a", "output": "b"}',
        '{"instruction": "a", "output": ',
        '["not", "an", "object"]',
        '{"instruction": "a"}',
        '{"instruction": "a", "output": "  \\t "}',
        '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
        '{"messages": [{"role": "user", "content": "x"}]}',
        '{"prompt": "x", "completion": "y"}',
        '{"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "y"}]}',
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(rows) + "\n")
    kinds = {line: [p.kind for p in probs] for line, _, probs in iter_examples(path, DataConfig())}
    assert kinds == {1: [], 2: ["malformed"], 3: ["malformed"], 4: ["missing"], 5: ["empty"],
                     6: ["unknown_role"], 7: ["schema"], 8: ["schema"], 9: ["empty"]}  # fmt: skip
    with pytest.raises(DataError) as e:
        read_examples(path, DataConfig())
    assert f"{path}:6: `messages[0].role`='robot': unknown role" in str(e.value)


def test_configured_field_names(tmp_path):
    path = _write(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}], "jsonl")
    cfg = DataConfig(fields=(("instruction", "prompt"), ("output", "completion")))
    assert read_examples(path, cfg)[0].messages == (("user", "p"), ("assistant", "c"))


def test_split_and_carve_agree(tmp_path):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(50)]
    cfg = DataConfig(path=str(_write(tmp_path / "d.jsonl", rows, "jsonl")), val_fraction=0.2, rows=10)
    s = split(cfg, seed=3)
    val_idx, train_idx = carve(50, cfg, 3)
    assert [ex.line - 1 for ex in s.val] == val_idx and len(val_idx) == 10
    assert [ex.line - 1 for ex in s.train] == train_idx[:10] and s.train_pool == 40
    assert carve(50, cfg, 4)[0] != val_idx


def test_columnar_files_with_both_shapes_read_every_row(tmp_path):
    rows = INSTRUCTION_ROWS[:3] + CHAT_ROWS[:2]
    cfg = DataConfig()
    want = [ex.messages for ex in read_examples(_write(tmp_path / "d.jsonl", rows, "jsonl"), cfg)]
    for fmt in ("parquet", "csv"):  # every row gets every column: null / "" where a shape lacks one
        got = read_examples(_write(tmp_path / f"d.{fmt}", rows, fmt), cfg)
        assert [ex.messages for ex in got] == want, fmt
    bad = [
        {"instruction": "q", "output": None, "messages": None},
        {"instruction": None, "output": None, "messages": []},
    ]
    kinds = {
        line: [p.kind for p in probs]
        for line, _, probs in iter_examples(_write(tmp_path / "b.parquet", bad, "parquet"), cfg)
    }
    assert kinds == {1: ["missing"], 2: ["missing", "missing"]}

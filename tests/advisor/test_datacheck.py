"""`data check` finds each planted problem at its line; `data prepare` writes a split that re-checks clean."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.config.schema import from_names
from advisor.data.check import check
from advisor.data.command import run_data_command
from advisor.data.dataset import DataError
from advisor.data.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]
_rng = random.Random(7)
VOCAB = [
    "".join(_rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_rng.randint(3, 9))) for _ in range(3000)
]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def edit(text: str, rng: random.Random, k: int) -> str:
    """`text` with k words (spread out) replaced."""
    w = text.split()
    for i in rng.sample(range(0, len(w), 3), k):
        w[i] = "edited" + w[i]
    return " ".join(w)


def clean_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"instruction": words(rng, 25), "output": words(rng, 15)} for _ in range(n)]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def crafted(path: Path) -> Path:
    """40 clean rows, then one planted problem per line (41-51)."""
    rng = random.Random(1)
    rows: list = clean_rows(40)
    near = dict(rows[4], instruction=edit(rows[4]["instruction"], rng, 3))
    rows += [
        '{"instruction": "cut off", "output": ',  # 41 malformed
        {"instruction": words(rng, 20)},  # 42 missing output
        {"instruction": words(rng, 20), "output": " \t "},  # 43 empty
        {
            "messages": [{"role": "robot", "content": words(rng, 9)}, {"role": "assistant", "content": "ok"}]
        },  # 44
        {
            "messages": [
                {"role": "user", "content": words(rng, 20)},
                {"role": "assistant", "content": words(rng, 9)},
            ]
        },
        rows[2],  # 46 exact duplicate of 3
        near,  # 47 near-duplicate of 5 (3 words changed)
        {"instruction": rows[6]["instruction"], "output": words(rng, 15)},  # 48 conflicts with 7
        {"instruction": "  " + words(rng, 20), "output": words(rng, 10) + "\n"},  # 49 stray whitespace
        {"instruction": "### Instruction:\n" + words(rng, 20), "output": words(rng, 10)},  # 50 template
        {"instruction": words(rng, 400), "output": words(rng, 10)},  # 51 longer than seq_len
    ]
    return write_jsonl(path, rows)


def cfg_for(path, seq_len: int = 512, **data):
    return from_names(
        "llama-3.2-1b", "lora", "a100-80gb", train={"seq_len": seq_len}, data={"path": str(path), **data}
    )


def by_name(doc: dict, file: str = "train") -> dict:
    return {c["name"]: c for c in doc["checks"] if c["file"] == file}


def test_each_planted_problem_is_found_at_its_line(tmp_path):
    doc, _ = check(cfg_for(crafted(tmp_path / "bad.jsonl")))
    c = by_name(doc)
    found = {name: c[name]["lines"] for name in c if c[name]["count"]}
    assert found == {
        "malformed": [41], "missing": [42], "empty": [43], "unknown_role": [44], "mixed_shapes": [45],
        "exact_duplicate": [46], "near_duplicate": [47], "conflicting_answer": [48], "stray_whitespace": [49],
        "mixed_templates": [50], "truncated": [51],
    }  # fmt: skip
    assert c["exact_duplicate"]["pairs"] == [[46, 3]]
    assert c["near_duplicate"]["pairs"] == [[47, 5]]
    assert c["conflicting_answer"]["pairs"] == [[48, 7]]
    assert c["mixed_templates"]["styles"] == {"none": 46, "alpaca": 1}
    assert doc["problems"] == 8 and doc["warnings"] == 3 and not doc["clean"]
    assert doc["stats"]["rows"] == 47 and doc["stats"]["skipped_rows"] == 4
    assert doc["stats"]["truncated_rows"] == 1 and doc["stats"]["tokenizer"] == "estimate: bytes/4"


def test_clean_file_passes(tmp_path, capsys):
    cfg = cfg_for(write_jsonl(tmp_path / "ok.jsonl", clean_rows(60)))
    assert run_data_command("check", cfg, fmt="json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["clean"] and doc["problems"] == 0 and doc["warnings"] == 0 and doc["stats"]["rows"] == 60


def test_near_duplicates_at_scale_no_false_positives(tmp_path):
    rng = random.Random(3)
    rows = clean_rows(3000, seed=5)
    planted = {}
    for k in range(30):
        src = rng.randrange(3000)
        rows.append(
            {
                "instruction": edit(rows[src]["instruction"], rng, rng.randint(1, 3)),
                "output": rows[src]["output"],
            }
        )
        planted[3001 + k] = src + 1
    # short examples a few characters apart are different examples, not near-duplicates
    rows += [{"instruction": f"What is 2+{i}?", "output": str(2 + i)} for i in range(5)]
    doc, _ = check(cfg_for(write_jsonl(tmp_path / "big.jsonl", rows)))
    near = by_name(doc)["near_duplicate"]
    assert near["count"] == 30
    assert near["pairs"] == [[line, planted[line]] for line in sorted(planted)][:10]
    assert doc["problems"] == 30


def test_validation_overlap_exact_and_near(tmp_path):
    rng = random.Random(9)
    train = clean_rows(50)
    val = clean_rows(10, seed=99) + [train[10], dict(train[20], output=edit(train[20]["output"], rng, 1))]
    doc, _ = check(
        cfg_for(
            write_jsonl(tmp_path / "t.jsonl", train), val_path=str(write_jsonl(tmp_path / "v.jsonl", val))
        )
    )
    c = by_name(doc)
    assert c["val_overlap_exact"]["pairs"] == [[11, 11]]
    assert c["val_overlap_near"]["pairs"] == [[21, 12]]
    assert doc["problems"] == 2 and doc["val_stats"]["rows"] == 12


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prepare_output_rechecks_clean_and_input_is_unchanged(tmp_path):
    src = crafted(tmp_path / "bad.jsonl")
    before = sha(src)
    out = tmp_path / "out"
    summary = prepare(cfg_for(src, out_dir=str(out), val_fraction=0.1))
    assert sha(src) == before
    manifest = json.loads((out / "manifest.json").read_text())
    removed = {r["line"]: (r["reason"], r.get("of_line")) for r in manifest["removed_rows"]}
    assert removed == {41: ("malformed", None), 42: ("missing", None), 43: ("empty", None),
                       44: ("unknown_role", None), 46: ("exact_duplicate", 3), 47: ("near_duplicate", 5),
                       48: ("conflicting_answer", 7)}  # fmt: skip
    assert manifest["inputs"]["sha256"] == before and manifest["seed"] == 0
    assert summary["train"]["rows"] + summary["val"]["rows"] == 51 - 7
    assert summary["val"]["rows"] == round(44 * 0.1)
    assert summary["fixed"] == {"stray_whitespace": 1}
    assert summary["warnings_kept"] == {"truncated": 1, "mixed_templates": 1, "mixed_shapes": 1}
    doc, _ = check(cfg_for(out / "train.jsonl", val_path=str(out / "val.jsonl")))
    assert doc["clean"], [c for c in doc["checks"] if c["count"] and c["severity"] == "problem"]
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert all(set(r) <= {"instruction", "output", "messages"} for r in rows)
    assert not any(r.get("instruction", "").startswith(" ") for r in rows)


def test_prepare_is_seeded_and_keeps_a_given_validation_file(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", clean_rows(80))
    a = prepare(cfg_for(src, out_dir=str(tmp_path / "a")))
    prepare(cfg_for(src, out_dir=str(tmp_path / "b")))
    for name in ("train.jsonl", "val.jsonl"):
        assert sha(tmp_path / "a" / name) == sha(tmp_path / "b" / name)
    assert a["val"]["rows"] == 8
    c = prepare(from_names(data={"path": str(src), "out_dir": str(tmp_path / "c")}, seed=1))
    assert sha(tmp_path / "c" / "val.jsonl") != sha(tmp_path / "a" / "val.jsonl")
    val = write_jsonl(tmp_path / "v.jsonl", clean_rows(5, seed=42) + [clean_rows(80)[3]])
    d = prepare(cfg_for(src, out_dir=str(tmp_path / "d"), val_path=str(val)))
    assert d["val"]["rows"] == 6 and d["train"]["rows"] == 79 and c["train"]["rows"] == 72
    assert d["removed"]["by_reason"] == {"val_overlap_exact": 1}


def test_prepare_never_overwrites_its_input(tmp_path):
    src = write_jsonl(tmp_path / "train.jsonl", clean_rows(20))
    before = sha(src)
    with pytest.raises(DataError, match="would overwrite the input"):
        prepare(cfg_for(src, out_dir=str(tmp_path)))
    assert sha(src) == before


def tw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweep.cli", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_cli_exit_codes_and_json(tmp_path):
    bad = tw(
        "data", "check", f"data.path={crafted(tmp_path / 'bad.jsonl')}", "train.seq_len=512", "format=json"
    )
    assert bad.returncode == 1, bad.stderr
    assert json.loads(bad.stdout)["problems"] == 8
    ok = tw("data", "check", f"data.path={write_jsonl(tmp_path / 'ok.jsonl', clean_rows(30))}")
    assert ok.returncode == 0 and "clean" in ok.stdout, ok.stderr
    missing = tw("data", "check", f"data.path={tmp_path / 'nope.jsonl'}")
    assert missing.returncode == 2 and "nope.jsonl" in missing.stderr and "Traceback" not in missing.stderr


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% if m['role'] == 'assistant' %}"
    "{{ eos_token }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tokenizer_folder(path: Path, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """A real tokenizer folder as transformers saves it (BPE trained here; no hub)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator([words(random.Random(i), 30) for i in range(300)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(str(path))
    return path


@pytest.mark.parametrize("template", [CHAT_TEMPLATE, None], ids=["chat_template", "plain"])
def test_token_counts_equal_the_runners_encoding(tmp_path, template):
    """data check counts what runners.data.encode feeds the model (real tokenizer, real runner code)."""
    from advisor.data.dataset import read_examples
    from advisor.data.stats import TokenCounter, dataset_stats
    from runners.data import encode
    from runners.model import load_tokenizer

    folder = tokenizer_folder(tmp_path / "tok", template)
    rows = clean_rows(30) + [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": words(_rng, 9)},
                {"role": "assistant", "content": words(_rng, 12)},
            ]
        }  # fmt: skip
    ]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = from_names(
        "llama-3.2-1b", train={"seq_len": 64}, data={"path": str(src)}, arch={"path": str(folder)}
    )
    tok = load_tokenizer(cfg)
    assert bool(tok.chat_template) == bool(template)
    examples = read_examples(src, cfg.data)
    want = [len(encode(tok, ex, 10**6).input_ids) for ex in examples]
    assert TokenCounter(str(folder)).count(examples) == want
    doc, _ = check(cfg)
    assert doc["stats"]["tokenizer"] == str(folder) and not doc["stats"]["estimated"]
    assert doc["stats"]["total_tokens"] == sum(min(t, 64) for t in want)
    assert doc["stats"]["truncated_rows"] == sum(encode(tok, ex, 64).truncated for ex in examples) > 0
    assert doc["stats"] == dataset_stats(cfg).to_dict()


def test_estimated_stats_equal_check_and_state_the_estimate(tmp_path):
    import math

    from advisor.data.stats import dataset_stats

    rows = clean_rows(40) + [{"instruction": "x", "output": "ü" * 3000}]
    cfg = cfg_for(write_jsonl(tmp_path / "d.jsonl", rows), seq_len=100)
    stats = dataset_stats(cfg)
    text = "### User:\n{instruction}\n\n### Assistant:\n{output}\n\n"  # the runner's plain template
    est = [math.ceil(len(text.format(**r).encode()) / 4) for r in rows]
    assert stats.tokenizer == "estimate: bytes/4" and stats.estimated
    assert stats.total_tokens == sum(min(t, 100) for t in est) and stats.tokens_max == max(est)
    assert stats.tokens_untruncated == sum(est) and stats.truncated_rows == 1
    doc, _ = check(cfg)
    assert doc["stats"] == stats.to_dict()
    assert "estimated: bytes/4" in by_name(doc)["truncated"]["description"]


def test_advise_reports_the_same_token_total_as_data_check(tmp_path):
    pytest.importorskip("advisor.estimator.estimate", reason="advise's estimator is not in the tree yet")
    from advisor.estimator.advise import advise

    cfg = cfg_for(write_jsonl(tmp_path / "d.jsonl", clean_rows(40)))
    doc, _ = check(cfg)
    adv = advise(cfg, methods=("lora",), given={"data.path"})
    assert adv["query"]["data"]["stats"]["total_tokens"] == doc["stats"]["total_tokens"]


def test_bad_paths_are_named_with_their_key_all_at_once(tmp_path):
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError) as e:
        check(cfg_for(tmp_path / "d.txt", val_path=str(tmp_path / "v.jsonl")))
    assert e.value.problems == [
        f"data.path='{tmp_path / 'd.txt'}': unknown file type '.txt' (allowed: .jsonl, .ndjson, .json, .csv, "
        ".parquet, a datasets.save_to_disk folder)",
        f"data.val_path='{tmp_path / 'v.jsonl'}': file not found",
    ]


def test_rows_without_a_prompt_never_conflict(tmp_path):
    rows = [{"messages": [{"role": "assistant", "content": words(random.Random(i), 12)}]} for i in range(5)]
    doc, _ = check(cfg_for(write_jsonl(tmp_path / "d.jsonl", rows)))
    assert doc["clean"], [c for c in doc["checks"] if c["count"]]


def test_digest_columns_grow_when_the_row_estimate_is_short(tmp_path, monkeypatch):
    import advisor.data.scan

    src = crafted(tmp_path / "bad.jsonl")
    want, _ = check(cfg_for(src))
    monkeypatch.setattr(advisor.data.scan, "row_capacity", lambda _path: 1)
    monkeypatch.setattr(advisor.data.scan, "BATCH_ROWS", 4)
    got, _ = check(cfg_for(src))
    assert got == want


# -- files that are not what their name says: a problem at a line, never an exception (issue 16) --
BAD_FILES = {
    "latin1.jsonl": (b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9", "output": "b"}\n', 2),
    "binary.jsonl": (bytes(range(256)) * 4, 1),
    "text.parquet": (b"this is a text file, not Parquet\n", 1),
    "latin1.csv": (b"instruction,output\nfine,row\ncaf\xe9,b\n", 3),
    "latin1.json": (b'[{"instruction": "a", "output": "b"},\n {"instruction": "caf\xe9", "output": "b"}]', 2),
    "deep.json": (b"[" * 100_000 + b"]" * 100_000, 1),
    "deep.jsonl": (b'{"instruction": "a", "output": "b"}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n", 2),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unreadable_files_are_problems_with_their_line(tmp_path, name):
    content, line = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    doc, _ = check(cfg_for(path))
    assert not doc["clean"]
    assert line in by_name(doc)["malformed"]["lines"], doc["problem_messages"]
    message = " ".join(doc["problem_messages"]["train"])
    assert any(w in message for w in ("UTF-8", "Parquet", "nested too deeply", "malformed")), message


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_file_is_a_problem_not_clean(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    doc, _ = check(cfg_for(path))
    assert not doc["clean"] and by_name(doc)["no_rows"]["count"] == 1
    assert run_data_command("check", cfg_for(path), fmt="json") == 1


def test_prepare_into_a_file_or_an_unwritable_folder_names_data_out_dir(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", clean_rows(30))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(DataError, match="data.out_dir=.*is a file"):
        prepare(cfg_for(data, out_dir=str(a_file)))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere: nothing to refuse
            with pytest.raises(DataError, match="data.out_dir=.*not writable"):
                prepare(cfg_for(data, out_dir=str(locked / "sub")))
    finally:
        locked.chmod(0o700)
    assert not list(tmp_path.rglob("*.tmp"))

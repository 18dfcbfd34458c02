"""The advise document: shape (design.md), and that its searches answer what they claim."""

from __future__ import annotations

import json

import pytest

from advisor.config import catalog
from advisor.config.schema import from_names
from advisor.estimator import search
from advisor.estimator.advise import advise, for_method
from advisor.estimator.estimate import estimate, fit_batch
from tests.advisor.rowshape import MEMORY_KEYS, ROW_KEYS

METHODS = ("full", "lora", "qlora")


@pytest.fixture(scope="module")
def cfg_70b():
    return from_names("llama-3.1-70b", "lora", "a100-80gb", data={"rows": 20000}, budget={"usd": 100})


@pytest.fixture(scope="module")
def doc_70b(cfg_70b):
    return advise(cfg_70b, METHODS, given={"model", "data.rows", "budget.usd"})


@pytest.fixture(scope="module")
def doc_8b():
    cfg = from_names("llama-3.1-8b", "lora", "a100-80gb")
    return advise(cfg, METHODS, given=set())


def _check_row(row):
    assert set(row) >= ROW_KEYS, ROW_KEYS - set(row)
    assert set(row["memory"]) >= MEMORY_KEYS
    assert {"tokens", "flops", "hours"} <= set(row["time"])
    assert {"usd", "usd_per_gpu_hour", "price_source", "price_as_of"} <= set(row["cost"])
    assert row["fits"] in (True, False)


def test_document_shape_and_json(doc_70b):
    assert set(doc_70b) >= {
        "query",
        "estimates",
        "min_gpus",
        "cheapest",
        "reverse",
        "verdict",
        "quality_prior",
    }
    json.loads(json.dumps(doc_70b, allow_nan=False))  # plain JSON all the way down, no NaN/inf
    for row in doc_70b["estimates"]:
        _check_row(row)
    for m in METHODS:
        if doc_70b["cheapest"][m]["fits"]:
            _check_row(doc_70b["cheapest"][m])
    q = doc_70b["query"]
    assert q["model"]["name"] == "llama-3.1-70b" and q["gpu"]["name"] == "a100-80gb"
    assert q["budget"] == {"usd": 100.0, "hours": None, "scope": "per run"}
    assert q["price"]["provider"] and q["price"]["as_of"]


def test_ranks_compared_unless_user_set_r(doc_70b, cfg_70b):
    got = [(r["method"], r["r"]) for r in doc_70b["estimates"]]
    assert got == [
        ("full", None),
        ("lora", 8),
        ("lora", 16),
        ("lora", 64),
        ("qlora", 8),
        ("qlora", 16),
        ("qlora", 64),
    ]
    one = advise(cfg_70b.replace(method={"r": 32}), ("lora",), given={"method", "method.r"})
    assert [(r["method"], r["r"]) for r in one["estimates"]] == [("lora", 32)]


def test_70b_under_100_usd_reads_right(doc_70b):
    full = doc_70b["min_gpus"]["full"]
    assert full["count"] is not None and full["count"] >= 2  # 70B full fine-tuning never fits one 80 GB card
    assert full["parallel"] in search.SHARDED  # ddp replicates: the search had to assume sharding
    assert "ddp" in full["reason"]
    qlora = doc_70b["cheapest"]["qlora"]["cheapest_single_card"]
    assert qlora is not None and qlora["gpu_count"] == 1
    v = doc_70b["verdict"]
    for label in ("Full fine-tuning", "LoRA r=16", "QLoRA r=16", "$100"):
        assert label in v, (label, v)
    assert catalog.gpus()[qlora["gpu"]]["display_name"] in v
    full_budget = doc_70b["cheapest"]["full"].get("cheapest_within_budget")
    if not doc_70b["cheapest"]["full"]["fits"]:
        assert "Full fine-tuning fits no catalog GPU" in v
    elif full_budget is None:
        assert "Full fine-tuning is not possible within $100" in v
    else:
        assert full_budget["usd"] <= 100


def test_min_gpus_is_the_smallest_node_shape_that_fits(doc_70b, cfg_70b):
    est = search.Estimates()
    for m in METHODS:
        mg = doc_70b["min_gpus"][m]
        c = for_method(cfg_70b, m)
        fits = lambda x: est.fitted(x) is not None  # noqa: E731 — some micro-batch at the same global batch
        if mg["count"] is None:
            for par in search.parallel_order(c.parallel):
                assert not fits(search.at_count(c, search.MAX_MIN_GPUS, par))
            continue
        n, par = mg["count"], mg["parallel"]
        assert fits(search.at_count(c, n, par))
        assert mg["micro_batch_size"] * mg["grad_accum"] == c.train.micro_batch_size * c.train.grad_accum
        assert n in search.node_shapes(search.MAX_MIN_GPUS)  # a real node shape: 1, 2, 4, 8, 16, …
        if n > 1:  # the next smaller node shape does not fit
            smaller = [k for k in search.node_shapes(n) if k < n][-1]
            assert not fits(search.at_count(c, smaller, par))
            assert not fits(search.at_count(c, n, cfg_70b.parallel)) or par == cfg_70b.parallel


def test_cheapest_matches_brute_force():
    cfg = for_method(from_names("qwen2.5-7b", "lora", "a100-80gb", data={"rows": 2000}), "qlora")
    doc = advise(cfg, ("qlora",), given={"method", "method.r"})
    best = None
    for name, g in catalog.gpus().items():
        if name == "cpu" or not g["bnb_supported"]:
            continue
        c = search.on_gpu(cfg, name)
        for n in range(1, search.MAX_CHEAPEST_GPUS + 1):
            for par in search.parallel_order(c.parallel):
                fitted = fit_batch(search.at_count(c, n, par))
                row = estimate(fitted) if fitted is not None else {"fits": False}
                if row["fits"] and (best is None or row["cost"]["usd"] < best["cost"]["usd"] - 0.005):
                    best = row
                if row["fits"]:
                    break
    ch = doc["cheapest"]["qlora"]
    assert ch["fits"] and best is not None
    assert ch["cost"]["usd"] == pytest.approx(best["cost"]["usd"], abs=0.01)
    assert ch["gpu"] != "cpu"


def test_reverse_answers_are_the_limits(doc_8b):
    cfg = from_names("llama-3.1-8b", "lora", "a100-80gb")
    step = search.SEQ_LEN_STEP
    for m in METHODS:
        rv = doc_8b["reverse"][m]
        c = search.at_count(for_method(cfg, m), rv["gpu_count"], rv["parallel"])
        fits = lambda c=c, **t: estimate(c.replace(train=t))["fits"]  # noqa: E731
        for key in ("max_seq_len_micro_batch_1", "max_seq_len"):
            a = rv[key]
            if a["seq_len"] is None:
                assert not fits(seq_len=step, micro_batch_size=a["micro_batch_size"])
                continue
            assert a["packing"] is True  # the answer is for sequences filled to seq_len
            assert fits(seq_len=a["seq_len"], micro_batch_size=a["micro_batch_size"], packing=True)
            if a["limited_by"] == "memory":
                assert not fits(
                    seq_len=a["seq_len"] + step, micro_batch_size=a["micro_batch_size"], packing=True
                )
        mb = rv["max_micro_batch_size"]["micro_batch_size"]
        if mb is not None:
            assert fits(micro_batch_size=mb) and not fits(micro_batch_size=mb + 1)
        fb = rv["fit_batch"]
        if fb is not None:
            assert (
                fb["micro_batch_size"] * fb["grad_accum"] == cfg.train.micro_batch_size * cfg.train.grad_accum
            )
            assert fits(micro_batch_size=fb["micro_batch_size"], grad_accum=fb["grad_accum"])


def test_without_budget_verdict_names_cheapest(doc_8b):
    v = doc_8b["verdict"]
    assert v.startswith("The cheapest configuration that fits is ")
    assert all(r["within_budget"] is None for r in doc_8b["estimates"])
    for label in ("Full fine-tuning", "LoRA r=16", "QLoRA r=16"):
        assert label in v


def test_qlora_skipped_on_a_card_without_bitsandbytes():
    doc = advise(from_names("llama-3.1-8b", "lora", "mi300x"), METHODS, given=set())
    assert {r["method"] for r in doc["estimates"]} == {"full", "lora"}
    assert any("QLoRA" in n for n in doc["query"]["notes"])
    assert doc["min_gpus"]["qlora"]["count"] is None and doc["reverse"]["qlora"] is None
    assert catalog.gpus()[doc["cheapest"]["qlora"]["gpu"]]["bnb_supported"]


def test_quality_prior_is_labelled_a_prior(doc_70b):
    qp = doc_70b["quality_prior"]
    assert qp["kind"] == "prior (literature), not a measurement"
    assert qp["methods"]["lora"] == {"low_pct": 90.0, "high_pct": 95.0}
    assert qp["methods"]["qlora"] == {"low_pct": 88.0, "high_pct": 93.0}
    assert "LoRA" in qp["source"]


def test_tracer_rows_merge_over_the_analytic_row():
    cfg = from_names("llama-3.2-1b", "lora", "a100-80gb")
    calls = []

    def tracer(c):
        calls.append(c)
        return {"memory": {"activations_gib": 1.25}, "calibrated": ["memory.activations_gib"]}

    doc = advise(cfg, ("lora",), given={"method", "method.r"}, tracer=tracer)
    (row,) = doc["estimates"]
    assert len(calls) == 1 and calls[0].method.name == "lora"
    assert row["memory"]["activations_gib"] == 1.25
    assert row["memory"]["weights_gib"] == estimate(cfg)["memory"]["weights_gib"]
    assert any("trace" in n for n in doc["query"]["notes"])


def test_traced_reserved_memory_replaces_the_analytic_slack():
    """A trace's reserved figure (its allocations replayed through the caching-allocator model) is the
    row's reserved; memory outside torch (device − reserved) stays the analytic model's."""
    cfg = from_names("llama-3.2-1b", "lora", "a100-80gb")
    base = estimate(cfg)["memory"]

    def tracer(_cfg):
        return {"memory": {"allocated_gib": 10.0, "reserved_gib": 10.4}}

    (row,) = advise(cfg, ("lora",), given={"method", "method.r"}, tracer=tracer)["estimates"]
    assert row["memory"]["reserved_gib"] == 10.4
    assert row["memory"]["device_gib"] == pytest.approx(10.4 + base["device_gib"] - base["reserved_gib"])

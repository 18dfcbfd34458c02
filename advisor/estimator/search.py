"""The searches behind `advise`: minimum GPU count, cheapest catalog GPU, and the reverse questions
(largest seq_len / micro-batch that fit). All are bisections over the analytic estimator, whose
fit test is monotone in each searched knob; every estimate is cached for the length of one advise.

GPU counts are node shapes (`node_shapes`): 1, 2, 4 or 8 cards of one node, then whole nodes of 8
(16, 24, …) — what can be rented and what one cell on N processes runs on; never "10× A100".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from advisor.config import catalog
from advisor.config.schema import RunConfig, build
from advisor.errors import ConfigError

MAX_MIN_GPUS = 64  # min_gpus searches gpu.count in 1..64 of the requested card
MAX_CHEAPEST_GPUS = 16  # cheapest searches gpu.count in 1..16 of every catalog card
SEQ_LEN_STEP = 64  # reverse seq_len answers are multiples of this (tokens)
MAX_MICRO_BATCH = 4096  # reverse micro-batch search stops here (sequences)
SHARDED = ("zero3", "fsdp")  # parallelisms that shard the weights across GPUs (and keep them sharded)
GPUS_PER_NODE = 8  # above this, counts are whole nodes


def node_shapes(limit: int) -> list[int]:
    """GPU counts up to `limit` that a cell can run on: 1, 2, 4, 8, then multiples of 8."""
    shapes = [1, 2, 4, *range(GPUS_PER_NODE, max(limit, GPUS_PER_NODE) + 1, GPUS_PER_NODE)]
    return [n for n in shapes if n <= limit]


def smallest_shape(pred: Callable[[int], bool], limit: int) -> int | None:
    """Smallest node shape ≤ limit with pred (monotone False…True in the count); None if none."""
    shapes = node_shapes(limit)
    i = smallest_true(lambda k: pred(shapes[k]), 0, len(shapes) - 1) if shapes else None
    return None if i is None else shapes[i]


class Estimates:
    """`advisor.estimator.estimate.estimate` with a per-advise cache (RunConfig is frozen, hence hashable)."""

    def __init__(self, stats: Any = None, calibration: Any = None) -> None:
        from advisor.estimator.estimate import estimate

        self._estimate = estimate
        self.stats, self.calibration = stats, calibration
        self._rows: dict[RunConfig, dict[str, Any]] = {}
        self._fitted: dict[RunConfig, RunConfig | None] = {}

    def row(self, cfg: RunConfig) -> dict[str, Any]:
        if cfg not in self._rows:
            self._rows[cfg] = self._estimate(cfg, stats=self.stats, calibration=self.calibration)
        return self._rows[cfg]

    def fits(self, cfg: RunConfig) -> bool:
        return bool(self.row(cfg)["fits"])

    def fitted(self, cfg: RunConfig) -> RunConfig | None:
        """`cfg` with the largest micro-batch that fits at the same global batch (fit_batch), or None."""
        if cfg not in self._fitted:
            from advisor.estimator.estimate import fit_batch

            self._fitted[cfg] = fit_batch(cfg, stats=self.stats)
        return self._fitted[cfg]


def smallest_true(pred: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """Smallest x in [lo, hi] with pred(x), for pred monotone False…True; None if pred(hi) is False."""
    if not pred(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def largest_true(pred: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """Largest x in [lo, hi] with pred(x), for pred monotone True…False; None if pred(lo) is False."""
    if not pred(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if pred(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def parallel_order(parallel: str) -> tuple[str, ...]:
    """The requested parallelism, then zero3 when it replicates the weights (ddp, zero2)."""
    return (parallel,) if parallel in SHARDED else (parallel, "zero3")


def at_count(cfg: RunConfig, count: int, parallel: str) -> RunConfig:
    return cfg.replace(gpu={"count": count}, parallel=parallel)


def _fits_at(est: Estimates, cfg: RunConfig, parallel: str) -> Callable[[int], bool]:
    """count -> whether cfg fits on `count` of its card with `parallel`, at some micro-batch that keeps
    the global batch (a user short of memory lowers the micro-batch before renting more cards)."""
    return lambda count: est.fitted(at_count(cfg, count, parallel)) is not None


def on_gpu(cfg: RunConfig, name: str) -> RunConfig:
    """`cfg` on catalog card `name` at its cheapest default price (the requested card keeps the
    user's own card fields and price choice). Raises ConfigError when the method cannot run there."""
    d = cfg.to_dict()
    if name == cfg.gpu.name:
        return build(d)  # round-trips; validates the method on this card (qlora needs bitsandbytes)
    d["gpu"] = catalog.load_option("gpu", name)
    d["price"] = {"provider": None}
    return build(d)


def summary(row: dict[str, Any], parallel: str) -> dict[str, Any]:
    """The short form of a row used by min_gpus and cheapest."""
    cost = row["cost"]
    return {
        "gpu": row["gpu"],
        "gpu_count": row["gpu_count"],
        "parallel": parallel,
        "device_gib": row["memory"]["device_gib"],
        "hours": row["time"]["hours"],
        "usd": cost["usd"],
        "usd_per_gpu_hour": cost["usd_per_gpu_hour"],
        "price_source": cost["price_source"],
        "price_as_of": cost["price_as_of"],
        "within_budget": row["within_budget"],
        "micro_batch_size": row.get("micro_batch_size"),
        "grad_accum": row.get("grad_accum"),
    }


def smallest_node(est: Estimates, cfg: RunConfig, limit: int) -> tuple[int, str] | None:
    """(count, parallel) of the smallest node shape ≤ limit on which cfg fits: its own parallelism,
    else zero3 when that replicates the weights (ddp, zero2); None when nothing up to limit fits."""
    for parallel in parallel_order(cfg.parallel):
        n = smallest_shape(_fits_at(est, cfg, parallel), limit)
        if n is not None:
            return n, (cfg.parallel if n == 1 else parallel)
    return None


def min_gpus(est: Estimates, cfg: RunConfig) -> dict[str, Any]:
    """Smallest node shape of the requested card that fits (1, 2, 4, 8, 16, … 64), with the
    parallelism it assumes."""
    limit = 1 if cfg.gpu.is_cpu else MAX_MIN_GPUS  # gpu=cpu is this one machine
    found = smallest_node(est, cfg, limit)
    if found is not None:
        n, used = found
        fit = est.fitted(at_count(cfg, n, used))
        assert fit is not None
        out = {"count": n, **summary(est.row(fit), used), "reason": None}
        if used != cfg.parallel:
            out["reason"] = (
                f"parallel={cfg.parallel} keeps a full copy of the weights on every GPU and never fits; "
                f"assumed {used} (weights, gradients and optimizer states sharded)"
            )
        return out
    if cfg.gpu.is_cpu:
        return {
            "count": None,
            "reason": f"does not fit {cfg.gpu.display_name} ({cfg.gpu.usable_gib:.1f} GiB)",
        }
    tried = " or ".join(parallel_order(cfg.parallel))
    return {
        "count": None,
        "reason": f"does not fit on {MAX_MIN_GPUS}× {cfg.gpu.display_name} with parallel={tried}",
    }


def candidates(est: Estimates, cfg: RunConfig) -> tuple[list[tuple[dict[str, Any], RunConfig]], list[str]]:
    """Every (catalog card, node shape 1, 2, 4, 8, 16) that fits, as (summary, config); plus why cards
    were skipped.

    Counts above the smallest fitting one are kept too: they are faster, which a budget in hours
    may need. The CPU entry is not a catalog GPU and is left out.
    """
    found: list[tuple[dict[str, Any], RunConfig]] = []
    skipped: list[str] = []
    for name in catalog.option_names("gpu"):
        if name == "cpu":
            continue
        try:
            g = on_gpu(cfg, name)
        except ConfigError as e:
            skipped.append(f"{name}: {e.problems[0]}")
            continue
        for parallel in parallel_order(g.parallel):
            n0 = smallest_shape(_fits_at(est, g, parallel), MAX_CHEAPEST_GPUS)
            if n0 is None:
                continue
            for n in (k for k in node_shapes(MAX_CHEAPEST_GPUS) if k >= n0):
                used = g.parallel if n == 1 else parallel
                c = est.fitted(at_count(g, n, used))
                if c is not None:
                    found.append((summary(est.row(c), used), c))
            break
    return found, skipped


def cheapest(
    found: list[tuple[dict[str, Any], RunConfig]], within_budget: bool = False, single_card: bool = False
) -> tuple[dict[str, Any], RunConfig] | None:
    """The lowest-USD candidate, optionally only those within budget / on one card. Costs equal to the
    cent (ideal scaling makes n cards cost what one does) go to fewer cards, then fewer hours."""
    pool = [c for c in found if not within_budget or c[0]["within_budget"] is not False]
    pool = [c for c in pool if not single_card or c[0]["gpu_count"] == 1]
    return min(pool, key=lambda c: (round(c[0]["usd"], 2), c[0]["gpu_count"], c[0]["hours"]), default=None)


def reverse(est: Estimates, cfg: RunConfig) -> dict[str, Any]:
    """Largest seq_len (micro-batch 1 and configured), largest micro-batch, and fit_batch's pair.

    The seq_len answers assume every sequence is filled to seq_len (train.packing=true): "can I train
    on sequences this long". The micro-batch answers keep the configured data and seq_len."""
    from advisor.estimator.estimate import fit_batch

    context = cfg.model.max_position_embeddings
    top = max(1, context // SEQ_LEN_STEP)

    def max_seq_len(micro: int) -> dict[str, Any]:
        base = cfg.replace(train={"micro_batch_size": micro, "packing": True})

        def at(k: int) -> RunConfig:
            return base.replace(train={"seq_len": k * SEQ_LEN_STEP})

        k = largest_true(lambda k: est.fits(at(k)), 1, top)
        out: dict[str, Any] = {
            "seq_len": None,
            "micro_batch_size": micro,
            "step": SEQ_LEN_STEP,
            "packing": True,
        }
        if k is None:
            return {**out, "limited_by": "memory", "reason": f"does not fit even at {SEQ_LEN_STEP} tokens"}
        out.update(seq_len=k * SEQ_LEN_STEP, limited_by="context" if k == top else "memory")
        longest = est.row(at(k)).get("peak_seq_len")
        if longest is not None and longest < k * SEQ_LEN_STEP:  # the estimate stopped growing with seq_len
            out.update(limited_by="data", longest_sequence_tokens=longest)
        return out

    micro = largest_true(lambda m: est.fits(cfg.replace(train={"micro_batch_size": m})), 1, MAX_MICRO_BATCH)
    fb = fit_batch(cfg, est.stats)
    return {
        "gpu": cfg.gpu.name,
        "gpu_count": cfg.gpu.count,
        "parallel": cfg.parallel,
        "max_seq_len_micro_batch_1": max_seq_len(1),
        "max_seq_len": max_seq_len(cfg.train.micro_batch_size),
        "max_micro_batch_size": {
            "micro_batch_size": micro,
            "seq_len": cfg.train.seq_len,
            "limited_by": "search cap" if micro == MAX_MICRO_BATCH else "memory",
        },
        "fit_batch": None
        if fb is None
        else {
            "micro_batch_size": fb.train.micro_batch_size,
            "grad_accum": fb.train.grad_accum,
            "global_batch": fb.train.micro_batch_size * fb.train.grad_accum * fb.gpu.count,
        },
    }

"""The claims table: compare-and-swap claims are exclusive across processes; dead owners are detected."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time

from sweep.claims import Claims, is_dead, maybe_dead, me


def _claim_all(url: str, out, n_cells: int) -> None:
    c = Claims(url, "s")
    won = []
    for cid in [f"c{i}" for i in range(n_cells)]:
        row = c.get(cid)
        if row and row.status == "pending" and c.cas(row, status="running", host="h", pid=os.getpid()):
            won.append(cid)
    out.put(won)


def test_concurrent_claims_are_exclusive_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    Claims(url, "s").ensure([f"c{i}" for i in range(40)])
    q = mp.get_context("fork").Queue()
    procs = [mp.get_context("fork").Process(target=_claim_all, args=(url, q, 40)) for _ in range(4)]
    for p in procs:
        p.start()
    won = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    flat = [c for w in won for c in w]
    assert sorted(flat) == sorted(f"c{i}" for i in range(40))  # every cell claimed exactly once


def test_stale_cas_loses_and_ensure_is_idempotent(tmp_path):
    c = Claims(f"sqlite:///{tmp_path / 'db'}", "s")
    c.ensure(["a"])
    c.ensure(["a", "b"])
    assert set(c.rows()) == {"a", "b"}
    row = c.get("a")
    assert c.cas(row, status="running")
    assert not c.cas(row, status="running")  # same old version: someone else moved first
    # another study on the same storage is independent
    Claims(f"sqlite:///{tmp_path / 'db'}", "other").ensure(["a"])
    assert c.get("a").status == "running"


def test_dead_owner_needs_stale_heartbeat_and_gone_pid(tmp_path):
    c = Claims(f"sqlite:///{tmp_path / 'db'}", "s")
    c.ensure(["a"])
    host, pid = me()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    c.cas(c.get("a"), status="running", host=host, pid=gone.pid, heartbeat=time.time())
    row = c.get("a")
    assert maybe_dead(row) and not is_dead(row, timeout_s=60)
    assert is_dead(row, timeout_s=60, now=time.time() + 61)
    c.cas(row, pid=pid)  # alive owner: never dead on this host, however old the heartbeat
    assert not is_dead(c.get("a"), timeout_s=60, now=time.time() + 1e6)
    c.cas(c.get("a"), host="elsewhere")  # another host: the heartbeat alone decides
    assert is_dead(c.get("a"), timeout_s=60, now=time.time() + 61)
    assert not is_dead(c.get("a"), timeout_s=60)

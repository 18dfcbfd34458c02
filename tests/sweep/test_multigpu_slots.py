"""Device slots on CPU: one worker owning 4 simulated device slots runs a plan of 1- and 2-device cells
(real runner; the 2-device cells as 2 real processes) side by side, never giving a slot to two cells at
once; each cell's devices are in its record and in the worker's ledger (sweep.dir/logs/devices.jsonl)."""

from __future__ import annotations

import json
import re

import pytest

from tests.sweep.conftest import base_overrides, load_records, tunewise


def _replay(ledger: list[dict]) -> tuple[dict[str, list[str]], int]:
    """Replay the takes and gives in time order: {cell_id: slots it took}, and the most cells that held
    slots at one time. Fails if a slot is taken while another cell holds it."""
    held: dict[str, str] = {}  # slot -> cell
    took: dict[str, list[str]] = {}
    most = 0
    for e in sorted(ledger, key=lambda e: e["t"]):
        if e["event"] == "take":
            for s in e["devices"]:
                assert s not in held, f"slot {s} given to {e['cell_id']} while {held[s]} holds it"
                held[s] = e["cell_id"]
            took[e["cell_id"]] = e["devices"]
        else:
            for s in e["devices"]:
                assert held.pop(s) == e["cell_id"]
        most = max(most, len(set(held.values())))
    assert not held, held  # every slot given back
    return took, most


@pytest.mark.slow
def test_a_worker_with_4_slots_runs_1_and_2_device_cells_without_sharing_a_slot(tiny_assets, tmp_path):
    d = tmp_path / "slots"
    args = base_overrides(
        tiny_assets, d, "matrix=t_slots", "sweep.devices=4", "data.rows=48", "sweep.pruner=none"
    )
    out = tunewise(tiny_assets, args)
    assert out.returncode == 0, out.stderr[-3000:]
    print(out.stdout)
    rows = [line for line in out.stdout.splitlines() if re.match(r"[0-9a-f]{10}  run ", line)]
    assert len(rows) == 6 and sum(" 2 ddp " in r for r in rows) == 3, out.stdout  # the gpus column
    recs = load_records(d)
    assert len(recs) == 6 and all(r["status"] == "complete" for r in recs.values()), [
        r["reason"] for r in recs.values()
    ]
    ledger = [json.loads(line) for line in (d / "logs" / "devices.jsonl").read_text().splitlines()]
    took, most = _replay([e for e in ledger if e["cell_id"] != "baseline"])
    for cid, r in recs.items():
        n = r["config"]["gpu"]["count"]
        m = r["measured"]
        assert len(took[cid]) == n and m["devices"] == took[cid], (cid, took[cid], m["devices"])
        assert set(took[cid]) <= {"0", "1", "2", "3"}
        assert m["world_size"] == n and len(m["ranks"]) == n
    schedule = sorted((e["t"], e["event"], e["cell_id"], e["devices"]) for e in ledger)
    t0 = schedule[0][0]
    for t, ev, cid, slots in schedule:
        print(f"{t - t0:7.1f} s  {ev:4}  {cid}  {','.join(slots)}")
    assert most >= 2  # cells ran side by side on the 4 slots

"""Re-derive the allocation tables of bench/torchtune01_init.py from torchao 0.1's own code.

    .venv/bin/python bench/record_torchao01_nf4.py     # downloads the torchao==0.1 wheel from PyPI

Runs `to_nf4` and `get_original_weight` on meta tensors at two weight shapes under the trace's
LiveBytes tracker (runners.trace.step), whose event log records every new storage and its free,
expresses each size as `a·n + b` bytes for an n-element weight, and checks the result against
TO_NF4 / GET_ORIGINAL_WEIGHT.
"""

from __future__ import annotations

import gc
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from fractions import Fraction
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torchtune01_init as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runners.trace.step import LiveBytes


def _load_nf4(tmp: Path):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "torchao==0.1", "-d", str(tmp)],
        check=True,
    )
    wheel = next(tmp.glob("torchao-0.1-*.whl"))
    zipfile.ZipFile(wheel).extractall(tmp / "x")
    spec = importlib.util.spec_from_file_location(
        "nf4tensor", tmp / "x" / "torchao" / "dtypes" / "nf4tensor.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def record(nf4, shape: tuple[int, int], what: str, keep: list) -> list[tuple]:
    w = torch.empty(*shape, dtype=torch.bfloat16, device="meta")
    if what == "get_original_weight":
        q = nf4.to_nf4(w)
        keep.append(q)
    r = LiveBytes(skip=(nf4.NF4Tensor,))  # the trace's tracker: its `events` log, in order
    with r:
        if what == "to_nf4":
            view = w.view(shape)  # registers the input as id 0
            keep.append(nf4.to_nf4(view))
            del view
        else:
            out = q.get_original_weight()
            del out
    del w
    gc.collect()
    return r.events


def symbolic(nf4, what: str) -> list[tuple]:
    keep: list = []
    (s1, s2) = (11008, 4096), (4096, 4096)
    e1, e2 = record(nf4, s1, what, keep), record(nf4, s2, what, keep)
    n1, n2 = s1[0] * s1[1], s2[0] * s2[1]
    assert len(e1) == len(e2)
    rows = []
    for a, b in zip(e1, e2, strict=True):
        if a[0] == "alloc":
            k = Fraction(a[2] - b[2], n1 - n2)
            rows.append(("alloc", a[1], k, int(a[2] - k * n1)))
        else:
            rows.append(("free", a[1]))
    return rows


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        nf4 = _load_nf4(Path(tmp))
        ok = True
        for what, table, pre_existing, returned in (
            ("to_nf4", tt.TO_NF4, (), ()),
            ("get_original_weight", tt.GET_ORIGINAL_WEIGHT, (6, 7), (14,)),
        ):
            rec = symbolic(nf4, what)
            # the weight's own scalers seen through views are not allocations; the returned tensor's
            # free (when the recording drops it) belongs to its caller
            rec = [e for e in rec if e[1] not in pre_existing and not (e[0] == "free" and e[1] in returned)]
            mine = [e if e[0] == "free" else ("alloc", e[1], e[2], e[3]) for e in table]
            print(f"{what}: {len(rec)} events recorded, table {'matches' if rec == mine else 'DIFFERS'}")
            ok &= rec == mine
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Offline by default (issue 16): a runner — QLoRA, which loads bitsandbytes and through it the
`kernels` package — makes no network lookup. The runner runs with a sitecustomize that records and
refuses every DNS lookup and every IPv4/IPv6 connect, so a lookup fails the test instead of waiting
on the network; `offline=false` (TUNEWISE_OFFLINE=0) shows what the switch stops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runners.conftest import build_model_dir, make_cfg, rows, write_jsonl
from tests.sweep.conftest import ROOT

SITECUSTOMIZE = """
import os, socket

def _record(what):
    with open(os.environ["TUNEWISE_TEST_NETLOG"], "a") as f:
        f.write(f"{os.getpid()} {what}\\n")

def _getaddrinfo(host, *args, **kwargs):
    _record(f"getaddrinfo {host}")
    raise socket.gaierror(socket.EAI_NONAME, "network disabled by the test")

_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex

def _guard(sock, addr):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        _record(f"connect {addr}")
        raise OSError("network disabled by the test")

def connect(self, addr):
    _guard(self, addr)
    return _connect(self, addr)

def connect_ex(self, addr):
    _guard(self, addr)
    return _connect_ex(self, addr)

socket.getaddrinfo = _getaddrinfo
socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
"""


def _has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.fixture(scope="module")
def qlora_cfg(tmp_path_factory):
    """A QLoRA cell of a 64-wide Llama (bitsandbytes' CPU 4-bit kernels want rows of ≥ 64 values)."""
    base = tmp_path_factory.mktemp("offline")
    model, vocab = build_model_dir(base / "model", chat=False)
    data = write_jsonl(base / "data.jsonl", rows(40))
    return make_cfg(model, vocab, data, method="qlora", train={"max_steps": 2, "metric": "none"})


def _run_qlora_runner(cfg, tmp: Path, extra_env: dict[str, str]) -> tuple[dict, list[str]]:
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    netlog = tmp / "net.log"
    config = tmp / "config.json"
    config.write_text(json.dumps(cfg.to_dict()))
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "DISABLE_KERNEL_MAPPING"):
        env.pop(k, None)  # as a user's shell has them: unset
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), TUNEWISE_TEST_NETLOG=str(netlog), **extra_env
    )
    out = tmp / "cell"
    proc = subprocess.run(
        [sys.executable, "-m", "runners.protocol", str(config), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    lookups = netlog.read_text().splitlines() if netlog.exists() else []
    return result, lookups


def test_a_qlora_runner_makes_no_network_lookup(qlora_cfg, tmp_path):
    result, lookups = _run_qlora_runner(qlora_cfg, tmp_path, {})
    assert result["status"] == "complete", result["reason"]
    assert lookups == []


@pytest.mark.skipif(
    not _has_avx512_bf16(), reason="bitsandbytes asks `kernels` only on CPUs with AVX512-BF16"
)
def test_without_the_offline_switch_the_runner_asks_the_hub(qlora_cfg, tmp_path):
    """What the default prevents (and what every runner did before issue 16): bitsandbytes' CPU
    backend asks the Hub for kernels-community's 4-bit kernel and its publisher's trust status."""
    result, lookups = _run_qlora_runner(qlora_cfg, tmp_path, {"TUNEWISE_OFFLINE": "0"})
    assert result["status"] == "complete", result["reason"]
    assert any("huggingface.co" in line for line in lookups), lookups

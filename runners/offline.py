"""No downloads unless the user asks: the libraries' own offline switches, set before they load.

Every tunewise command and every runner process runs offline by default (config key `offline`,
conf/config.yaml): the Hugging Face Hub (models, tokenizers, datasets) is read from local files and
the local cache only, and bitsandbytes' `kernels` dependency — which on CPUs with AVX512-BF16 asks
the Hub for `kernels-community/quantization-bitsandbytes` (and its publisher's trust status) when
bitsandbytes loads — resolves kernels from the local cache only, so it asks nobody and loads no code
from the Hub. `kernels` reads huggingface_hub's HF_HUB_OFFLINE (`constants.HF_HUB_OFFLINE`, fixed when
huggingface_hub is imported), so the switches must be in the environment before the first import
of huggingface_hub, transformers, peft or bitsandbytes: the CLI sets them before composing its
config, the runner (`python -m runners.protocol`) first thing in main.

`offline=false` sets TUNEWISE_OFFLINE=0, which the runners it starts inherit, and leaves the
environment as the user had it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SWITCH = "TUNEWISE_OFFLINE"  # "0": downloads allowed (offline=false); anything else or unset: offline
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub, and through it transformers, peft, datasets and kernels
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DISABLE_KERNEL_MAPPING": "1",  # kernels: no Hub kernels swapped into transformers' layers
}
_saved: dict[str, str | None] = {}  # what configure(True) replaced, for configure(False)


def apply(environ: MutableMapping[str, str] | None = None) -> bool:
    """Switch downloads off in `environ` (the process's environment) unless TUNEWISE_OFFLINE=0.
    True when offline."""
    env = os.environ if environ is None else environ
    if env.get(SWITCH) == "0":
        return False
    env.update(OFFLINE_ENV)
    return True


def configure(offline: bool) -> None:
    """This process (and every process it starts) offline or not, as the config key `offline` says."""
    if offline:
        for k in OFFLINE_ENV:
            _saved.setdefault(k, os.environ.get(k))
        os.environ.pop(SWITCH, None)
        apply()
        return
    for k, v in _saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _saved.clear()
    os.environ[SWITCH] = "0"

"""The ceilings of the device a configuration runs on: a GPU's from the catalog (steptime.device), this
machine's CPU from its probe (steptime.cpu)."""

from __future__ import annotations

from advisor.config.schema import RunConfig
from advisor.estimator.steptime.cpu import cpu_ceilings
from advisor.estimator.steptime.device import Device, gpu_device


def device(cfg: RunConfig) -> Device:
    if cfg.gpu.is_cpu:
        return cpu_ceilings(cfg.method.name)
    return gpu_device(cfg)

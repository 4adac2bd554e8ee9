"""The lab: configure, train, probe, and (``plots``, ``report``, ``compare``) compare residual designs.

- ``TrainConfig``, ``load_config``, ``config_for``, ``ConfigError`` (``resnorm.lab.config``);
- ``train(config, out_dir, *, resume, overwrite, progress) -> RunResult`` (``resnorm.lab.trainer``);
- ``BlockProbe``, ``SpikeDetector`` (``resnorm.lab.probes``).

Names are imported on first use, so ``import resnorm.lab`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainConfig": "config",
    "ConfigError": "config",
    "load_config": "config",
    "config_for": "config",
    "save_config": "config",
    "train": "trainer",
    "RunResult": "trainer",
    "load_result": "trainer",
    "read_metrics": "trainer",
    "config_from_run": "trainer",
    "BlockProbe": "probes",
    "SpikeDetector": "probes",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"resnorm.lab.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'resnorm.lab' has no attribute {name!r}")

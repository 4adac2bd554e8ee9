"""The lab: configure, train, probe, and (``plots``, ``report``, ``compare``) compare residual designs.

Modules, each importing only those above it in this list (the lab's own layering; no import circles):

- ``errors``: ``LabError``, ``ConfigError``, ``RunFolderError``, ``StopRequested``;
- ``files``: atomic writes with the umask's permissions;
- ``designs``: residual/norm designs by name (``Design``, ``DESIGNS``, ``parse_designs``);
- ``registry``: model families by name (``ModelFamily``: builder, task, what depth means, default
  recipe, study recipe; ``register``, ``get``);
- ``config``: ``TrainConfig``, ``load_config``, ``config_for``, ``resume_config``;
- ``schedule``, ``distributed``, ``probes``, ``memory``: learning-rate schedules, torchrun, per-block
  probes, the peak memory of a training step;
- ``runfolder``: the run folder's files (``config.yaml``, ``metrics.jsonl``, ``result.json``,
  ``checkpoint.pt``): ``read_metrics``, ``load_checkpoint``, ``RunResult``, ``load_run``;
- ``checkpoint``: RNG state capture and seeding;
- ``summary``: verdicts, gradient ratios, the summary table;
- ``tasks``: data, batches, loss and baseline of image and text tasks;
- ``trainer``: ``Trainer`` (setup / step / evaluate / save / finish / fit) and ``train``;
- ``plots``, ``report``: figures and the HTML report from run folders;
- ``compare``, ``seeds``: the studies; ``bench``: the kernel benchmark;
- ``studies``: named reproductions of the papers (``resnorm study NAME``), built on ``compare``;
- ``hf`` (a registry plugin: the Hugging Face family, no ``transformers`` import) and ``hf_model`` (its
  builder, which imports ``resnorm.integrations.transformers``).

Names below are imported on first use, so ``import resnorm.lab`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainConfig": "config",
    "ConfigError": "errors",
    "RunFolderError": "errors",
    "LabError": "errors",
    "StopRequested": "errors",
    "load_config": "config",
    "config_for": "config",
    "save_config": "config",
    "resume_config": "config",
    "ModelFamily": "registry",
    "register": "registry",
    "Trainer": "trainer",
    "train": "trainer",
    "RunResult": "runfolder",
    "load_result": "trainer",
    "read_metrics": "runfolder",
    "load_checkpoint": "runfolder",
    "config_from_run": "trainer",
    "BlockProbe": "probes",
    "SpikeDetector": "probes",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"resnorm.lab.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'resnorm.lab' has no attribute {name!r}")

"""resnorm: residual connections and normalization.

- ``resnorm.add_norm`` / ``layer_norm`` / ``rms_norm``: the functional contract (fused Triton kernels
  on CUDA, PyTorch everywhere else);
- ``resnorm.nn``: drop-in norm modules and every residual design behind one ``placement`` switch;
- ``resnorm.models``: the seed ResNet and MLP, He et al.'s CIFAR ResNets, a residual MLP, a GPT;
- ``resnorm.data`` and ``resnorm.lab``: datasets, trainer, probes and reports (the ``resnorm`` CLI).
"""

from __future__ import annotations

import importlib

from resnorm.functional import add_norm, get_backend, layer_norm, rms_norm, use_backend

__version__ = "0.1.0"
__all__ = ["add_norm", "layer_norm", "rms_norm", "get_backend", "use_backend", "__version__"]

_SUBMODULES = ("nn", "models", "data", "lab", "kernels")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"resnorm.{name}")
    raise AttributeError(f"module 'resnorm' has no attribute {name!r}")

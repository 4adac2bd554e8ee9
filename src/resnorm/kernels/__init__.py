"""Fused residual add + LayerNorm / RMSNorm in Triton (forward and backward).

``add_norm`` has the signature and behaviour of ``resnorm.functional.add_norm_reference``;
``resnorm.functional.add_norm`` calls it for CUDA tensors (or for any tensor with
``RESNORM_BACKEND=triton``: CPU tensors then run in Triton's interpreter). The kernels are registered
as the torch.library ops ``resnorm::add_norm_fwd`` / ``resnorm::add_norm_bwd`` (torch.compile-safe).
See docs/kernels.md.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from resnorm.kernels.ops import add_norm

__all__ = ["add_norm", "is_available"]


@functools.cache
def _triton_importable() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # a broken install counts as absent
        return False
    return True


def is_available() -> bool:
    """True when Triton imports and a CUDA device is present (the kernels' fast path)."""
    return _triton_importable() and torch.cuda.is_available()

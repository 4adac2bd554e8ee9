"""What ``resnorm.integrations.transformers`` shares with the lab without importing ``transformers``.

- ``SUPPORTED_MODEL_TYPES``: the ``config.model_type`` values ``apply_resnorm`` patches (the lab's
  ``resnorm train hf MODEL_TYPE`` checks its argument against them before anything is imported);
- ``ResidualStream``: what a decoder layer patched with ``fuse_residual=True`` returns, the stream
  ``residual + branch`` with the add left to the norm that reads it next;
- ``materialize(x)``: a patched layer's output as the unpatched layer returns it (what probes and
  forward hooks on decoder layers should look at).

This module imports torch only; ``import resnorm.integrations.hf_common`` works without the
``transformers`` extra.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["SUPPORTED_MODEL_TYPES", "ResidualStream", "materialize"]

# the families of resnorm.integrations.transformers (which checks at import that it patches exactly these)
SUPPORTED_MODEL_TYPES: tuple[str, ...] = (
    "gemma", "gemma2", "gemma3", "gemma3_text", "gpt2", "llama", "mistral", "olmo2", "phi3", "qwen2", "qwen3",
)


class ResidualStream:
    """The residual stream ``residual + branch`` with the add not yet done.

    A patched decoder layer returns one so that the norm that reads the stream next (the next layer's
    first norm, or the final norm) adds and normalizes in one ``add_norm`` call. ``to_tensor()``
    (or ``materialize(x)``) does the add: the same tensor the unpatched layer returns.
    """

    def __init__(self, branch: torch.Tensor, residual: torch.Tensor) -> None:
        self.branch = branch
        self.residual = residual

    def to_tensor(self) -> torch.Tensor:
        """``residual + branch``: the hidden state the unpatched layer returns."""
        return self.residual + self.branch

    @property
    def shape(self) -> torch.Size:
        return self.residual.shape

    @property
    def device(self) -> torch.device:
        return self.residual.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.promote_types(self.residual.dtype, self.branch.dtype)

    def __repr__(self) -> str:
        return f"ResidualStream(shape={tuple(self.shape)}, dtype={self.dtype})"


def materialize(x: Any) -> Any:
    """A patched decoder layer's output as the unpatched layer returns it.

    ``ResidualStream`` -> its tensor; a tuple -> the same tuple with each stream in it materialized;
    anything else unchanged. Use it in forward hooks on decoder layers (probes of the hidden states).
    """
    if isinstance(x, ResidualStream):
        return x.to_tensor()
    if type(x) is tuple and any(isinstance(v, ResidualStream) for v in x):
        return tuple(materialize(v) for v in x)
    return x

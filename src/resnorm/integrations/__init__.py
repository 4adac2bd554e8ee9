"""Integrations of resnorm into other libraries' models.

- ``resnorm.integrations.transformers``: ``apply_resnorm(model)`` swaps every normalization module of a
  Hugging Face ``transformers`` model for a resnorm one (same ``state_dict``, the model's own numerics)
  and fuses each residual add into the norm that follows it. Needs ``pip install "resnorm[transformers]"``.
- ``resnorm.integrations.hf_common``: what it shares with the lab without importing ``transformers``
  (``SUPPORTED_MODEL_TYPES``, ``ResidualStream``, ``materialize``).

Importing this package imports no third-party library: each integration is imported on its own.
"""

from __future__ import annotations

__all__: list[str] = []

"""A ``transformers`` causal LM as the lab trains it (the builder of the ``hf`` family,
``resnorm.lab.hf``).

``HFCausalLM(model)`` wraps an instantiated causal LM of a supported family without copying or
renaming anything inside it:

- ``forward(idx) -> logits``: the token ids of a batch in, the ``(batch, time, vocab)`` logits out (the
  model's output object stays inside; no KV cache while training);
- ``blocks``: the model's decoder layers (``decoder_layers``), what the probes read per layer: their
  parameters' gradient norm and update ratio, and the RMS of the stream each returns (a layer patched
  with ``fuse_residual`` returns a ``ResidualStream``; the probes ``materialize`` it);
- each layer's attention module gets ``record_entropy`` / ``last_entropy``, the probes' interface (as
  the lab's own GPT has): while ``record_entropy`` is set, a forward hook stores the mean over batch,
  heads and queries of ``-sum_k p_k ln p_k`` (nats) of the probabilities the module returns (eager
  attention returns them; with SDPA it returns None and the entropy is NaN).

``build_hf(config, data)`` builds it for a ``TrainConfig`` of model ``hf``; ``model.model`` is the
``transformers`` model itself (``model.model.save_pretrained(...)`` writes the family's own format).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import torch
from torch import nn

from resnorm.lab.config import TrainConfig
from resnorm.lab.errors import ConfigError

__all__ = ["HFCausalLM", "build_hf", "integration"]


def integration() -> ModuleType:
    """``resnorm.integrations.transformers``; a ``ConfigError`` naming the extra when ``transformers``
    is missing or a release the integration does not follow."""
    from resnorm.lab.hf import EXTRA, check_available

    check_available()
    try:
        return importlib.import_module("resnorm.integrations.transformers")
    except ImportError as err:
        message = " ".join(str(err).split())
        if EXTRA not in message:
            message = f"{message} ({EXTRA})"
        raise ConfigError(f"model hf cannot use transformers: {message}") from None


def _record_entropy(module: nn.Module, args: Any, output: Any) -> None:
    if not module.record_entropy:
        return
    probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
    if not isinstance(probs, torch.Tensor):
        module.last_entropy = None
        return
    entropy = torch.special.entr(probs.detach().float()).sum(dim=-1)  # -p ln p, 0 where p = 0
    module.last_entropy = float(entropy.mean()) if entropy.numel() else 0.0


class HFCausalLM(nn.Module):
    """``forward(idx) -> logits`` and ``blocks`` (the decoder layers) over a ``transformers`` causal LM
    (module docstring). Its ``state_dict`` is the model's, each key prefixed with ``model.``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        rt = integration()
        self.model = model
        # the decoder layers, not registered a second time (the state_dict keeps one name per tensor)
        object.__setattr__(self, "_blocks", rt.decoder_layers(model))
        for attention in rt.attention_modules(model):
            attention.record_entropy = False
            attention.last_entropy = None
            attention.register_forward_hook(_record_entropy)

    @property
    def blocks(self) -> nn.ModuleList:
        return self._blocks

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=idx, use_cache=False).logits


def build_hf(config: TrainConfig, data: Any) -> HFCausalLM:
    """The ``hf`` family's model for ``config`` and the text ``data`` (its ``vocab_size``)."""
    rt = integration()
    try:
        model = rt.causal_lm_from_config(
            config.model_type, vocab_size=data.vocab_size, n_layer=config.n_layer, n_head=config.n_head,
            n_kv_head=config.n_kv_head, d_model=config.d_model, block_size=config.block_size,
            dropout=config.dropout, attn_implementation="eager")
    except ValueError as err:  # sizes the family cannot take (e.g. phi3's head_dim)
        raise ConfigError(f"model hf, model_type={config.model_type!r}: {err}") from None
    if config.resnorm:
        rt.apply_resnorm(model, fuse_residual=config.fused)
    return HFCausalLM(model)

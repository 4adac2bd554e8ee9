"""Probes: what happens inside the residual stack while it trains.

On a probe step (every ``probe_every`` optimizer steps, plus the first step) ``BlockProbe`` records, for
each residual block ``model.blocks[i]`` in depth order:

- ``grad_norm[i] = sqrt(sum_p ||dL/dp||^2)`` over the block's parameters, taken right after the
  backward pass and before gradient clipping (``after_backward``; the trainer clips afterwards), like
  the global gradient norm it logs;
- ``act_rms[i] = sqrt(mean(h_i^2))``, ``h_i`` the residual stream the block returns (a forward hook,
  attached for the probe step only);
- ``update_ratio[i] = ||theta_after - theta_before|| / ||theta_before||`` over the block's parameters,
  for that optimizer step (the "update/weight ratio" of Karpathy's CS231n notes, OLMo, torchtitan);

plus the global gradient norm over all parameters and, for a GPT (and the ``hf`` family's models),
the attention entropy per layer (``-sum_k p_k log p_k`` in nats, averaged over batch, heads and
queries; the model computes it when its attention modules have ``record_entropy = True``, which the
probe sets for the probe step only), and
for multi-stream models (placements hyper, mhc) ``mix_gain_fwd[i]`` / ``mix_gain_bwd[i]``: the largest
absolute row / column sum of the composite stream mixing from the input to block i (the model's
``residual_mixing_gains()``; DeepSeek's mHC paper reads these to show HC's gains explode).

Xiong et al. 2020 ("On Layer Normalization in the Transformer Architecture") read exactly these
per-layer gradient norms: they grow toward the output for Post-LN and stay flat for Pre-LN.
``grad_ratio = grad_norm[first] / grad_norm[last]`` summarizes that shape in one number per probe;
over a run it spans orders of magnitude, so ``resnorm.lab.summary`` reports its geometric mean and
its first and last value.

A loss spike (``SpikeDetector``) is a step whose loss exceeds ``mean + sigma * std`` of the previous
``window`` finite losses (defaults: sigma = 3, window = 50; at least 10 previous losses needed) —
a 3-sigma rule over a sliding window, as in OLMo's and Composer's spike monitors.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch
from torch import nn

from resnorm.integrations.hf_common import materialize


def block_parameters(block: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of ``block``, each once."""
    return [p for p in block.parameters() if p.requires_grad]


def total_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``sqrt(sum ||t||^2)`` over ``tensors`` in float32 (foreach kernels); 0 for an empty list."""
    if not tensors:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(tensors, norm_type=2.0).float()


def grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """``sqrt(sum ||p.grad||^2)`` over the parameters that have a gradient (0 when none do)."""
    return total_norm([p.grad.detach() for p in params if p.grad is not None])


def _first_tensor(output: Any) -> torch.Tensor | None:
    """The stream a block returns: a tensor, the stream interface's ``(hidden, residual)`` pair (the
    stream is ``hidden + residual``; ``hidden`` when ``residual`` is None), or a Hugging Face decoder
    layer's ``ResidualStream`` when ``apply_resnorm`` fused its adds (``materialize``: the tensor the
    unpatched layer returns)."""
    output = materialize(output)
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        if len(output) == 2 and isinstance(output[1], torch.Tensor) and output[1].shape == output[0].shape:
            return output[0] + output[1]
        return output[0]
    return None


class BlockProbe:
    """Per-block probe of ``model.blocks`` (see the module docstring). Use on a probe step as::

        probe.start()              # before the forward: hooks on, attention entropy on
        ... forward, backward ...
        probe.after_backward()     # per-block gradient norms
        probe.before_update()      # snapshot of block parameters
        optimizer.step()
        record = probe.finish(step, global_grad_norm)   # update ratios; hooks off
    """

    def __init__(self, model: nn.Module) -> None:
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise ValueError(f"probes need model.blocks (a non-empty nn.ModuleList of residual blocks); "
                             f"{type(model).__name__} has {type(blocks).__name__}")
        self.blocks = blocks
        self.block_names = [f"blocks.{i}" for i in range(len(blocks))]
        self.params = [block_parameters(b) for b in blocks]
        self.attention = [m for m in model.modules() if hasattr(m, "record_entropy")]
        self.mixing_gains = getattr(model, "residual_mixing_gains", None)  # hyper/mhc models
        self._handles: list[Any] = []
        self._act_rms: list[torch.Tensor | None] = [None] * len(blocks)
        self._grad_norms: list[torch.Tensor] = []
        self._before: list[list[torch.Tensor]] = []
        self.active = False

    def start(self) -> None:
        self.active = True
        self._act_rms = [None] * len(self.blocks)
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_hook(self._make_hook(i)))
        for module in self.attention:
            module.record_entropy = True

    def _make_hook(self, index: int):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            out = _first_tensor(output)
            if out is not None:
                self._act_rms[index] = out.detach().float().pow(2).mean().sqrt()
        return hook

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module in self.attention:
            module.record_entropy = False

    def after_backward(self) -> None:
        self._grad_norms = [grad_norm(params) for params in self.params]

    @torch.no_grad()
    def before_update(self) -> None:
        self._before = [[p.detach().clone() for p in params] for params in self.params]

    @torch.no_grad()
    def finish(self, step: int, global_grad_norm: float) -> dict[str, Any]:
        """The probe record for ``step`` (a ``metrics.jsonl`` line); ends the probe step."""
        self._remove_hooks()
        self.active = False
        ratios = []
        for params, before in zip(self.params, self._before, strict=True):
            if not params:
                ratios.append(torch.zeros(()))
                continue
            delta = torch._foreach_sub([p.detach() for p in params], before)
            ratios.append(total_norm(delta) / total_norm(before).clamp_min(1e-12))
        self._before = []
        nan = torch.tensor(float("nan"))
        act = [a.cpu() if a is not None else nan for a in self._act_rms]
        values = torch.stack([torch.stack([g.cpu() for g in self._grad_norms]), torch.stack(act),
                              torch.stack([r.cpu() for r in ratios])]).tolist()
        record: dict[str, Any] = {
            "kind": "probe",
            "step": step,
            "block_names": list(self.block_names),
            "grad_norm": values[0],
            "act_rms": values[1],
            "update_ratio": values[2],
            "global_grad_norm": float(global_grad_norm),
        }
        gains = self.mixing_gains() if self.mixing_gains is not None else None
        if gains:  # composite stream-mixing gains per block (hyper, mhc)
            record["mix_gain_fwd"], record["mix_gain_bwd"] = gains["forward"], gains["backward"]
        if self.attention:
            record["attn_entropy"] = [float(m.last_entropy) if m.last_entropy is not None else float("nan")
                                      for m in self.attention]
        return record

    def cancel(self) -> None:
        """End a probe step without a record (e.g. the step diverged)."""
        self._remove_hooks()
        self._before = []
        self.active = False


def grad_ratio(record: dict[str, Any]) -> float | None:
    """First-block / last-block gradient norm of one probe record (None when undefined)."""
    norms = record.get("grad_norm") or []
    if len(norms) < 1 or not norms[-1] or not all(math.isfinite(v) for v in (norms[0], norms[-1])):
        return None
    return norms[0] / norms[-1]


class SpikeDetector:
    """Loss spike: ``loss > mean + sigma * std`` of the previous ``window`` finite losses (population std),
    judged once at least ``min_history`` losses are known. ``update`` judges, then remembers the loss."""

    def __init__(self, window: int = 50, sigma: float = 3.0, min_history: int = 10) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.window, self.sigma, self.min_history = window, sigma, min(min_history, window)
        self.history: deque[float] = deque(maxlen=window)

    def is_spike(self, loss: float) -> bool:
        if len(self.history) < self.min_history or not math.isfinite(loss):
            return False
        n = len(self.history)
        mean = sum(self.history) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in self.history) / n)
        return loss > mean + self.sigma * std

    def update(self, loss: float) -> bool:
        spike = self.is_spike(loss)
        if math.isfinite(loss):
            self.history.append(loss)
        return spike

    def mean(self) -> float | None:
        return sum(self.history) / len(self.history) if self.history else None

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = deque(state["history"], maxlen=self.window)

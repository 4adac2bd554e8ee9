"""Every residual design behind one switch: ``Residual(branch, dim, placement=..., norm=...)``.

``F`` is the branch (any module mapping the stream to the same shape), ``Norm`` the norm named by
``norm`` (see ``resnorm.nn.norms.NORMS``), ``x`` the residual stream. One block:

placement     one block                                                   source
none          x <- Norm(F(x))  (no skip; plain net; Norm may be "none")   ablation
post          x <- Norm(x + F(x))                                         Vaswani et al. 2017; He et al. 2016
pre           x <- x + F(Norm(x)); final Norm at the end of the model     Xiong et al. 2020; He et al. 2016b
sandwich      x <- x + Norm2(F(Norm1(x)))                                 CogView 2021; Peri-LN 2025
deepnorm      x <- Norm(alpha * x + F(x)); branch init scaled by beta     Wang et al. 2022 (DeepNet)
rezero        x <- x + a * F(x), scalar a = 0 at init, no norm            Bachlechner et al. 2020
layerscale    x <- x + diag(lambda) * F(Norm(x)), lambda = 0.1 at init    Touvron et al. 2021 (CaiT)
seed          y = Norm(x); x <- y + F(y)  (normalized skip)               seed 001

DeepNet constants. DeepNet's decoder-only rule for N layers (each layer = 2 residual sublayers:
attention and FFN) is alpha = (2N)^(1/4), beta = (8N)^(-1/4). ``depth`` here is the number of
residual blocks M in the model (M = 2N for a transformer), so alpha = M^(1/4), beta = (4M)^(-1/4):
the same numbers, defined for any stack of residual blocks.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from resnorm.nn.norms import FUSABLE_NORMS, NORMS, make_norm

__all__ = [
    "Residual",
    "PLACEMENTS",
    "PRE_FAMILY",
    "needs_final_norm",
    "make_final_norm",
    "deepnorm_constants",
    "scale_branch_init_",
]

PLACEMENTS = ("none", "post", "pre", "sandwich", "deepnorm", "rezero", "layerscale", "seed")
# placements whose stream leaves the last block un-normalized: the model ends with a final Norm
PRE_FAMILY = ("pre", "sandwich", "layerscale")


def _check_placement(placement: object) -> str:
    if not isinstance(placement, str) or placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}; got {placement!r}")
    return placement


def _check_norm(norm: object) -> str:
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
    return norm


def needs_final_norm(placement: str) -> bool:
    """True for the pre-family placements (pre, sandwich, layerscale): their stream is a sum of
    un-normalized branch outputs, so the model applies one more Norm before its head. ``seed``
    re-normalizes its skip in every block and ``rezero`` has no norm by design: no final norm."""
    return _check_placement(placement) in PRE_FAMILY


def make_final_norm(placement: str, norm: str, dim: int, **norm_kwargs) -> nn.Module:
    """The final norm a model needs after its last block: ``make_norm(norm, dim)`` for the
    pre-family placements, else ``nn.Identity``."""
    if needs_final_norm(placement):
        return make_norm(_check_norm(norm), dim, **norm_kwargs)
    return nn.Identity()


def deepnorm_constants(depth: int) -> tuple[float, float]:
    """DeepNet (Wang et al. 2022) decoder-only constants for ``depth`` = M residual blocks
    (M = 2N sublayers of an N-layer transformer): ``alpha = M**0.25 = (2N)**0.25`` and
    ``beta = (4M)**-0.25 = (8N)**-0.25``."""
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth <= 0:
        raise ValueError(f"depth must be a positive int (the number of residual blocks); got {depth!r}")
    return float(depth) ** 0.25, float(4 * depth) ** -0.25


@torch.no_grad()
def scale_branch_init_(branch: nn.Module, beta: float) -> None:
    """DeepNet's branch init: multiply by ``beta`` the weights of every ``nn.Linear`` and conv in
    ``branch`` (biases untouched). A submodule may define ``deepnorm_scale_(beta)`` to choose for
    itself — the GPT attention scales only its value and output projections (query and key keep
    their init, as in DeepNet's Algorithm 1) — and its children are then skipped."""
    if hasattr(branch, "deepnorm_scale_"):
        branch.deepnorm_scale_(beta)
        return
    handled: list[str] = []
    for name, module in branch.named_modules():
        if any(name.startswith(prefix + ".") for prefix in handled):
            continue
        if hasattr(module, "deepnorm_scale_"):
            module.deepnorm_scale_(beta)
            handled.append(name)
        elif isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            module.weight.mul_(beta)


class Residual(nn.Module):
    """One residual block ``x -> x'`` with the branch ``F`` and the norm placed by ``placement``.

    Formulas (``Norm`` = ``make_norm(norm, dim)``):

    - ``none``:       ``x' = Norm(F(x))`` — no skip (the plain net; "plain + BatchNorm" is
      none + batchnorm, the bare plain net none + none).
    - ``post``:       ``x' = Norm(x + F(x))`` — Vaswani et al. 2017; He et al. 2016.
    - ``pre``:        ``x' = x + F(Norm(x))``, final Norm after the last block — Xiong et al. 2020;
      He et al. 2016b.
    - ``sandwich``:   ``x' = x + Norm2(F(Norm1(x)))`` — CogView (Ding et al. 2021); Peri-LN (Kim et
      al. 2025). Two separate norms (``norm`` and ``norm_out``).
    - ``deepnorm``:   ``x' = Norm(alpha * x + F(x))`` with ``alpha = depth**0.25`` and the branch
      weights multiplied by ``beta = (4 * depth)**-0.25`` at construction (see
      ``scale_branch_init_``); ``depth`` = number of residual blocks M, so for an N-layer decoder
      (M = 2N) these are DeepNet's alpha = (2N)^(1/4), beta = (8N)^(-1/4) — Wang et al. 2022.
    - ``rezero``:     ``x' = x + a * F(x)``, one scalar ``a`` initialised to 0; no norm (``norm``
      is ignored) — Bachlechner et al. 2020.
    - ``layerscale``: ``x' = x + lambda * F(Norm(x))``, a per-channel ``lambda`` initialised to
      ``layerscale_init`` (0.1, CaiT's value up to 18 layers; 1e-5 / 1e-6 for deeper) — Touvron
      et al. 2021.
    - ``seed``:       ``y = Norm(x); x' = y + F(y)`` — the normalized-skip block of the seed text.

    With ``norm`` in (layernorm, rmsnorm) over the last dim, post and deepnorm make one fused
    ``add_norm`` call for the add and the norm. ``channels_first=True`` places norms (and the
    layerscale vector) on dim 1 of ``(N, C, *)`` maps; ``norm_eps`` and ``norm_bias`` go to
    ``make_norm`` (``norm_bias=False``: LayerNorms without an additive bias).
    """

    def __init__(
        self,
        branch: nn.Module,
        dim: int,
        placement: str = "pre",
        norm: str = "layernorm",
        *,
        depth: int | None = None,
        layerscale_init: float = 0.1,
        channels_first: bool = False,
        norm_eps: float | None = None,
        norm_bias: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(branch, nn.Module):
            raise TypeError(f"branch must be an nn.Module; got {type(branch).__name__}")
        self.placement = _check_placement(placement)
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim <= 0:
            raise ValueError(f"dim must be a positive int (the stream's feature size); got {dim!r}")
        self.norm_name = _check_norm(norm) if placement != "rezero" else "none"
        self.dim = dim
        self.channels_first = channels_first
        self.branch = branch

        def new_norm() -> nn.Module:
            return make_norm(self.norm_name, dim, eps=norm_eps, channels_first=channels_first, bias=norm_bias)

        self.norm = new_norm() if placement != "rezero" else nn.Identity()
        if placement == "sandwich":
            self.norm_out = new_norm()
        self.alpha = 1.0
        if placement == "deepnorm":
            if depth is None:
                raise ValueError("depth (the number of residual blocks) is required for placement='deepnorm'")
            self.alpha, beta = deepnorm_constants(depth)
            scale_branch_init_(branch, beta)
        if placement == "rezero":
            self.gate = nn.Parameter(torch.zeros(1))
        if placement == "layerscale":
            if not isinstance(layerscale_init, numbers.Real) or isinstance(layerscale_init, bool):
                raise TypeError(f"layerscale_init must be a float; got {type(layerscale_init).__name__}")
            self.scale = nn.Parameter(torch.full((dim,), float(layerscale_init)))
        # add + norm in one add_norm call (post, deepnorm) when the norm is LayerNorm/RMSNorm on the last dim
        fusable_norm = self.norm_name in FUSABLE_NORMS and not channels_first
        self.fused = placement in ("post", "deepnorm") and fusable_norm

    def _channel_scale(self, t: torch.Tensor) -> torch.Tensor:
        if self.channels_first:
            return self.scale.view(-1, *([1] * (t.dim() - 2)))
        return self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.placement
        if p == "none":
            return self.norm(self.branch(x))
        if p in ("post", "deepnorm"):
            skip = x if p == "post" else x * self.alpha
            if self.fused:
                return self.norm.forward_add(self.branch(x), skip)
            return self.norm(skip + self.branch(x))
        if p == "pre":
            return x + self.branch(self.norm(x))
        if p == "sandwich":
            return x + self.norm_out(self.branch(self.norm(x)))
        if p == "rezero":
            return x + self.gate * self.branch(x)
        if p == "layerscale":
            return x + self._channel_scale(x) * self.branch(self.norm(x))
        y = self.norm(x)  # seed
        return y + self.branch(y)

    def extra_repr(self) -> str:
        extra = f", alpha={self.alpha:.4g}" if self.placement == "deepnorm" else ""
        return f"placement={self.placement!r}, norm={self.norm_name!r}, fused={self.fused}{extra}"

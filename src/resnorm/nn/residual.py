"""Every residual design behind one switch, ``placement``, on one block.

``F`` is the branch (any module mapping the stream to the same shape), ``Norm`` the norm named by
``norm`` (``resnorm.nn.NORMS``), ``x`` the residual stream. One block, ``x -> x'``:

placement   one block                                                source
none        x' = Norm(F(x))  (no skip: the plain net)                ablation
post        x' = Norm(x + F(x))                                      Vaswani et al. 2017; He et al. 2016
pre         x' = x + F(Norm(x)); final Norm after the last block     Xiong et al. 2020; He et al. 2016b
sandwich    x' = x + Norm2(F(Norm1(x)))                              CogView 2021; Peri-LN 2025
deepnorm    x' = Norm(alpha x + F(x)); branch init x beta            DeepNet (Wang et al. 2022)
rezero      x' = x + a F(x), a = 0 at init, no norm                  Bachlechner et al. 2020
layerscale  x' = x + diag(lambda) F(Norm(x)), lambda = 0.1           CaiT (Touvron et al. 2021)
seed        y = Norm(x); x' = y + F(y)                               seed 001
reordered   x' = x + Norm(F(x))                                      OLMo 2 2024; Swin v2 2022 (res-post-norm)
mixln       post in layers 1..floor(rho L), pre after (rho = 0.25)   Mix-LN (Li, Yin, Liu, ICLR 2025)
lnscale     x' = x + F(Norm(x) / sqrt(l)) in layer l                 LayerNorm Scaling (Sun et al. 2025)
hyper       n streams H; H' = A_r^T H + B^T F(Norm(A_m^T H))          Hyper-Connections (Zhu et al. 2025)
mhc         H' = H_res H + H_post^T F(Norm(H_pre H)), H_res doubly   mHC (Xie et al., DeepSeek, 2025)
            stochastic (Sinkhorn-Knopp)
ngpt        h' = Norm(h + alpha (Norm(F(h)) - h)), unit-norm h        nGPT (Loshchilov et al., ICLR 2025)

The stream interface. A ``StreamBlock`` maps ``(hidden, residual) -> (hidden, residual)`` as
flash-attention's ``Block``: the pair stands for the stream ``x = hidden + residual`` (``residual=None``:
``x = hidden``) whose add is still pending. A block whose first operation normalizes the stream
(pre, sandwich, layerscale, lnscale, seed, and the pre layers of mixln) makes that add inside its norm
— ONE ``add_norm(hidden, residual, prenorm=True)`` call — and returns ``(F-output, stream)``, leaving
its own add to the next norm. Blocks whose norm follows the add (post, deepnorm, ngpt, the post layers
of mixln) run the add inside that norm and return ``(x', None)``. A model starts with
``begin_stream(x)`` (``residual=None``), loops over its blocks and ends with ``end_stream``: the final
norm takes the last pending add in one more ``add_norm`` call. Where the norm is not computed by
``add_norm`` (batchnorm, dyt, ...) or no norm follows the add (rezero, reordered, none), the add is a
plain tensor add. ``fused=False`` runs the textbook form of each block instead (explicit adds, then
separate norm calls): the same numbers up to rounding.

``Residual(branch, dim, placement=...)`` is one ``StreamBlock`` as a module ``x -> x'``.

Positions. ``depth`` is the number of residual blocks in the model (DeepNet's M; a transformer layer
holds two). ``layer`` (1-based) is the layer that holds the block and ``num_layers`` the model's layer
count: Mix-LN chooses post or pre per layer, LayerNorm Scaling scales by 1/sqrt(layer), and the
hyper-connections' static init reads stream ``(layer - 1) mod n``. For a residual MLP every block is
a layer (``depth == num_layers``); a GPT layer's attention and feed-forward blocks share ``layer``.

DeepNet constants. DeepNet's decoder-only rule for N layers (2N residual sublayers) is
alpha = (2N)^(1/4), beta = (8N)^(-1/4); with ``depth`` = M residual blocks: alpha = M^(1/4),
beta = (4M)^(-1/4) — the same numbers for a transformer, defined for any stack of blocks.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from resnorm import _checks
from resnorm.nn.hyper import HyperConnection, ManifoldHyperConnection
from resnorm.nn.ngpt import LearnedScale, l2_normalize, normalize_matrix_
from resnorm.nn.norms import check_norm, make_norm

__all__ = [
    "StreamBlock",
    "Residual",
    "PLACEMENTS",
    "PRE_FAMILY",
    "MULTI_STREAM",
    "begin_stream",
    "end_stream",
    "needs_final_norm",
    "make_final_norm",
    "mixln_is_post",
    "deepnorm_constants",
    "scale_branch_init_",
    "ngpt_normalize_branch_",
]

PLACEMENTS = ("none", "post", "pre", "sandwich", "deepnorm", "rezero", "layerscale", "seed",
              "reordered", "mixln", "lnscale", "hyper", "mhc", "ngpt")
# placements whose stream leaves the last block un-normalized: the model ends with a final Norm
# (mixln too, unless all its layers are post: see needs_final_norm)
PRE_FAMILY = ("pre", "sandwich", "layerscale", "reordered", "lnscale", "hyper", "mhc")
MULTI_STREAM = ("hyper", "mhc")  # the stream is n streams (..., n, d)
_NORM_FREE = ("rezero", "ngpt")  # placements that ignore ``norm``: no norm, or their own (nGPT's L2)
_ONE_CALL = ("post", "deepnorm", "ngpt")  # x -> x' makes its own add inside one add_norm call


def _check_placement(placement: object) -> str:
    return _checks.check_choice("placement", placement, PLACEMENTS)


def mixln_is_post(layer: int, num_layers: int, rho: float = 0.25) -> bool:
    """Mix-LN (Li, Yin, Liu, ICLR 2025): layer ``layer`` (1-based) of ``num_layers`` is post-norm when
    ``layer <= floor(rho * num_layers)``, pre-norm otherwise."""
    layer = _checks.check_int("layer", layer)
    num_layers = _checks.check_int("num_layers", num_layers)
    rho = _checks.check_float("mixln_rho", rho, minimum=0.0, maximum=1.0)
    if layer > num_layers:
        raise ValueError(f"layer must be <= num_layers ({num_layers}); got {layer}")
    return layer <= math.floor(rho * num_layers)


def needs_final_norm(placement: str, *, num_layers: int | None = None, mixln_rho: float = 0.25) -> bool:
    """True when the stream leaving the last block is a sum of un-normalized branch outputs, so the
    model applies one more Norm before its head: the pre family (pre, sandwich, layerscale,
    reordered, lnscale, hyper, mhc) and mixln unless every layer is post (``rho = 1``; needs
    ``num_layers``). ``seed`` re-normalizes its skip in every block, ``rezero`` has no norm and
    ``ngpt`` keeps unit-norm states by design: no final norm."""
    placement = _check_placement(placement)
    if placement == "mixln":
        if num_layers is None:
            raise ValueError("num_layers is required for placement='mixln' (its last layer decides)")
        return not mixln_is_post(num_layers, num_layers, mixln_rho)
    return placement in PRE_FAMILY


def make_final_norm(placement: str, norm: str, dim: int, *, num_layers: int | None = None,
                    mixln_rho: float = 0.25, **norm_kwargs) -> nn.Module:
    """The final norm a model needs after its last block: ``make_norm(norm, dim)`` when
    ``needs_final_norm``, else ``nn.Identity``. Feed it the stream with ``end_stream``."""
    if needs_final_norm(placement, num_layers=num_layers, mixln_rho=mixln_rho):
        return make_norm(check_norm(norm), dim, **norm_kwargs)
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


@torch.no_grad()
def ngpt_normalize_branch_(branch: nn.Module, dim: int) -> None:
    """nGPT's per-step normalization of a branch's matrices along the embedding dim (``dim`` features).
    A module may define ``ngpt_normalize_()`` for itself (the GPT attention and feed-forward and
    ``MLPBranch`` do); otherwise each ``nn.Linear`` that writes the stream (``out_features == dim``, the
    last one) is normalized per column, and each that reads it (``in_features == dim``) per row."""
    if hasattr(branch, "ngpt_normalize_"):
        branch.ngpt_normalize_()
        return
    linears = [m for m in branch.modules() if isinstance(m, nn.Linear)]
    for i, linear in enumerate(linears):
        if linear.out_features == dim and (i == len(linears) - 1 or linear.in_features != dim):
            normalize_matrix_(linear.weight, dim=0)
        elif linear.in_features == dim:
            normalize_matrix_(linear.weight, dim=1)


def begin_stream(x: torch.Tensor, placement: str, streams: int = 4) -> tuple[torch.Tensor, None]:
    """The stream state ``(hidden, None)`` a model's first block receives for the input ``x`` (..., d):
    ``x`` itself; for ``hyper``/``mhc`` its ``streams`` copies (..., n, d) (Zhu et al.: the input is
    replicated into the n streams); for ``ngpt`` ``x / ||x||`` (hidden states on the unit sphere)."""
    if placement in MULTI_STREAM:
        return x.unsqueeze(-2).expand(*x.shape[:-1], streams, x.shape[-1]), None
    if placement == "ngpt":
        return l2_normalize(x), None
    return x, None


def end_stream(hidden: torch.Tensor, residual: torch.Tensor | None, final_norm: nn.Module, *,
               placement: str, fused: bool = True) -> torch.Tensor:
    """The stream after the last block, through the model's ``final_norm`` (``make_final_norm``): the
    pending add ``hidden + residual`` runs inside the final norm's ``add_norm`` call (one call) when
    the norm is LayerNorm/RMSNorm and ``fused``; ``hyper``/``mhc`` first merge the n streams by their
    sum (Zhu et al.)."""
    if placement in MULTI_STREAM:
        hidden = hidden.sum(dim=-2) if residual is None else (hidden + residual).sum(dim=-2)
        residual = None
    if residual is None:
        return final_norm(hidden)
    if fused and hasattr(final_norm, "forward_add"):
        return final_norm.forward_add(hidden, residual)
    return final_norm(hidden + residual)


def _add(hidden: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    return hidden if residual is None else hidden + residual


class StreamBlock(nn.Module):
    """One residual block in the stream interface: ``forward(hidden, residual=None) -> (hidden, residual)``
    (module docstring: the pair is the stream ``hidden + residual`` with its add pending; each norm
    makes the pending add inside its one ``add_norm`` call).

    Args:
        branch: ``F``, any module mapping the stream (..., dim) to the same shape; extra keyword
            arguments of ``forward`` are passed to it.
        dim: the stream's feature size.
        placement: one of ``PLACEMENTS`` (formulas in the module docstring, sources in
            docs/designs.md).
        norm: one of ``resnorm.nn.NORMS``; ignored by rezero and ngpt.
        depth: residual blocks in the model (deepnorm: alpha = depth^(1/4), beta = (4 depth)^(-1/4)).
        layer, num_layers: the block's layer (1-based) and the model's layer count (mixln needs both,
            lnscale needs ``layer``; hyper/mhc read stream ``(layer - 1) mod n`` at init).
        mixln_rho: the fraction of post-norm layers in mixln (0.25, Mix-LN's choice).
        streams: n, the residual streams of hyper/mhc (4, the expansion rate of both papers).
        hyper_dynamic: hyper's dynamic variant (DHC, input-dependent tanh-scaled coefficients);
            False is the static SHC.
        sinkhorn_iters: mHC's Sinkhorn-Knopp iterations (20, as Megatron-LM and the paper).
        layerscale_init: layerscale's lambda at init (0.1; CaiT uses 1e-5 / 1e-6 for deeper nets).
        ngpt_alpha_init: nGPT's eigen learning rate alpha at init (0.05; stored with scaling 1/sqrt(dim)).
        channels_first: norms (and the layerscale vector) on dim 1 of ``(N, C, *)`` maps.
        norm_eps, norm_bias: passed to ``make_norm`` (``norm_bias=False``: LayerNorms without a bias).
        fused: False runs the textbook form (explicit adds, separate norm calls).
        scale_branch: apply DeepNet's beta to the branch at construction (deepnorm); False when the
            caller's init already includes it.
    """

    def __init__(
        self,
        branch: nn.Module,
        dim: int,
        placement: str = "pre",
        norm: str = "layernorm",
        *,
        depth: int | None = None,
        layer: int | None = None,
        num_layers: int | None = None,
        mixln_rho: float = 0.25,
        streams: int = 4,
        hyper_dynamic: bool = True,
        sinkhorn_iters: int = 20,
        layerscale_init: float = 0.1,
        ngpt_alpha_init: float = 0.05,
        channels_first: bool = False,
        norm_eps: float | None = None,
        norm_bias: bool = True,
        fused: bool = True,
        scale_branch: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(branch, nn.Module):
            raise TypeError(f"branch must be an nn.Module; got {type(branch).__name__}")
        self.placement = placement = _check_placement(placement)
        dim = _checks.check_int("dim", dim)  # the stream's feature size
        # every option is checked whatever the placement: a bad value is an error, never silently unused
        mixln_rho = _checks.check_float("mixln_rho", mixln_rho, minimum=0.0, maximum=1.0)
        streams = _checks.check_int("streams", streams)
        hyper_dynamic = _checks.check_bool("hyper_dynamic", hyper_dynamic)
        sinkhorn_iters = _checks.check_int("sinkhorn_iters", sinkhorn_iters)
        layerscale_init = _checks.check_float("layerscale_init", layerscale_init)
        ngpt_alpha_init = _checks.check_float("ngpt_alpha_init", ngpt_alpha_init)
        self.norm_name = "none" if placement in _NORM_FREE else check_norm(norm)
        self.dim = dim
        self.channels_first = _checks.check_bool("channels_first", channels_first)
        self.fused = _checks.check_bool("fused", fused)
        self.layer = None if layer is None else _checks.check_int("layer", layer)
        self.branch = branch
        self.mode = placement  # the block's form: mixln resolves to post or pre
        if placement == "mixln":
            if layer is None or num_layers is None:
                raise ValueError("placement='mixln' needs layer and num_layers (Mix-LN is post in the first "
                                 "floor(rho * num_layers) layers)")
            self.mode = "post" if mixln_is_post(layer, num_layers, mixln_rho) else "pre"
        elif layer is not None and num_layers is not None:
            if layer > _checks.check_int("num_layers", num_layers):
                raise ValueError(f"layer must be <= num_layers ({num_layers}); got {layer}")
        if placement in ("hyper", "mhc") and channels_first:
            raise ValueError(f"placement={placement!r} works on channels-last streams (..., n, d) only")

        def new_norm() -> nn.Module:
            return make_norm(self.norm_name, dim, eps=norm_eps, channels_first=channels_first, bias=norm_bias)

        self.norm = new_norm() if placement not in _NORM_FREE else nn.Identity()
        if placement == "sandwich":
            self.norm_out = new_norm()
        self.alpha = 1.0
        if placement == "deepnorm":
            if depth is None:
                raise ValueError("depth (the number of residual blocks) is required for placement='deepnorm'")
            self.alpha, beta = deepnorm_constants(depth)
            if _checks.check_bool("scale_branch", scale_branch):
                scale_branch_init_(branch, beta)
        if placement == "rezero":
            self.gate = nn.Parameter(torch.zeros(1))
        if placement == "layerscale":
            self.scale = nn.Parameter(torch.full((dim,), layerscale_init))
        self.norm_scale = 1.0
        if placement == "lnscale":
            if layer is None:
                raise ValueError("placement='lnscale' needs layer (the norm output is divided by "
                                 "sqrt(layer))")
            self.norm_scale = 1.0 / math.sqrt(self.layer)
        index = 0 if self.layer is None else self.layer - 1
        if placement == "hyper":
            self.connection = HyperConnection(dim, streams, index=index, dynamic=hyper_dynamic,
                                              norm=self.norm_name, norm_eps=norm_eps)
        elif placement == "mhc":
            self.connection = ManifoldHyperConnection(dim, streams, index=index,
                                                      sinkhorn_iters=sinkhorn_iters)
        if placement == "ngpt":
            self.ngpt_alpha = LearnedScale(dim, ngpt_alpha_init, dim**-0.5)
        # the norm is computed by add_norm (LayerNorm/RMSNorm on the last dim): a pending add can go inside it
        self._fusable = hasattr(self.norm, "forward_add")

    # -- the stream form --------------------------------------------------------------------------

    def forward(
        self, hidden: torch.Tensor, residual: torch.Tensor | None = None, **branch_kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.fused:
            return self.textbook(_add(hidden, residual), **branch_kwargs), None
        return _STREAM_FORMS[self.mode](self, hidden, residual, branch_kwargs)

    def _enter(self, hidden: torch.Tensor, residual: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Norm(x), x)`` for the stream ``x = hidden + residual``: one add_norm(prenorm=True) call."""
        if residual is None:
            return self.norm(hidden), hidden
        if self._fusable:
            return self.norm.forward_add(hidden, residual, prenorm=True)
        x = hidden + residual
        return self.norm(x), x

    def _add_then_norm(self, branch_out: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``Norm(skip + branch_out)``, the result in the stream's dtype; one add_norm call when fusable."""
        if self._fusable:
            return self.norm.forward_add(branch_out, skip, out_dtype=skip.dtype)
        return self.norm(skip + branch_out)

    def _stream_none(self, hidden, residual, kw):
        return self.norm(self.branch(_add(hidden, residual), **kw)), None

    def _stream_post(self, hidden, residual, kw):
        x = _add(hidden, residual)
        return self._add_then_norm(self.branch(x, **kw), x), None

    def _stream_deepnorm(self, hidden, residual, kw):
        x = _add(hidden, residual)
        return self._add_then_norm(self.branch(x, **kw), x * self.alpha), None

    def _stream_pre(self, hidden, residual, kw):
        y, x = self._enter(hidden, residual)
        return self.branch(y, **kw), x

    def _stream_lnscale(self, hidden, residual, kw):
        y, x = self._enter(hidden, residual)
        return self.branch(y * self.norm_scale, **kw), x

    def _stream_sandwich(self, hidden, residual, kw):
        y, x = self._enter(hidden, residual)
        return self.norm_out(self.branch(y, **kw)), x

    def _stream_layerscale(self, hidden, residual, kw):
        y, x = self._enter(hidden, residual)
        return self._channel_scale(x) * self.branch(y, **kw), x

    def _stream_seed(self, hidden, residual, kw):
        if residual is None:
            y = self.norm(hidden)
        elif self._fusable:
            y = self.norm.forward_add(hidden, residual)
        else:
            y = self.norm(hidden + residual)
        return self.branch(y, **kw), y

    def _stream_rezero(self, hidden, residual, kw):
        x = _add(hidden, residual)
        return self.gate * self.branch(x, **kw), x

    def _stream_reordered(self, hidden, residual, kw):
        x = _add(hidden, residual)
        return self.norm(self.branch(x, **kw)), x

    def _stream_streams(self, hidden, residual, kw):  # hyper and mhc
        read, mixed, write = self.connection(_add(hidden, residual))
        y = self.branch(self.norm(read), **kw)
        return mixed + write.unsqueeze(-1) * y.unsqueeze(-2), None

    def _stream_ngpt(self, hidden, residual, kw):
        h = _add(hidden, residual)
        h_branch = l2_normalize(self.branch(h, **kw))
        # Norm(h + alpha (h_branch - h)): the add inside the one add_norm call
        return l2_normalize(self.ngpt_alpha() * (h_branch - h), h, out_dtype=h.dtype), None

    # -- the textbook form ------------------------------------------------------------------------

    def textbook(self, x: torch.Tensor, **branch_kwargs) -> torch.Tensor:
        """The block ``x -> x'`` as its formula reads: explicit adds, then separate norm calls."""
        kw = branch_kwargs
        m = self.mode
        if m == "none":
            return self.norm(self.branch(x, **kw))
        if m == "post":
            return self.norm(x + self.branch(x, **kw))
        if m == "deepnorm":
            return self.norm(self.alpha * x + self.branch(x, **kw))
        if m == "pre":
            return x + self.branch(self.norm(x), **kw)
        if m == "lnscale":
            return x + self.branch(self.norm(x) * self.norm_scale, **kw)
        if m == "sandwich":
            return x + self.norm_out(self.branch(self.norm(x), **kw))
        if m == "layerscale":
            return x + self._channel_scale(x) * self.branch(self.norm(x), **kw)
        if m == "seed":
            y = self.norm(x)
            return y + self.branch(y, **kw)
        if m == "rezero":
            return x + self.gate * self.branch(x, **kw)
        if m == "reordered":
            return x + self.norm(self.branch(x, **kw))
        if m in MULTI_STREAM:
            return self._stream_streams(x, None, kw)[0]
        h_branch = F.normalize(self.branch(x, **kw), dim=-1)  # ngpt
        return F.normalize(x + self.ngpt_alpha() * (h_branch - x), dim=-1)

    # -- helpers ------------------------------------------------------------------------------------

    def _channel_scale(self, t: torch.Tensor) -> torch.Tensor:
        if self.channels_first:
            return self.scale.view(-1, *([1] * (t.dim() - 2)))
        return self.scale

    def residual_mixing(self) -> torch.Tensor | None:
        """hyper/mhc: the stream-mixing matrices ``(..., n, n)`` of the last forward (``H' = M @ H``);
        None for single-stream placements."""
        connection = getattr(self, "connection", None)
        return None if connection is None else connection.residual_mixing()

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """nGPT: re-normalize the branch's matrices along the embedding dim (``ngpt_normalize_branch_``);
        nothing for the other placements."""
        if self.placement == "ngpt":
            ngpt_normalize_branch_(self.branch, self.dim)

    def extra_repr(self) -> str:
        extra = f", alpha={self.alpha:.4g}" if self.placement == "deepnorm" else ""
        if self.placement == "mixln":
            extra += f", layer={self.layer} ({self.mode})"
        if self.placement == "lnscale":
            extra += f", layer={self.layer}"
        return f"placement={self.placement!r}, norm={self.norm_name!r}, fused={self.fused}{extra}"


_STREAM_FORMS = {
    "none": StreamBlock._stream_none,
    "post": StreamBlock._stream_post,
    "deepnorm": StreamBlock._stream_deepnorm,
    "pre": StreamBlock._stream_pre,
    "lnscale": StreamBlock._stream_lnscale,
    "sandwich": StreamBlock._stream_sandwich,
    "layerscale": StreamBlock._stream_layerscale,
    "seed": StreamBlock._stream_seed,
    "rezero": StreamBlock._stream_rezero,
    "reordered": StreamBlock._stream_reordered,
    "hyper": StreamBlock._stream_streams,
    "mhc": StreamBlock._stream_streams,
    "ngpt": StreamBlock._stream_ngpt,
}


class Residual(StreamBlock):
    """One residual block as a module ``x -> x'``: the ``StreamBlock`` for ``placement`` (same
    arguments, formulas in the module docstring) fed ``(x, None)``, its result made whole.

    With ``norm`` in (layernorm, rmsnorm) over the last dim, post, deepnorm and ngpt make their add
    inside one ``add_norm`` call (``fused`` is then True). For ``hyper``/``mhc``, ``x`` is the n
    streams ``(..., n, dim)``. ``channels_first=True`` places norms (and the layerscale vector) on dim
    1 of ``(N, C, *)`` maps.
    """

    def __init__(self, branch: nn.Module, dim: int, placement: str = "pre", norm: str = "layernorm",
                 **kwargs) -> None:
        super().__init__(branch, dim, placement, norm, **kwargs)
        # one block on its own fuses only an add that it both makes and normalizes
        self.fused = self.fused and self.mode in _ONE_CALL and (self._fusable or self.mode == "ngpt")

    def forward(self, x: torch.Tensor, **branch_kwargs) -> torch.Tensor:  # type: ignore[override]
        hidden, residual = super().forward(x, None, **branch_kwargs)
        return _add(hidden, residual)

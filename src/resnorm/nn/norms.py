"""Normalization modules: drop-in LayerNorm / RMSNorm on ``add_norm``, AddNorm, DyT, Derf, ScaleNorm,
layout-aware BatchNorm / GroupNorm, and the norm registry: ``make_norm(name, dim)`` builds any norm
by name, ``NORMS`` lists the names, ``register_norm`` adds one.

Layouts. A "per-position" norm (layernorm, rmsnorm, dyt, scalenorm) works on the last dimension;
wrap it in ``ChannelsFirst`` (``make_norm(..., channels_first=True)``) to normalize the channel
dimension of a conv feature map ``(N, C, H, W)``. BatchNorm and GroupNorm here take the same flag:
``channels_first=False``: the channel dimension is the last one (``(N, C)``, ``(N, L, C)``,
``(N, H, W, C)``); ``True``: it is dimension 1 (``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``);
``None`` (their default): by rank — dim 1 for 4-D and larger inputs (conv maps, torch's convention),
the last dim for 2-D and 3-D inputs (features ``(N, C)`` and tokens ``(N, L, C)``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from resnorm import _checks, functional
from resnorm.functional import (
    DEFAULT_EPS,
    check_casting_mode,
    check_eps,
    check_weight_offset,
    resolve_weight_offset,
)

__all__ = [
    "LayerNorm",
    "RMSNorm",
    "AddNorm",
    "DyT",
    "Derf",
    "ScaleNorm",
    "BatchNorm",
    "GroupNorm",
    "ChannelsFirst",
    "make_norm",
    "register_norm",
    "check_norm",
    "NormSpec",
    "default_num_groups",
    "NORMS",
    "FUSABLE_NORMS",
]


def add_norm(*args, **kwargs):
    """``resnorm.functional.add_norm``, looked up at call time: wrapping or patching
    ``resnorm.functional.add_norm`` (e.g. to count calls) reaches every norm module."""
    return functional.add_norm(*args, **kwargs)


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        shape: tuple[int, ...] = (int(normalized_shape),)
    elif isinstance(normalized_shape, Sequence) and all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in normalized_shape
    ):
        shape = tuple(int(d) for d in normalized_shape)
    else:
        raise TypeError(f"normalized_shape must be an int or a sequence of ints; got {normalized_shape!r}")
    if len(shape) == 0 or any(d <= 0 for d in shape):
        raise ValueError(f"normalized_shape must be non-empty with positive sizes; got {shape}")
    return shape


_check_positive_int = _checks.check_int


class _AddNormBase(nn.Module):
    """Shared by LayerNorm and RMSNorm: flatten the trailing ``normalized_shape`` dims into one row,
    call ``add_norm`` (optionally with a residual add fused in), restore the shape."""

    _kind: str
    normalized_shape: tuple[int, ...]
    eps: float | None
    casting_mode: str = "fp32"
    weight_offset: float = 0.0  # w = weight + weight_offset

    def _eps_for(self, x: torch.Tensor, residual: torch.Tensor | None) -> float:
        """``eps``, or for ``eps=None`` torch's rule, ``finfo(dtype).eps``, with ``dtype`` that of the
        normalized sum ``x + residual`` (type promotion): the same whichever operand is called x."""
        if self.eps is not None:
            return self.eps
        dtype = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
        return torch.finfo(dtype).eps

    def _flat(self, p: torch.Tensor | None) -> torch.Tensor | None:
        return None if p is None else p.reshape(-1)

    def forward_add(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None = None,
        *,
        prenorm: bool = False,
        rowscale: torch.Tensor | None = None,
        out_dtype: torch.dtype | None = None,
        residual_dtype: torch.dtype | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``Norm(x * rowscale + residual)`` in one ``add_norm`` call; with ``prenorm=True`` also the
        sum. ``rowscale``: one factor per position (shape ``x.shape[:-len(normalized_shape)]``).
        ``out_dtype`` / ``residual_dtype`` go to ``add_norm`` (defaults: x's / residual's dtype)."""
        shape = self.normalized_shape
        k = len(shape)
        if x.shape[-k:] != shape:
            raise ValueError(
                f"input's trailing dims must be normalized_shape {shape}; got shape {tuple(x.shape)}"
            )
        weight, bias = self.weight, getattr(self, "bias", None)
        eps = self._eps_for(x, residual)
        if k == 1:  # the common case: no reshapes
            return add_norm(x, residual, weight, bias, kind=self._kind, eps=eps, prenorm=prenorm,
                            rowscale=rowscale, casting_mode=self.casting_mode, out_dtype=out_dtype,
                            residual_dtype=residual_dtype, weight_offset=self.weight_offset)
        row_shape = (*x.shape[: x.dim() - k], math.prod(shape))  # one row per position
        out = add_norm(
            x.reshape(row_shape),
            residual.reshape(row_shape) if residual is not None else None,
            self._flat(weight),
            self._flat(bias),
            kind=self._kind,
            eps=eps,
            prenorm=prenorm,
            rowscale=rowscale,
            casting_mode=self.casting_mode,
            out_dtype=out_dtype,
            residual_dtype=residual_dtype,
            weight_offset=self.weight_offset,
        )
        if prenorm:
            return out[0].reshape(x.shape), out[1].reshape(x.shape)
        return out.reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_add(x)

    def extra_repr(self) -> str:
        mode = "" if self.casting_mode == "fp32" else f", casting_mode={self.casting_mode!r}"
        mode += "" if self.weight_offset == 0.0 else f", weight_offset={self.weight_offset}"
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}{mode}"

    def _set_weight_offset(self, weight_offset: object) -> None:
        self.weight_offset = check_weight_offset(weight_offset)
        if self.weight_offset != 0.0 and not self.elementwise_affine:
            raise ValueError(f"weight_offset={self.weight_offset} needs a weight (w = weight + "
                             "weight_offset); got elementwise_affine=False")

    def _reset_weight(self) -> None:
        """The weight starts where ``w = weight + weight_offset`` is 1."""
        if self.weight is not None:
            nn.init.constant_(self.weight, 1.0 - self.weight_offset)


class LayerNorm(_AddNormBase):
    """LayerNorm (Ba et al. 2016): ``y = (x - mean) / sqrt(var + eps) * weight + bias`` over the last
    ``len(normalized_shape)`` dims.

    A drop-in for ``torch.nn.LayerNorm`` (same arguments, parameter names, outputs and state_dict)
    computed by ``resnorm.add_norm(kind="layer")``, so the fused kernels accelerate it on CUDA.
    ``forward_add(x, residual, prenorm=..., rowscale=...)`` fuses a residual add in front of the norm;
    ``casting_mode`` is add_norm's ("fp32", "llama", "gemma"); ``weight_offset`` scales by
    ``weight + weight_offset`` (1.0: Gemma's zero-centered weight), the weight initialised to
    ``1 - weight_offset``.
    """

    _kind = "layer"

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = DEFAULT_EPS["layer"],
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        casting_mode: str = "fp32",
        weight_offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = check_eps(eps)
        self.casting_mode = check_casting_mode(casting_mode)
        self.elementwise_affine = elementwise_affine
        self._set_weight_offset(weight_offset)
        factory = {"device": device, "dtype": dtype}
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(self.normalized_shape, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_weight()
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class RMSNorm(_AddNormBase):
    """RMSNorm (Zhang & Sennrich 2019): ``y = x / sqrt(mean(x^2) + eps) * weight`` over the last
    ``len(normalized_shape)`` dims.

    A drop-in for ``torch.nn.RMSNorm`` (same arguments, parameter names and state_dict) computed by
    ``resnorm.add_norm(kind="rms")``, with resnorm's one RMSNorm default ``eps=1e-6`` (torch's default
    is None). ``eps=None`` is torch's rule, ``torch.finfo(dtype).eps``, where ``dtype`` is that of the
    normalized sum: x's, or in ``forward_add(x, residual)`` the promotion of x's and residual's
    (fp32 for a bf16 branch output added to an fp32 stream, as in the unfused ``Norm(x + residual)``).
    ``forward_add(x, residual, prenorm=..., rowscale=...)`` fuses a residual add in front of the norm;
    ``casting_mode`` is add_norm's ("fp32", "llama" for Hugging Face Llama's numerics, "gemma");
    ``weight_offset`` scales by ``weight + weight_offset`` (1.0: Gemma's ``(1 + weight)``), the weight
    initialised to ``1 - weight_offset``.
    """

    _kind = "rms"

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = DEFAULT_EPS["rms"],
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        casting_mode: str = "fp32",
        weight_offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = None if eps is None else check_eps(eps)
        self.casting_mode = check_casting_mode(casting_mode)
        self.elementwise_affine = elementwise_affine
        self._set_weight_offset(weight_offset)
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_weight()


class AddNorm(nn.Module):
    """Module form of ``add_norm``: ``s = dropout(x) * rowscale + residual``; ``y = Norm(s)``;
    returns ``(y, s)``.

    ``kind`` is ``"rms"`` or ``"layer"``; ``eps=None`` means the kind's default (``DEFAULT_EPS``:
    1e-6 for rms, 1e-5 for layer); ``bias=None`` means a bias for layer and none for rms. With
    ``zero_centered_weight`` the weight is stored as an offset from 1 (initialised to 0; Gemma): the
    shorthand for ``weight_offset=1.0``. ``weight_offset`` scales by ``weight + weight_offset``, the
    weight initialised to ``1 - weight_offset`` (a scale of 1 at init).
    Dropout is applied only in training. ``casting_mode`` is add_norm's ("fp32", "llama", "gemma");
    ``forward(x, residual, rowscale)`` takes add_norm's per-row ``rowscale`` (stochastic depth).
    """

    def __init__(
        self,
        dim: int,
        kind: str = "rms",
        eps: float | None = None,
        bias: bool | None = None,
        zero_centered_weight: bool = False,
        residual_dtype: torch.dtype | None = None,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        casting_mode: str = "fp32",
        weight_offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = _check_positive_int("dim", dim)
        _checks.check_choice("kind", kind, ("rms", "layer"))
        dropout = _checks.check_probability("dropout", dropout)
        self.kind = kind
        self.eps = check_eps(eps) if eps is not None else DEFAULT_EPS[kind]
        self.casting_mode = check_casting_mode(casting_mode)
        self.zero_centered_weight = zero_centered_weight
        # the effective offset (1.0 for zero_centered_weight); the error messages are add_norm's
        self.weight_offset = resolve_weight_offset(zero_centered_weight, weight_offset)
        self.residual_dtype = residual_dtype
        self.dropout = float(dropout)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.full((dim,), 1.0 - self.weight_offset, **factory))
        use_bias = (kind == "layer") if bias is None else bias
        self.bias = nn.Parameter(torch.zeros(dim, **factory)) if use_bias else None

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None, rowscale: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return add_norm(
            x,
            residual,
            self.weight,
            self.bias,
            kind=self.kind,
            eps=self.eps,
            prenorm=True,
            residual_dtype=self.residual_dtype,
            zero_centered_weight=self.zero_centered_weight,
            dropout_p=self.dropout if self.training else 0.0,
            rowscale=rowscale,
            casting_mode=self.casting_mode,
            weight_offset=self.weight_offset,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.dim}, kind={self.kind!r}, eps={self.eps}, bias={self.bias is not None}, "
            f"zero_centered_weight={self.zero_centered_weight}, dropout={self.dropout}"
            + ("" if self.casting_mode == "fp32" else f", casting_mode={self.casting_mode!r}")
            + ("" if self.zero_centered_weight or self.weight_offset == 0.0
               else f", weight_offset={self.weight_offset}")
        )


class DyT(nn.Module):
    """Dynamic Tanh (Zhu et al. 2025, "Transformers without Normalization"):
    ``y = weight * tanh(alpha * x) + bias`` over the last dim, a scalar learnable ``alpha``
    (``alpha_init=0.5``), per-feature ``weight`` (ones) and ``bias`` (zeros). No statistics."""

    def __init__(
        self,
        dim: int,
        alpha_init: float = 0.5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = _check_positive_int("dim", dim)
        self.alpha_init = _checks.check_float("alpha_init", alpha_init)
        factory = {"device": device, "dtype": dtype}
        self.alpha = nn.Parameter(torch.full((1,), self.alpha_init, **factory))
        self.weight = nn.Parameter(torch.ones(dim, **factory))
        self.bias = nn.Parameter(torch.zeros(dim, **factory))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha * x) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.dim}, alpha_init={self.alpha_init}"


class Derf(nn.Module):
    """Dynamic erf (Chen et al. 2025, "Stronger Normalization-Free Transformers", the successor of DyT):
    ``y = weight * erf(alpha * x + shift) + bias`` over the last dim, with a learnable scalar ``alpha``
    (``alpha_init=0.5``) and scalar ``shift`` (``shift_init=0``), per-feature ``weight`` (ones) and
    ``bias`` (zeros). No statistics: a point-wise function in place of a norm."""

    def __init__(
        self,
        dim: int,
        alpha_init: float = 0.5,
        shift_init: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = _check_positive_int("dim", dim)
        self.alpha_init = _checks.check_float("alpha_init", alpha_init)
        self.shift_init = _checks.check_float("shift_init", shift_init)
        factory = {"device": device, "dtype": dtype}
        self.alpha = nn.Parameter(torch.full((1,), self.alpha_init, **factory))
        self.shift = nn.Parameter(torch.full((1,), self.shift_init, **factory))
        self.weight = nn.Parameter(torch.ones(dim, **factory))
        self.bias = nn.Parameter(torch.zeros(dim, **factory))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(self.alpha * x + self.shift) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.dim}, alpha_init={self.alpha_init}, shift_init={self.shift_init}"


class ScaleNorm(nn.Module):
    """ScaleNorm (Nguyen & Salazar 2019): ``y = g * x / max(||x||_2, eps)`` over the last dim, one
    learnable scalar ``g`` initialised to ``sqrt(dim)`` (the paper's choice)."""

    def __init__(
        self,
        dim: int,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = _check_positive_int("dim", dim)
        self.eps = check_eps(eps)
        self.g = nn.Parameter(torch.full((1,), math.sqrt(dim), device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=self.eps)
        return x * (self.g / norm)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


def _channel_dim(x: torch.Tensor, channels_first: bool | None, expected: int, who: str) -> int:
    if x.dim() < 2:
        raise ValueError(f"{who} needs a (batch, channel, ...) input of >= 2 dims; got {tuple(x.shape)}")
    if channels_first is None:  # by rank: conv maps (N, C, H, W[, D]) vs features / tokens (N, [L,] C)
        channels_first = x.dim() >= 4
    dim = 1 if channels_first else x.dim() - 1
    if x.shape[dim] != expected:
        layout = "(N, C, *)" if channels_first else "(N, *, C)"
        raise ValueError(
            f"{who} expects {expected} channels in dim {dim} (layout {layout}, "
            f"channels_first={channels_first}); got input of shape {tuple(x.shape)}"
        )
    return dim


class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (Ioffe & Szegedy 2015) for any input rank: per-channel statistics over the batch
    and every other dim. Same arguments, parameters and buffers as ``torch.nn.BatchNorm1d/2d`` (state
    dicts load both ways), plus ``channels_first``: True: channels in dim 1; False: in the last dim,
    so ``(N, L, C)`` is normalized like ``BatchNorm1d`` on ``x.transpose(1, 2)``; None (default): by
    rank, dim 1 for 4-D+ inputs (``(N, C, H, W)`` like ``BatchNorm2d``), else the last dim."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        channels_first: bool | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.channels_first = channels_first

    def _check_input_dim(self, input: torch.Tensor) -> None:
        _channel_dim(input, True, self.num_features, "BatchNorm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = _channel_dim(x, self.channels_first, self.num_features, "BatchNorm")
        if dim == 1:
            return super().forward(x)
        return super().forward(x.movedim(dim, 1)).movedim(1, dim)


class GroupNorm(nn.GroupNorm):
    """GroupNorm (Wu & He 2018): channels split into ``num_groups`` groups, each normalized per sample.

    ``channels_first=True``: exactly ``torch.nn.GroupNorm`` on ``(N, C, *)`` (statistics over the
    group's channels and all spatial positions). ``channels_first=False`` (token layout
    ``(N, *, C)``): statistics per sample, per position and per group, as in per-head GroupNorm of
    sequence models (RetNet) — no mixing across positions, so it stays causal. Both agree on ``(N, C)``.
    ``None`` (default): by rank, channels first for 4-D+ inputs, else channels last.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        channels_first: bool | None = None,
    ) -> None:
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        super().__init__(num_groups, num_channels, eps, affine, device, dtype)
        self.channels_first = channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = _channel_dim(x, self.channels_first, self.num_channels, "GroupNorm")
        if dim == 1:
            return super().forward(x)
        return super().forward(x.reshape(-1, self.num_channels)).reshape(x.shape)


class ChannelsFirst(nn.Module):
    """Apply a last-dim norm to the channel dim 1 of ``(N, C, *)`` (moves C last and back)."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"ChannelsFirst needs an (N, C, *) input; got {tuple(x.shape)}")
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def default_num_groups(dim: int) -> int:
    """GroupNorm groups used by ``make_norm``: the largest divisor of ``dim`` that is at most 32 (Wu &
    He 2018's default G) and leaves at least 16 channels per group (their other good setting), else 1.
    Groups of one or two channels would zero or binarize a per-position (token) GroupNorm."""
    limit = min(32, dim // 16)
    return max((g for g in range(1, limit + 1) if dim % g == 0), default=1)


# ----------------------------------------------------------------------------------------------
# the norm registry: name -> how to build it


@dataclass(frozen=True)
class NormSpec:
    """How ``make_norm`` builds one named norm.

    ``build(dim, *, eps, bias, num_groups, channels_first, device, dtype)`` returns the module
    (``eps=None`` keeps the module's own default). ``layouts``: the module handles ``channels_first``
    itself (BatchNorm, GroupNorm); otherwise it normalizes the last dim and ``make_norm`` wraps it in
    ``ChannelsFirst`` for ``channels_first=True``. ``fusable``: ``add_norm`` computes it, so a residual
    add can run inside the norm's call (``forward_add``)."""

    build: Callable[..., nn.Module]
    layouts: bool = False
    fusable: bool = False


def _eps(eps: float | None) -> dict:
    return {} if eps is None else {"eps": eps}


_REGISTRY: dict[str, NormSpec] = {
    "layernorm": NormSpec(lambda dim, eps, bias, **f: LayerNorm(dim, **_eps(eps), bias=bias, **f),
                          fusable=True),
    "rmsnorm": NormSpec(lambda dim, eps, bias, **f: RMSNorm(dim, **_eps(eps), **f), fusable=True),
    "batchnorm": NormSpec(
        lambda dim, eps, bias, channels_first, num_groups, **f: BatchNorm(
            dim, **_eps(eps), channels_first=channels_first, **f),
        layouts=True),
    "groupnorm": NormSpec(
        lambda dim, eps, bias, channels_first, num_groups, **f: GroupNorm(
            _check_positive_int("num_groups", default_num_groups(dim) if num_groups is None else num_groups),
            dim, **_eps(eps), channels_first=channels_first, **f),
        layouts=True),
    "dyt": NormSpec(lambda dim, eps, bias, **f: DyT(dim, **f)),
    "derf": NormSpec(lambda dim, eps, bias, **f: Derf(dim, **f)),
    "scalenorm": NormSpec(lambda dim, eps, bias, **f: ScaleNorm(dim, **_eps(eps), **f)),
    "none": NormSpec(lambda dim, eps, bias, **f: nn.Identity()),
}


class _Names(Sequence):
    """A live, read-only view of the registry's names: iterable, indexable, supports ``in``."""

    def __init__(self, names: Callable[[], Sequence[str]]) -> None:
        self._names = names

    def __getitem__(self, index):
        return tuple(self._names())[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._names()))

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


NORMS = _Names(lambda: _REGISTRY.keys())  # every name make_norm accepts
FUSABLE_NORMS = _Names(lambda: [k for k, spec in _REGISTRY.items() if spec.fusable])


def register_norm(name: str, spec: NormSpec, *, replace: bool = False) -> None:
    """Add a norm to the registry (``make_norm``, ``NORMS``, every ``norm=`` argument and the lab).
    ``replace=True`` allows overwriting an existing name."""
    if not isinstance(name, str) or not name or ":" in name or "," in name:
        raise ValueError(f"name must be a non-empty string without ':' or ','; got {name!r}")
    if not isinstance(spec, NormSpec):
        raise TypeError(f"spec must be a NormSpec; got {type(spec).__name__}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"norm {name!r} is already registered (pass replace=True to overwrite it)")
    _REGISTRY[name] = spec


def check_norm(norm: object) -> str:
    """``norm`` when it names a registered norm, else a ValueError listing them."""
    return _checks.check_choice("norm", norm, NORMS)


def make_norm(
    name: str,
    dim: int,
    *,
    eps: float | None = None,
    channels_first: bool | None = None,
    num_groups: int | None = None,
    bias: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build a norm over ``dim`` features by name (one of ``NORMS``; the registry above).

    ``channels_first=False``: features are the last dim — ``(N, C)``, ``(N, L, C)``.
    ``channels_first=True``: features are dim 1 — conv maps ``(N, C, H, W)``.
    ``channels_first=None`` (default): the last dim for layernorm, rmsnorm, dyt, derf and scalenorm; by
    rank for batchnorm and groupnorm (dim 1 for 4-D+ inputs, else the last dim). ``eps=None`` keeps
    each norm's default (layernorm/batchnorm/groupnorm 1e-5, rmsnorm 1e-6, scalenorm 1e-5; DyT and
    Derf have no eps). ``num_groups`` (groupnorm) defaults to ``default_num_groups(dim)``.
    ``bias=False`` drops LayerNorm's additive bias (as ``torch.nn.LayerNorm(bias=False)``; the other
    norms keep their own parameters). ``"none"`` gives ``nn.Identity``.
    """
    spec = _REGISTRY[check_norm(name)]
    dim = _check_positive_int("dim", dim)
    factory = {"device": device, "dtype": dtype}
    if spec.layouts:
        return spec.build(dim, eps=eps, bias=bias, channels_first=channels_first, num_groups=num_groups,
                          **factory)
    norm = spec.build(dim, eps=eps, bias=bias, **factory)
    return ChannelsFirst(norm) if channels_first and name != "none" else norm

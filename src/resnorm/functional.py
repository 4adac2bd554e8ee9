"""The functional contract of resnorm: residual add + LayerNorm / RMSNorm.

``add_norm`` is the single entry point that every module and model calls and that the Triton
kernels accelerate. For one row ``x`` of length N (the last dimension)::

    s            = dropout(x) * rowscale + residual      (fp32; rowscale and residual optional)
    residual_out = s                                     (stored in residual_dtype)
    y            = normalize(s) * w + b                  casting_mode "fp32" / "gemma": fp32 math,
                                                         one rounding to out_dtype
    y            = round(normalize(s), residual_dtype) * w + b      casting_mode "llama"

    normalize(s) = (s - mean(s)) / sqrt(var(s) + eps)    kind="layer"  (Ba et al. 2016)
    normalize(s) = s / sqrt(mean(s^2) + eps)             kind="rms"    (Zhang & Sennrich 2019)

with ``w = weight + weight_offset`` (``weight_offset`` 0 by default; 1 is the zero-centered weight of
Gemma, ``zero_centered_weight=True`` its shorthand; Liger's ``offset``) and
``rowscale`` one factor per row (stochastic depth without a mask tensor, as flash-attn's rowscale).
The math is fp32 for fp32/fp16/bf16 inputs and float64 for float64 inputs.
``prenorm=True`` also returns ``residual_out``: the new residual stream of a pre-norm block.
The whole contract, with the accuracy rule the kernels are held to, is in docs/kernels.md.

The pure-PyTorch implementation in this file is the reference and the CPU path. The backend is
chosen per call by the environment variable ``RESNORM_BACKEND``:

- ``auto`` (default): the Triton kernels for fp32/fp16/bf16 CUDA tensors when Triton imports,
  else PyTorch;
- ``triton``: always the kernels (on CPU tensors they run in Triton's interpreter);
- ``torch``: always the PyTorch reference.

``use_backend(name)`` overrides the variable inside a ``with`` block.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = ["add_norm", "layer_norm", "rms_norm", "get_backend", "use_backend", "KINDS", "BACKENDS",
           "CASTING_MODES", "DEFAULT_EPS"]

KINDS = ("rms", "layer")
BACKENDS = ("auto", "triton", "torch")
CASTING_MODES = ("fp32", "llama", "gemma")
DEFAULT_EPS = {"layer": 1e-5, "rms": 1e-6}  # one default per norm kind, in every function and module
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_backend_override: str | None = None


def get_backend() -> str:
    """The backend name in force: a ``use_backend`` override, else ``$RESNORM_BACKEND``, else auto."""
    name = _backend_override or os.environ.get("RESNORM_BACKEND", "auto") or "auto"
    if name not in BACKENDS:
        raise ValueError(f"RESNORM_BACKEND must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend (``auto``, ``triton`` or ``torch``) inside a ``with`` block."""
    global _backend_override
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    previous, _backend_override = _backend_override, name
    try:
        yield
    finally:
        _backend_override = previous


def _use_triton(x: torch.Tensor, *others: torch.Tensor | None) -> bool:
    """Whether this call runs the kernels; ``others``: residual, weight, bias (auto keeps a call with any
    float64 tensor among them on the PyTorch path, as it does a float64 ``x``)."""
    backend = get_backend()
    if backend == "torch":
        return False
    if backend == "triton":
        return True
    if not x.is_cuda or x.dtype not in _KERNEL_DTYPES:  # float64 stays on the PyTorch path
        return False
    if any(t is not None and t.dtype not in _KERNEL_DTYPES for t in others):
        return False
    from resnorm import kernels  # imported lazily: CPU users never pay for Triton

    return kernels.is_available()


# ----------------------------------------------------------------------------------------------
# validation


def _check_tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype; got {t.dtype}")
    return t


def _check_dtype(name: str, dtype: object) -> None:
    if dtype is None:
        return
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype or None; got {dtype!r}")


def check_eps(eps: object, name: str = "eps") -> float:
    """``eps`` as a float, or a TypeError / ValueError unless it is a finite number > 0."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{name} must be a finite positive float; got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {eps}")
    return float(eps)


def check_weight_offset(weight_offset: object) -> float:
    """``weight_offset`` as a float, or a TypeError / ValueError unless it is a finite number."""
    if isinstance(weight_offset, bool) or not isinstance(weight_offset, numbers.Real):
        raise TypeError(f"weight_offset must be a finite float; got {type(weight_offset).__name__}")
    if not math.isfinite(weight_offset):
        raise ValueError(f"weight_offset must be a finite number; got {weight_offset}")
    return float(weight_offset)


def resolve_weight_offset(zero_centered_weight: bool, weight_offset: object,
                          has_weight: bool = True) -> float:
    """The offset added to ``weight`` (``w = weight + offset``), from ``weight_offset`` and its shorthand
    ``zero_centered_weight`` (= ``weight_offset=1.0``).

    Errors: ``weight_offset`` not a finite number; ``zero_centered_weight=True`` with a ``weight_offset``
    other than 0 or 1; a nonzero ``weight_offset`` with no ``weight`` (an offset of a weight that does
    not exist has no meaning). ``zero_centered_weight=True`` with no weight changes nothing, as it always
    has (there is no weight to offset). 0.0 when there is no weight (``has_weight=False``).
    """
    if type(weight_offset) is not float or not -math.inf < weight_offset < math.inf:  # one compare if float
        weight_offset = check_weight_offset(weight_offset)
    if zero_centered_weight and weight_offset != 0.0 and weight_offset != 1.0:
        raise ValueError("zero_centered_weight=True means weight_offset=1.0; got it together with "
                         f"weight_offset={weight_offset} (pass one of them)")
    if not has_weight:
        if weight_offset != 0.0:
            raise ValueError(f"weight_offset={weight_offset} needs a weight (w = weight + weight_offset); "
                             "got weight=None")
        return 0.0
    return 1.0 if zero_centered_weight else weight_offset


def check_casting_mode(casting_mode: object) -> str:
    """``casting_mode``, or a TypeError / ValueError unless it is one of ``CASTING_MODES``."""
    if not isinstance(casting_mode, str):
        raise TypeError(f"casting_mode must be a str; got {type(casting_mode).__name__}")
    if casting_mode not in CASTING_MODES:
        modes = ", ".join(map(repr, CASTING_MODES))
        raise ValueError(f"casting_mode must be one of {modes}; got {casting_mode!r}")
    return casting_mode


def _validate(x, residual, weight, bias, rowscale, kind, eps, residual_dtype, out_dtype, dropout_p, generator,
              casting_mode) -> None:
    _check_tensor("x", x)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (the normalized last dimension)")
    n = x.shape[-1]
    if residual is not None:
        _check_tensor("residual", residual)
        if residual.shape != x.shape:
            raise ValueError(
                f"residual must have the shape of x {tuple(x.shape)}; got {tuple(residual.shape)}")
        if residual.device != x.device:
            raise ValueError(f"residual must be on x's device {x.device}; got {residual.device}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is None:
            continue
        _check_tensor(name, p)
        if p.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) (the last dimension of x); got {tuple(p.shape)}")
        if p.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}; got {p.device}")
    if rowscale is not None:
        _check_tensor("rowscale", rowscale)
        if rowscale.shape != x.shape[:-1]:
            raise ValueError(f"rowscale must have shape x.shape[:-1] = {tuple(x.shape[:-1])} (one scale per "
                             f"row); got {tuple(rowscale.shape)}")
        if rowscale.device != x.device:
            raise ValueError(f"rowscale must be on x's device {x.device}; got {rowscale.device}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    if type(eps) is not float or not 0.0 < eps < math.inf:  # one compare for the common case
        check_eps(eps)
    _check_dtype("residual_dtype", residual_dtype)
    _check_dtype("out_dtype", out_dtype)
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"dropout_p must be a float in [0, 1); got {type(dropout_p).__name__}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1); got {dropout_p}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
    if casting_mode not in CASTING_MODES:  # a str compare: no cost on the default
        check_casting_mode(casting_mode)


# ----------------------------------------------------------------------------------------------
# the PyTorch reference


def add_norm_reference(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    kind: str,
    eps: float,
    residual_dtype: torch.dtype,
    out_dtype: torch.dtype,
    zero_centered_weight: bool = False,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
    rowscale: torch.Tensor | None = None,
    casting_mode: str = "fp32",
    weight_offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch path of ``add_norm`` on validated arguments: returns ``(y, residual_out)``.
    ``w = weight + weight_offset`` (``zero_centered_weight``: ``weight_offset=1.0``).

    One fused native norm call over fp32 data. Tensors already in the target dtype are used as they
    are (no copy, and no ``.to()`` call either: this path runs in every norm of the CPU lab, so its
    per-call overhead matters as much as its bytes); ``rowscale`` and the "llama" casting mode add
    their ops only when asked for, and so does a nonzero ``weight_offset``.
    """
    n = x.shape[-1]
    # fp32 math; float64 inputs keep float64 (never compute in less than the input's precision)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    s = _to(x, compute)
    if dropout_p > 0.0:
        keep = torch.empty(x.shape, device=x.device, dtype=compute)
        keep.bernoulli_(1.0 - dropout_p, generator=generator)
        s = s * keep.mul_(1.0 / (1.0 - dropout_p))
    if rowscale is not None:
        s = s * _to(rowscale, compute).unsqueeze(-1)
    if residual is not None:
        s = s + _to(residual, compute)
    w = None
    if weight is not None:
        w = _to(weight, compute)
        offset = 1.0 if zero_centered_weight else weight_offset
        if offset != 0.0:
            w = w + offset
    b = None if bias is None else _to(bias, compute)
    if s.numel() == 0:  # nothing to normalize; keep the autograd graph connected to every input
        y = s * 0.0
        y = y * w if w is not None else y
        y = y + b if b is not None else y
    elif casting_mode == "llama" and torch.finfo(residual_dtype).bits < torch.finfo(compute).bits:
        # HF Llama's order: round the normalized value to the stream's dtype, then scale
        xhat = F.layer_norm(s, (n,), None, None, eps) if kind == "layer" else F.rms_norm(s, (n,), None, eps)
        y = _to(_to(xhat, residual_dtype), compute)
        y = y * w if w is not None else y
        y = y + b if b is not None else y
    elif kind == "layer":
        y = F.layer_norm(s, (n,), w, b, eps)
    else:
        y = F.rms_norm(s, (n,), w, eps)
        if b is not None:
            y = y + b
    # residual_out may be ``x`` itself (no residual, no dropout, no rowscale, same dtype): add_norm
    # copies it only when it is returned
    same = residual is None and dropout_p == 0.0 and rowscale is None and x.dtype == residual_dtype
    residual_out = x if same else s
    return _to(y, out_dtype), _to(residual_out, residual_dtype)


def _to(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


# ----------------------------------------------------------------------------------------------
# public API


def add_norm(
    x: torch.Tensor,
    residual: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    kind: str = "rms",
    eps: float | None = None,
    prenorm: bool = False,
    residual_dtype: torch.dtype | None = None,
    out_dtype: torch.dtype | None = None,
    zero_centered_weight: bool = False,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
    rowscale: torch.Tensor | None = None,
    casting_mode: str = "fp32",
    weight_offset: float = 0.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Residual add followed by LayerNorm or RMSNorm over the last dimension.

    For each row (the last dimension, length N), with ``w = weight + weight_offset``, ``b = bias`` and
    the math in fp32 (float64 for float64 ``x``)::

        s            = dropout(x) * rowscale[..., None] + residual
        residual_out = s rounded to residual_dtype
        xhat         = (s - mean(s)) / sqrt(var(s) + eps)        kind="layer"
        xhat         = s / sqrt(mean(s * s) + eps)               kind="rms"
        y = round_out(xhat * w + b)                              casting_mode="fp32" or "gemma"
        y = round_out(round_residual(xhat) * w + b)              casting_mode="llama"

    ``round_out`` rounds to ``out_dtype``, ``round_residual`` to ``residual_dtype`` (the dtype of the
    stored sum, i.e. the norm's input dtype); absent operands drop out of the formulas.

    Args:
        x: input of any leading shape ``(..., N)``; floating point.
        residual: the residual stream, same shape as ``x`` (optional).
        weight, bias: per-feature affine parameters of shape ``(N,)`` (each optional).
        kind: ``"rms"`` (RMSNorm, Zhang & Sennrich 2019) or ``"layer"`` (LayerNorm, Ba et al. 2016).
        eps: added to the mean square / variance; a finite number > 0. Default (None): the one
            default of each kind, ``DEFAULT_EPS``: 1e-5 for "layer", 1e-6 for "rms".
        prenorm: also return the new residual stream ``residual_out``.
        residual_dtype: dtype of the returned residual stream (default ``residual.dtype``, else
            ``x.dtype``); e.g. ``torch.float32`` for an fp32 stream under bf16 activations.
        out_dtype: dtype of ``y`` (default ``x.dtype``).
        zero_centered_weight: scale by ``1 + weight`` instead of ``weight`` (Gemma): the shorthand for
            ``weight_offset=1.0``; together with another nonzero ``weight_offset`` it is a ValueError.
            Without a weight it changes nothing.
        dropout_p: dropout probability applied to ``x`` before the add, in ``[0, 1)``.
        generator: a ``torch.Generator`` for the dropout mask (default: the device's generator).
        rowscale: one factor per row, shape ``x.shape[:-1]``, any float dtype: multiplies
            ``dropout(x)`` before the add (flash-attn's rowscale; stochastic depth / drop-path is
            ``rowscale = keep / (1 - p)`` per sample, with no mask tensor of x's size). Differentiable:
            ``d rowscale[r] = sum_j d s[r, j] * dropout(x)[r, j]`` (fp32 sum, in rowscale's dtype).
        casting_mode: where ``y`` is rounded. ``"fp32"`` (default) and ``"gemma"`` (the same math,
            the name Gemma / Liger use: ``(normalize(s.float()) * (1 + w.float())).to(dtype)``) round
            once, at the end. ``"llama"`` rounds the normalized value to ``residual_dtype`` before the
            multiply by the fp32 weight, as Hugging Face's Llama RMSNorm does
            (``weight * hidden.to(input_dtype)``); identical to "fp32" when ``residual_dtype`` is fp32.
            For the gradients the roundings count as identity; ``d weight`` uses the rounded value.
        weight_offset: a finite float added to ``weight`` in fp32: ``w = weight + weight_offset``
            (Liger's ``offset``; 1.0 is Gemma's zero-centered weight, stored as its difference from 1).
            ``d weight`` is unchanged by it (``d w / d weight = 1``). Needs a ``weight``: nonzero with
            ``weight=None`` is a ValueError.

    Returns:
        ``y``, or ``(y, residual_out)`` when ``prenorm=True``.
    """
    if eps is None and isinstance(kind, str):
        eps = DEFAULT_EPS.get(kind)
    _validate(x, residual, weight, bias, rowscale, kind, eps, residual_dtype, out_dtype, dropout_p, generator,
              casting_mode)
    weight_offset = resolve_weight_offset(zero_centered_weight, weight_offset, weight is not None)
    if residual_dtype is None:
        residual_dtype = residual.dtype if residual is not None else x.dtype
    if out_dtype is None:
        out_dtype = x.dtype
    impl = add_norm_reference
    if _use_triton(x, residual, weight, bias):
        from resnorm.kernels import add_norm as impl  # noqa: F811 - same signature, fused kernels
    y, residual_out = impl(
        x,
        residual,
        weight,
        bias,
        kind=kind,
        eps=float(eps),
        residual_dtype=residual_dtype,
        out_dtype=out_dtype,
        dropout_p=float(dropout_p),
        generator=generator,
        rowscale=rowscale,
        casting_mode=casting_mode,
        weight_offset=weight_offset,
    )
    if not prenorm:
        return y
    if residual_out is x:  # never hand the caller's own tensor back as a new output
        residual_out = x.clone()
    return y, residual_out


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    eps: float = DEFAULT_EPS["layer"],
    out_dtype: torch.dtype | None = None,
    zero_centered_weight: bool = False,
    rowscale: torch.Tensor | None = None,
    casting_mode: str = "fp32",
    weight_offset: float = 0.0,
) -> torch.Tensor:
    """LayerNorm over the last dimension: ``(x - mean) / sqrt(var + eps) * w + b`` (Ba et al. 2016);
    ``add_norm(x, kind="layer", ...)`` without a residual (see it for rowscale, casting_mode and
    weight_offset: ``w = weight + weight_offset``)."""
    return add_norm(x, None, weight, bias, kind="layer", eps=eps, out_dtype=out_dtype,
                    zero_centered_weight=zero_centered_weight, rowscale=rowscale, casting_mode=casting_mode,
                    weight_offset=weight_offset)


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    eps: float = DEFAULT_EPS["rms"],
    out_dtype: torch.dtype | None = None,
    zero_centered_weight: bool = False,
    rowscale: torch.Tensor | None = None,
    casting_mode: str = "fp32",
    weight_offset: float = 0.0,
) -> torch.Tensor:
    """RMSNorm over the last dimension: ``x / sqrt(mean(x^2) + eps) * w (+ b)`` (Zhang & Sennrich 2019);
    ``add_norm(x, kind="rms", ...)`` without a residual (see it for rowscale, casting_mode and
    weight_offset: ``w = weight + weight_offset``)."""
    return add_norm(x, None, weight, bias, kind="rms", eps=eps, out_dtype=out_dtype,
                    zero_centered_weight=zero_centered_weight, rowscale=rowscale, casting_mode=casting_mode,
                    weight_offset=weight_offset)

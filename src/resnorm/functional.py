"""The functional contract of resnorm: residual add + LayerNorm / RMSNorm.

``add_norm`` is the single entry point that every module and model calls and that the Triton
kernels accelerate. For one row ``x`` of length N (the last dimension)::

    s            = dropout(x) + residual                 (fp32; residual optional)
    residual_out = s                                     (stored in residual_dtype)
    y            = normalize(s) * w + b                  (fp32 math, returned in out_dtype)

    normalize(s) = (s - mean(s)) / sqrt(var(s) + eps)    kind="layer"  (Ba et al. 2016)
    normalize(s) = s / sqrt(mean(s^2) + eps)             kind="rms"    (Zhang & Sennrich 2019)

with ``w = weight`` or ``w = 1 + weight`` when ``zero_centered_weight`` (Gemma's convention).
The math is fp32 for fp32/fp16/bf16 inputs and float64 for float64 inputs.
``prenorm=True`` also returns ``residual_out``: the new residual stream of a pre-norm block.

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
import numbers
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = ["add_norm", "layer_norm", "rms_norm", "get_backend", "use_backend", "KINDS", "BACKENDS"]

KINDS = ("rms", "layer")
BACKENDS = ("auto", "triton", "torch")
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


def _use_triton(x: torch.Tensor) -> bool:
    backend = get_backend()
    if backend == "torch":
        return False
    if backend == "triton":
        return True
    if not x.is_cuda or x.dtype not in _KERNEL_DTYPES:  # float64 stays on the PyTorch path
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


def _validate(x, residual, weight, bias, kind, eps, residual_dtype, out_dtype, dropout_p) -> None:
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
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a positive float; got {type(eps).__name__}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0; got {eps}")
    _check_dtype("residual_dtype", residual_dtype)
    _check_dtype("out_dtype", out_dtype)
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"dropout_p must be a float in [0, 1); got {type(dropout_p).__name__}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1); got {dropout_p}")


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch path of ``add_norm`` on validated arguments: returns ``(y, residual_out)``.

    One fused native norm call over fp32 data. Tensors already in the target dtype are used as they
    are (no copy, and no ``.to()`` call either: this path runs in every norm of the CPU lab, so its
    per-call overhead matters as much as its bytes).
    """
    n = x.shape[-1]
    # fp32 math; float64 inputs keep float64 (never compute in less than the input's precision)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    s = _to(x, compute)
    if dropout_p > 0.0:
        keep = torch.empty(x.shape, device=x.device, dtype=compute)
        keep.bernoulli_(1.0 - dropout_p, generator=generator)
        s = s * keep.mul_(1.0 / (1.0 - dropout_p))
    if residual is not None:
        s = s + _to(residual, compute)
    w = None
    if weight is not None:
        w = _to(weight, compute) + 1.0 if zero_centered_weight else _to(weight, compute)
    b = None if bias is None else _to(bias, compute)
    if s.numel() == 0:  # nothing to normalize; keep the autograd graph connected to every input
        y = s * 0.0
        y = y * w if w is not None else y
        y = y + b if b is not None else y
    elif kind == "layer":
        y = F.layer_norm(s, (n,), w, b, eps)
    else:
        y = F.rms_norm(s, (n,), w, eps)
        if b is not None:
            y = y + b
    # residual_out may be ``x`` itself (no residual, no dropout, same dtype): add_norm copies it only
    # when it is returned
    residual_out = x if residual is None and dropout_p == 0.0 and x.dtype == residual_dtype else s
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
    eps: float = 1e-6,
    prenorm: bool = False,
    residual_dtype: torch.dtype | None = None,
    out_dtype: torch.dtype | None = None,
    zero_centered_weight: bool = False,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Residual add followed by LayerNorm or RMSNorm over the last dimension.

    Args:
        x: input of any leading shape ``(..., N)``; floating point.
        residual: the residual stream, same shape as ``x`` (optional).
        weight, bias: per-feature affine parameters of shape ``(N,)`` (each optional).
        kind: ``"rms"`` (RMSNorm) or ``"layer"`` (LayerNorm).
        eps: added to the mean square / variance; must be > 0.
        prenorm: also return the new residual stream ``s = dropout(x) + residual``.
        residual_dtype: dtype of the returned residual stream (default ``residual.dtype``, else
            ``x.dtype``); e.g. ``torch.float32`` for an fp32 stream under bf16 activations.
        out_dtype: dtype of ``y`` (default ``x.dtype``).
        zero_centered_weight: scale by ``1 + weight`` instead of ``weight`` (Gemma).
        dropout_p: dropout probability applied to ``x`` before the add, in ``[0, 1)``.
        generator: random generator for the dropout mask (PyTorch path).

    Returns:
        ``y``, or ``(y, residual_out)`` when ``prenorm=True``.
    """
    _validate(x, residual, weight, bias, kind, eps, residual_dtype, out_dtype, dropout_p)
    if residual_dtype is None:
        residual_dtype = residual.dtype if residual is not None else x.dtype
    if out_dtype is None:
        out_dtype = x.dtype
    impl = add_norm_reference
    if _use_triton(x):
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
        zero_centered_weight=bool(zero_centered_weight),
        dropout_p=float(dropout_p),
        generator=generator,
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
    eps: float = 1e-5,
    out_dtype: torch.dtype | None = None,
    zero_centered_weight: bool = False,
) -> torch.Tensor:
    """LayerNorm over the last dimension: ``(x - mean) / sqrt(var + eps) * w + b`` (Ba et al. 2016)."""
    return add_norm(x, None, weight, bias, kind="layer", eps=eps, out_dtype=out_dtype,
                    zero_centered_weight=zero_centered_weight)


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    eps: float = 1e-6,
    out_dtype: torch.dtype | None = None,
    zero_centered_weight: bool = False,
) -> torch.Tensor:
    """RMSNorm over the last dimension: ``x / sqrt(mean(x^2) + eps) * w (+ b)`` (Zhang & Sennrich 2019)."""
    return add_norm(x, None, weight, bias, kind="rms", eps=eps, out_dtype=out_dtype,
                    zero_centered_weight=zero_centered_weight)

"""torch.library custom ops around the add+norm kernels, with fake (meta) implementations and autograd.

``resnorm::add_norm_fwd`` returns ``(y, residual_out, mean, rstd)``; its autograd saves only
``residual_out``, the fp32 per-row ``mean``/``rstd``, the weight, the rowscale and the dropout seed
(never ``y``; ``x`` only when the rowscale needs a gradient or, with ``residual``, when
``residual_out`` is fp16: rows whose sum overflowed it are recomputed from them) and calls
``resnorm::add_norm_bwd``. Both ops are opaque to torch.compile: Dynamo and Inductor see their fake
implementations (shapes and dtypes only, symbolic in the leading dimensions), so a model using them
compiles with ``fullgraph=True`` and no recompiles across batch sizes; every scalar reaches the
kernels as a Python float (fp32 in Triton), never as an Inductor-specialised fp64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from resnorm.kernels import launch

__all__ = ["add_norm", "add_norm_fwd", "add_norm_bwd"]

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@torch.library.custom_op("resnorm::add_norm_fwd", mutates_args=())
def add_norm_fwd(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    rowscale: Tensor | None,
    seed: Tensor | None,
    kind: str,
    eps: float,
    residual_dtype: torch.dtype,
    out_dtype: torch.dtype,
    weight_offset: float,
    dropout_p: float,
    casting_mode: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fused forward: ``(y, residual_out, mean, rstd)``; mean is empty for ``kind="rms"``."""
    return launch.forward(x, residual, weight, bias, rowscale, seed, kind=kind, eps=eps,
                          residual_dtype=residual_dtype, out_dtype=out_dtype, weight_offset=weight_offset,
                          dropout_p=dropout_p, casting_mode=casting_mode)


@add_norm_fwd.register_fake
def _add_norm_fwd_fake(x, residual, weight, bias, rowscale, seed, kind, eps, residual_dtype, out_dtype,
                       weight_offset, dropout_p, casting_mode):
    y = x.new_empty(x.shape, dtype=out_dtype)
    stored = launch.stores_residual(x, residual, residual_dtype, dropout_p, rowscale is not None)
    residual_out = x.new_empty(x.shape if stored else (0,), dtype=residual_dtype)
    rstd = x.new_empty(x.shape[:-1], dtype=torch.float32)
    mean = x.new_empty((0,) if kind == "rms" else x.shape[:-1], dtype=torch.float32)
    return y, residual_out, mean, rstd


@torch.library.custom_op("resnorm::add_norm_bwd", mutates_args=())
def add_norm_bwd(
    dy: Tensor,
    d_residual_out: Tensor | None,
    residual_out: Tensor,
    x: Tensor | None,
    weight: Tensor | None,
    rowscale: Tensor | None,
    mean: Tensor,
    rstd: Tensor,
    seed: Tensor | None,
    residual: Tensor | None,
    check_overflow: bool,
    kind: str,
    eps: float,
    weight_offset: float,
    dropout_p: float,
    casting_mode: str,
    x_dtype: torch.dtype,
    residual_grad_dtype: torch.dtype | None,
    weight_grad: bool,
    bias_grad_dtype: torch.dtype | None,
    rowscale_grad_dtype: torch.dtype | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Fused backward: ``(dx, d_residual, d_weight, d_bias, d_rowscale)``; a gradient that is not
    computed comes back as an empty tensor (``d_residual`` too when it equals ``dx``)."""
    dx, dr, dw, db, drs = launch.backward(
        dy, d_residual_out, residual_out, x, weight, rowscale, mean, rstd, seed, residual, kind=kind, eps=eps,
        weight_offset=weight_offset, dropout_p=dropout_p, x_dtype=x_dtype,
        residual_grad_dtype=residual_grad_dtype, weight_grad=weight_grad, bias_grad_dtype=bias_grad_dtype,
        rowscale_grad_dtype=rowscale_grad_dtype, casting_mode=casting_mode, check_overflow=check_overflow)
    empty = dy.new_empty((0,), dtype=x_dtype)
    return (dx, dr if dr is not None else empty, dw if dw is not None else empty.clone(),
            db if db is not None else empty.clone(), drs if drs is not None else empty.clone())


@add_norm_bwd.register_fake
def _add_norm_bwd_fake(dy, d_residual_out, residual_out, x, weight, rowscale, mean, rstd, seed, residual,
                       check_overflow, kind, eps,
                       weight_offset, dropout_p, casting_mode, x_dtype, residual_grad_dtype, weight_grad,
                       bias_grad_dtype, rowscale_grad_dtype):
    n = residual_out.shape[-1]
    dx = dy.new_empty(residual_out.shape, dtype=x_dtype)
    if launch.stores_d_residual(residual_grad_dtype is not None, dropout_p, rowscale is not None, x_dtype,
                                residual_grad_dtype):
        dr = dy.new_empty(residual_out.shape, dtype=residual_grad_dtype)
    else:
        dr = dy.new_empty((0,), dtype=x_dtype)
    dw = dy.new_empty((n,), dtype=weight.dtype) if weight_grad else dy.new_empty((0,), dtype=x_dtype)
    db = dy.new_empty((n,), dtype=bias_grad_dtype) if bias_grad_dtype is not None else dy.new_empty(
        (0,), dtype=x_dtype)
    if rowscale_grad_dtype is not None:
        drs = dy.new_empty(residual_out.shape[:-1], dtype=rowscale_grad_dtype)
    else:
        drs = dy.new_empty((0,), dtype=x_dtype)
    return dx, dr, dw, db, drs


def _setup_context(ctx, inputs, output) -> None:
    (x, residual, weight, bias, rowscale, seed, kind, eps, residual_dtype, out_dtype, weight_offset,
     dropout_p, casting_mode) = inputs
    _, residual_out, mean, rstd = output
    if not launch.stores_residual(x, residual, residual_dtype, dropout_p, rowscale is not None):
        residual_out = x  # s = x: saved instead of a copy
    rowscale_grad = rowscale is not None and ctx.needs_input_grad[4]
    # x is needed for d_rowscale = sum_j ds_j * dropout(x)_j (residual_out cannot give it back) and, with
    # residual, for the rows whose fp16 residual_out overflowed (their fp32 sum is recomputed)
    ctx.check_overflow = launch.checks_overflow(x, residual, residual_dtype, dropout_p, rowscale is not None)
    ctx.save_for_backward(residual_out, x if rowscale_grad or ctx.check_overflow else None, weight, rowscale,
                          mean, rstd, seed, residual if ctx.check_overflow else None)
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zeros to read
    ctx.kind = kind
    ctx.eps = eps
    ctx.weight_offset = weight_offset
    ctx.dropout_p = dropout_p
    ctx.casting_mode = casting_mode
    ctx.x_dtype = x.dtype
    ctx.out_dtype = out_dtype
    ctx.residual_grad_dtype = residual.dtype if residual is not None else None
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.rowscale_grad_dtype = rowscale.dtype if rowscale_grad else None


def _backward(ctx, dy, d_residual_out, _d_mean, _d_rstd):
    residual_out, x, weight, rowscale, mean, rstd, seed, residual = ctx.saved_tensors
    needs = ctx.needs_input_grad
    if d_residual_out is not None and d_residual_out.numel() == 0:  # the unstored residual_out
        d_residual_out = None
    if dy is None:
        dy = torch.zeros(residual_out.shape, dtype=ctx.out_dtype, device=residual_out.device)
    weight_grad = weight is not None and needs[2]
    bias_grad_dtype = ctx.bias_dtype if needs[3] else None
    residual_grad_dtype = ctx.residual_grad_dtype if needs[1] else None
    rowscale_grad_dtype = ctx.rowscale_grad_dtype if needs[4] else None
    dx, dr, dw, db, drs = torch.ops.resnorm.add_norm_bwd(
        dy, d_residual_out, residual_out, x, weight, rowscale, mean, rstd, seed, residual, ctx.check_overflow,
        ctx.kind, ctx.eps,
        ctx.weight_offset, ctx.dropout_p, ctx.casting_mode, ctx.x_dtype, residual_grad_dtype, weight_grad,
        bias_grad_dtype, rowscale_grad_dtype)
    d_residual = None
    if residual_grad_dtype is not None:
        stored = launch.stores_d_residual(True, ctx.dropout_p, rowscale is not None, ctx.x_dtype,
                                          residual_grad_dtype)
        d_residual = dr if stored else dx
    return (dx, d_residual, dw if weight_grad else None, db if bias_grad_dtype is not None else None,
            drs if rowscale_grad_dtype is not None else None, None, None, None, None, None, None, None, None)


torch.library.register_autograd("resnorm::add_norm_fwd", _backward, setup_context=_setup_context)


def add_norm(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    kind: str,
    eps: float,
    residual_dtype: torch.dtype,
    out_dtype: torch.dtype,
    zero_centered_weight: bool = False,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
    rowscale: Tensor | None = None,
    casting_mode: str = "fp32",
    weight_offset: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Same contract as ``resnorm.functional.add_norm_reference`` on validated arguments: returns
    ``(y, residual_out)``, differentiable in x, residual, weight, bias and rowscale.

    Dropout draws one int64 seed per call (from ``generator`` or the default generator of x's device,
    so ``torch.manual_seed`` makes runs reproducible); the mask is regenerated from it in the backward.
    A float64 ``rowscale`` is used in fp32 (the kernels' precision); its gradient comes back in float64.
    ``w = weight + weight_offset`` (``zero_centered_weight``: an offset of 1), the offset in fp32.
    """
    for name, t in (("x", x), ("residual", residual), ("weight", weight), ("bias", bias)):
        if t is not None and t.dtype not in _KERNEL_DTYPES:
            raise TypeError(f"the Triton kernels take float32, float16 or bfloat16 tensors; {name} is {t.dtype} "
                            "(use RESNORM_BACKEND=torch)")
    if not (math.isfinite(eps) and eps > 0):  # checked for direct callers too
        raise ValueError(f"eps must be a finite number > 0; got {eps!r}")
    weight_offset = 1.0 if zero_centered_weight else float(weight_offset)
    if not -math.inf < weight_offset < math.inf:  # compares, not math.isfinite: Dynamo traces these
        raise ValueError(f"weight_offset must be a finite number; got {weight_offset!r}")
    if rowscale is not None and rowscale.dtype not in _KERNEL_DTYPES:
        rowscale = rowscale.float()
    seed = None
    if dropout_p > 0.0:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
        seed_device = generator.device if generator is not None else x.device
        seed = torch.randint(0, 2**62, (1,), dtype=torch.int64, device=seed_device, generator=generator)
        seed = seed.to(x.device)
    y, residual_out, _, _ = torch.ops.resnorm.add_norm_fwd(
        x, residual, weight, bias, rowscale, seed, kind, float(eps), residual_dtype, out_dtype,
        weight_offset if weight is not None else 0.0, float(dropout_p), casting_mode)
    if not launch.stores_residual(x, residual, residual_dtype, dropout_p, rowscale is not None):
        residual_out = x  # as the PyTorch path: functional.add_norm copies it only if it returns it
    return y, residual_out

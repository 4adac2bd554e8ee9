"""Launch configuration and host-side launchers for the add+norm Triton kernels.

Two copies of ``triton_kernels.py`` are used: the compiled one for CUDA tensors and an interpreted
one (``TRITON_INTERPRET=1`` in effect while it is imported) for CPU tensors. Triton 3.x reads that
flag when ``@triton.jit`` decorates a function (``triton.knobs.runtime.interpret``), not at launch,
so setting it after import would change nothing: the interpreted copy is built by importing the
file a second time under the flag, whatever the user's environment says.

Tensors reach the launchers as 2-D ``(M, N)`` views whose last dimension is contiguous; rows may be
strided (``stride(0)`` is passed to the kernels), so such views are never copied.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

import torch

_KERNEL_FILE = Path(__file__).with_name("triton_kernels.py")
_INTERPRETED_NAME = "resnorm.kernels._triton_kernels_interpreted"

@dataclass(frozen=True)
class GpuTuning:
    """Launch heuristics for CUDA (the interpreter uses its own). Defaults are reasoned, not measured
    (benchmarks/NOTES.md); ``resnorm bench --tune`` times alternatives, ``tuned(...)`` applies them."""

    max_single_block_n_fwd: int = 16384  # widest row (elements) one forward program holds in registers
    max_single_block_n_bwd: int = 16384  # the same for the backward
    fwd_tile: int = 4096  # elements per forward program (several short rows per program)
    fwd_warp_elems: int = 512  # forward elements per warp: num_warps = tile / this, in [2, 16]
    bwd_tile: int = 2048
    bwd_warp_elems: int = 512  # backward: num_warps in [2, 32]
    bwd_warps_per_sm: int = 16  # persistent backward: resident warps per SM (register-limited)
    # Wide rows. Forward: a persistent grid; few rows in flight keep the second pass's re-read in L2
    # (132 rows x 256 KB of x + residual at N = 65536 bf16 = 33 MB < 50 MB on an H100).
    wide_fwd_block_n: int = 8192
    wide_fwd_warps: int = 16
    wide_fwd_programs_per_sm: float = 1.0  # < 1 at N = 262144 keeps the rows in flight within L2
    wide_bwd_block_n: int = 4096
    wide_bwd_warps: int = 8
    wide_bwd_programs_per_sm: int = 4


TUNING = GpuTuning()


@contextlib.contextmanager
def tuned(**changes: float) -> Iterator[GpuTuning]:
    """Use ``GpuTuning`` fields ``changes`` inside a ``with`` block (for tuning sweeps)."""
    global TUNING
    unknown = set(changes) - set(GpuTuning.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown tuning field(s) {sorted(unknown)}; "
                         f"expected among {sorted(GpuTuning.__dataclass_fields__)}")
    previous = TUNING
    TUNING = replace(previous, **changes)
    try:
        yield TUNING
    finally:
        TUNING = previous


_max_block_n_override: int | None = None


@contextlib.contextmanager
def force_max_block_n(n: int) -> Iterator[None]:
    """Test hook: rows wider than ``n`` take the column-loop path, with column blocks of ``n``."""
    global _max_block_n_override
    if n < 1 or n & (n - 1):
        raise ValueError(f"n must be a power of two >= 1; got {n}")
    previous, _max_block_n_override = _max_block_n_override, n
    try:
        yield
    finally:
        _max_block_n_override = previous


# ----------------------------------------------------------------------------------------------
# the two copies of the kernels


@contextlib.contextmanager
def _interpret_flag_on() -> Iterator[None]:
    import triton

    previous_env = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    runtime = getattr(getattr(triton, "knobs", None), "runtime", None)
    explicit = runtime.__dict__.pop("interpret", None) if runtime is not None else None
    try:
        yield
    finally:
        if previous_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = previous_env
        if explicit is not None:
            runtime.__dict__["interpret"] = explicit


@functools.cache
def _interpreted_module() -> ModuleType:
    from triton.runtime.interpreter import InterpretedFunction

    spec = importlib.util.spec_from_file_location(_INTERPRETED_NAME, _KERNEL_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_INTERPRETED_NAME] = module
    with _interpret_flag_on():
        spec.loader.exec_module(module)
    if not isinstance(module.add_norm_fwd_kernel, InterpretedFunction):
        raise RuntimeError("could not build the interpreted Triton kernels (TRITON_INTERPRET had no effect)")
    return module


def kernels_for(device: torch.device) -> ModuleType:
    """The compiled kernels for CUDA tensors, the interpreted ones for every other device."""
    if device.type == "cuda":
        from resnorm.kernels import triton_kernels

        return triton_kernels
    return _interpreted_module()


def _on_tensor_device(launcher):
    """Triton launches on the current CUDA device: make it the first tensor argument's device."""

    @functools.wraps(launcher)
    def wrapped(first: torch.Tensor, *args, **kwargs):
        if first.device.type != "cuda":
            return launcher(first, *args, **kwargs)
        with torch.cuda.device(first.device):
            return launcher(first, *args, **kwargs)

    return wrapped


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _programs_budget(device: torch.device) -> int:
    """How many programs fill the device; small on the interpreter (programs run one after another)."""
    if device.type != "cuda":
        return 2
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


# ----------------------------------------------------------------------------------------------
# configurations


@dataclass(frozen=True)
class ForwardConfig:
    block_m: int
    block_n: int
    single_block: bool
    num_warps: int
    programs: int  # grid size; wide rows: a persistent grid, each program walks rows p, p + P, ...


@dataclass(frozen=True)
class BackwardConfig:
    block_m: int
    block_n: int
    single_block: bool
    num_warps: int
    groups: int  # G: programs along the rows (each walks every G-th row tile)
    col_blocks: int  # C: programs along the columns (1 when a row fits in one program)


def forward_config(m: int, n: int, device: torch.device) -> ForwardConfig:
    """Whole rows in one program up to ``max_single_block_n_fwd``, several short rows per program so
    that a program moves at least ``fwd_tile`` elements (interpreter: 16K, fewer and larger programs).
    Wider rows: a persistent grid looping over column blocks."""
    tune, on_gpu = TUNING, device.type == "cuda"
    limit = _max_block_n_override or tune.max_single_block_n_fwd
    block_n = _next_pow2(n)
    if block_n > limit:
        wide = limit if _max_block_n_override else min(limit, tune.wide_fwd_block_n)
        per_sm = tune.wide_fwd_programs_per_sm if on_gpu else 1
        programs = max(1, min(m, int(_programs_budget(device) * per_sm)))
        return ForwardConfig(1, wide, False, tune.wide_fwd_warps if on_gpu else 1, programs)
    tile = tune.fwd_tile if on_gpu else 16384
    block_m = max(1, min(tile // block_n, 16 if on_gpu else 256, _next_pow2(max(m, 1))))
    num_warps = min(16, max(2, block_m * block_n // tune.fwd_warp_elems)) if on_gpu else 1
    return ForwardConfig(block_m, block_n, True, num_warps, -(-m // block_m))


def backward_config(m: int, n: int, device: torch.device) -> BackwardConfig:
    """Persistent grid: G x C programs, G a multiple of the SM count where the rows allow it, sized so
    that all programs are resident at once."""
    tune, on_gpu = TUNING, device.type == "cuda"
    limit = _max_block_n_override or tune.max_single_block_n_bwd
    block_n = _next_pow2(n)
    budget = _programs_budget(device)
    if block_n > limit:
        wide = limit if _max_block_n_override else min(limit, tune.wide_bwd_block_n)
        col_blocks = -(-n // wide)
        target = budget * tune.wide_bwd_programs_per_sm if on_gpu else budget
        groups = max(1, min(m, target // col_blocks))
        return BackwardConfig(1, wide, False, tune.wide_bwd_warps if on_gpu else 1, groups, col_blocks)
    tile = tune.bwd_tile if on_gpu else 16384
    block_m = max(1, min(tile // block_n, 16 if on_gpu else 256, _next_pow2(max(m, 1))))
    if on_gpu:
        num_warps = min(32, max(2, block_m * block_n // tune.bwd_warp_elems))
        per_sm = max(1, tune.bwd_warps_per_sm // num_warps)
    else:
        num_warps, per_sm = 1, 1
    groups = max(1, min(-(-m // block_m), budget * per_sm))
    return BackwardConfig(block_m, block_n, True, num_warps, groups, 1)


# ----------------------------------------------------------------------------------------------
# launchers


def rows_view(t: torch.Tensor) -> torch.Tensor:
    """``t`` as (M, N) with a contiguous last dimension; a view whenever strides allow it (rows may be
    strided, stride 0 included: an expanded tensor is read in place, never past its storage)."""
    t2 = t.reshape(-1, t.shape[-1]) if t.dim() != 2 else t
    if t2.shape[-1] > 1 and t2.stride(-1) != 1:
        t2 = t2.contiguous()
    return t2


_INT32_MAX = 2**31 - 1


def vector_view(t: torch.Tensor | None, length: int) -> tuple[torch.Tensor | None, int]:
    """A 1-D tensor of ``length`` elements (weight, bias: N; rowscale: M, any shape) and its element
    stride. Any stride is read in place (0 for an expanded tensor, 2 for ``w[::2]``, a column of a
    transposed matrix); a copy only where the strides cannot be expressed as one, or where
    ``(length - 1) * stride`` would not fit the kernels' int32 column offsets."""
    if t is None:
        return None, 0
    v = t.reshape(length) if t.dim() != 1 else t
    stride = v.stride(0) if length > 1 else 1
    if stride < 0 or (length - 1) * stride > _INT32_MAX:
        v, stride = v.contiguous(), 1
    return v, stride


def llama_cast(casting_mode: str, residual_dtype: torch.dtype) -> bool:
    """"llama" rounds the normalized value to residual_dtype: a no-op unless that is below fp32."""
    return casting_mode == "llama" and residual_dtype in (torch.float16, torch.bfloat16)


@_on_tensor_device
def forward(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    rowscale: torch.Tensor | None,
    seed: torch.Tensor | None,
    *,
    kind: str,
    eps: float,
    residual_dtype: torch.dtype,
    out_dtype: torch.dtype,
    dropout_p: float,
    casting_mode: str = "fp32",
    weight_offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns ``(y, residual_out, mean, rstd)``; y and residual_out have x's shape (contiguous),
    mean and rstd are fp32 of shape ``x.shape[:-1]`` (mean is empty for RMSNorm; for LayerNorm it is
    the mean of ``s - s[..., :1]``, the row shifted by its first element). residual_out is an empty
    tensor when it would equal x (``stores_residual`` is False): nothing is written for it.
    ``weight_offset``: w = weight + weight_offset (a runtime fp32 argument; 0 compiles it out)."""
    n = x.shape[-1]
    store_residual = stores_residual(x, residual, residual_dtype, dropout_p, rowscale is not None)
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    residual_out = torch.empty(x.shape if store_residual else (0,), dtype=residual_dtype, device=x.device)
    m = math.prod(x.shape[:-1])
    is_rms = kind == "rms"
    mean = torch.empty(0 if is_rms else x.shape[:-1], dtype=torch.float32, device=x.device)
    rstd = torch.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
    if x.numel() == 0:
        return y, residual_out, mean, rstd
    x2 = rows_view(x)
    r2 = rows_view(residual) if residual is not None else x2
    w1, stride_w = vector_view(weight, n)
    b1, stride_b = vector_view(bias, n)
    rs1, stride_rs = vector_view(rowscale, m)
    y2 = y.view(m, n)
    ro2 = residual_out.view(m, n) if store_residual else x2  # not stored: x has residual_dtype, never written
    has_dropout = dropout_p > 0.0
    cfg = forward_config(m, n, x.device)
    kernels = kernels_for(x.device)
    grid = (cfg.programs,)
    kernels.add_norm_fwd_kernel[grid](
        x2, r2, w1 if w1 is not None else x2, b1 if b1 is not None else x2, rs1 if rs1 is not None else rstd,
        y2, ro2, mean if not is_rms else rstd, rstd, seed if has_dropout else rstd,
        x2.stride(0), r2.stride(0), stride_w, stride_b, stride_rs, y2.stride(0), ro2.stride(0),
        m, n, float(eps), float(dropout_p), 1.0 / (1.0 - dropout_p), float(weight_offset),
        IS_RMS=is_rms, HAS_RESIDUAL=residual is not None, HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None, HAS_ROWSCALE=rowscale is not None,
        HAS_WEIGHT_OFFSET=has_weight_offset(weight, weight_offset),
        HAS_DROPOUT=has_dropout, STORE_RESIDUAL=store_residual,
        CHECK_OVERFLOW=checks_overflow(x, residual, residual_dtype, dropout_p, rowscale is not None),
        LLAMA_CAST=llama_cast(casting_mode, residual_dtype),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, SINGLE_BLOCK=cfg.single_block,
        SOFT_BF16=x.device.type != "cuda", num_warps=cfg.num_warps,
        # no fused multiply-add in s = x * rowscale + residual: residual_out stays bitwise the PyTorch path's
        **({"enable_fp_fusion": False} if rowscale is not None else {}),
    )
    return y, residual_out, mean, rstd


def checks_overflow(x: torch.Tensor, residual: torch.Tensor | None, residual_dtype: torch.dtype,
                    dropout_p: float, has_rowscale: bool) -> bool:
    """True when residual_out is stored in fp16 (bf16 has fp32's range): the forward flags rows whose
    stored sum overflowed and the backward recomputes their fp32 sum from ``x`` and ``residual``, which
    the autograd then keeps for it."""
    return residual_dtype == torch.float16 and stores_residual(x, residual, residual_dtype, dropout_p,
                                                               has_rowscale)


def has_weight_offset(weight: torch.Tensor | None, weight_offset: float) -> bool:
    """The kernels add ``weight_offset`` to the weight only when there is a weight and it is nonzero."""
    return weight is not None and weight_offset != 0.0


def stores_residual(x: torch.Tensor, residual: torch.Tensor | None, residual_dtype: torch.dtype,
                    dropout_p: float, has_rowscale: bool = False) -> bool:
    """False when residual_out = dropout(x) * rowscale + residual would be x itself: the forward then
    writes nothing for it and the backward reads x (layer_norm / rms_norm calls pay for no copy)."""
    return residual is not None or dropout_p > 0.0 or has_rowscale or residual_dtype != x.dtype


def stores_d_residual(has_residual: bool, dropout_p: float, has_rowscale: bool, x_dtype: torch.dtype,
                      residual_dtype: torch.dtype | None) -> bool:
    """False when d_residual would equal dx (no dropout, no rowscale, same dtype): dx serves both."""
    return has_residual and (dropout_p > 0.0 or has_rowscale or residual_dtype != x_dtype)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _sum_partials(kernels: ModuleType, partial: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    groups, n = partial.shape
    out = torch.empty(n, dtype=dtype, device=partial.device)
    block_n = min(1024, _next_pow2(n))
    kernels.sum_partials_kernel[(triton_cdiv(n, block_n),)](
        partial, out, groups, n, BLOCK_N=block_n, SOFT_BF16=partial.device.type != "cuda", num_warps=4)
    return out


@_on_tensor_device
def backward(
    dy: torch.Tensor,
    d_residual_out: torch.Tensor | None,
    residual_out: torch.Tensor,
    x: torch.Tensor | None,
    weight: torch.Tensor | None,
    rowscale: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    seed: torch.Tensor | None,
    residual: torch.Tensor | None = None,
    *,
    kind: str,
    eps: float,
    dropout_p: float,
    x_dtype: torch.dtype,
    residual_grad_dtype: torch.dtype | None,
    weight_grad: bool,
    bias_grad_dtype: torch.dtype | None,
    rowscale_grad_dtype: torch.dtype | None = None,
    casting_mode: str = "fp32",
    weight_offset: float = 0.0,
    check_overflow: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Returns ``(dx, d_residual, d_weight, d_bias, d_rowscale)``.

    ``d_residual`` is None when it equals ``dx`` (no dropout or rowscale, same dtype: the caller hands
    ``dx`` to both inputs and one tensor write is saved) or when there is no residual
    (``residual_grad_dtype is None``). ``d_weight`` / ``d_bias`` / ``d_rowscale`` are None when not
    asked for; ``d_rowscale`` (``rowscale_grad_dtype`` given) needs ``x``, the forward's input.
    ``weight_offset`` enters ``w = weight + weight_offset`` only (``d_weight`` does not depend on it).
    ``check_overflow`` (``checks_overflow`` was true in the forward): ``x`` and ``residual`` are the
    forward's inputs, read for the rows whose fp16 sum overflowed.
    """
    n = residual_out.shape[-1]
    lead = residual_out.shape[:-1]
    m = math.prod(lead)
    device = residual_out.device
    has_dropout = dropout_p > 0.0
    has_rowscale = rowscale is not None
    store_dr = stores_d_residual(residual_grad_dtype is not None, dropout_p, has_rowscale, x_dtype,
                                 residual_grad_dtype)
    compute_drs = rowscale_grad_dtype is not None
    dx = torch.empty(residual_out.shape, dtype=x_dtype, device=device)
    dr = torch.empty(residual_out.shape, dtype=residual_grad_dtype, device=device) if store_dr else None
    weight_dtype = weight.dtype if weight is not None else None
    if residual_out.numel() == 0:
        dw = torch.zeros(n, dtype=weight_dtype, device=device) if weight_grad else None
        db = torch.zeros(n, dtype=bias_grad_dtype, device=device) if bias_grad_dtype is not None else None
        drs = torch.zeros(lead, dtype=rowscale_grad_dtype, device=device) if compute_drs else None
        return dx, dr, dw, db, drs
    is_rms = kind == "rms"
    dy2 = rows_view(dy)
    ro2 = rows_view(residual_out)
    dro2 = rows_view(d_residual_out) if d_residual_out is not None else dy2
    x2 = rows_view(x) if compute_drs or check_overflow else ro2
    r2 = rows_view(residual) if check_overflow and residual is not None else x2
    overflow = dict(CHECK_OVERFLOW=check_overflow, HAS_RESIDUAL=check_overflow and residual is not None)
    w1, stride_w = vector_view(weight, n)
    rs1, stride_rs = vector_view(rowscale, m)
    dx2 = dx.view(m, n)
    dr2 = dr.view(m, n) if dr is not None else dx2
    cfg = backward_config(m, n, device)
    kernels = kernels_for(device)
    # residual_out rounded below fp32: use the statistics of the stored s (see the kernels' docstrings)
    recompute_stats = residual_out.dtype != torch.float32
    offset_on = has_weight_offset(weight, weight_offset)
    mean_arg = mean if not is_rms else rstd
    shift = rstd
    if cfg.single_block:
        c1 = c2 = rstd
    else:
        shift, c1, c2, mean_bwd, rstd_bwd = torch.empty((5, m), dtype=torch.float32, device=device).unbind(0)
        kernels.add_norm_bwd_row_terms_kernel[(m,)](
            dy2, ro2, w1 if w1 is not None else ro2, mean_arg, rstd, shift, mean_bwd, rstd_bwd, c1, c2,
            x2, r2, rs1 if rs1 is not None else rstd, seed if has_dropout else rstd,
            dy2.stride(0), ro2.stride(0), stride_w, x2.stride(0), r2.stride(0), stride_rs,
            m, n, float(eps), float(weight_offset), float(dropout_p), 1.0 / (1.0 - dropout_p),
            IS_RMS=is_rms, HAS_WEIGHT=weight is not None, HAS_WEIGHT_OFFSET=offset_on,
            RECOMPUTE_STATS=recompute_stats, HAS_ROWSCALE=has_rowscale, HAS_DROPOUT=has_dropout,
            BLOCK_N=cfg.block_n, num_warps=cfg.num_warps, **overflow,
        )
        mean_arg, rstd = mean_bwd, rstd_bwd
    compute_dw = weight_grad
    compute_db = bias_grad_dtype is not None
    dw_part = torch.empty((cfg.groups, n), dtype=torch.float32, device=device) if compute_dw else rstd
    db_part = torch.empty((cfg.groups, n), dtype=torch.float32, device=device) if compute_db else rstd
    drs_part = torch.empty((cfg.col_blocks, m), dtype=torch.float32, device=device) if compute_drs else rstd
    kernels.add_norm_bwd_kernel[(cfg.groups, cfg.col_blocks)](
        dy2, dro2, ro2, x2, r2, w1 if w1 is not None else ro2, rs1 if rs1 is not None else rstd,
        mean_arg, rstd, shift, c1, c2, seed if has_dropout else rstd, dx2, dr2, dw_part, db_part, drs_part,
        dy2.stride(0), dro2.stride(0), ro2.stride(0), x2.stride(0), r2.stride(0), stride_w, stride_rs,
        dx2.stride(0), dr2.stride(0),
        m, n, float(eps), float(dropout_p), 1.0 / (1.0 - dropout_p), float(weight_offset), **overflow,
        IS_RMS=is_rms, HAS_DRO=d_residual_out is not None, HAS_WEIGHT=weight is not None,
        HAS_ROWSCALE=has_rowscale, HAS_WEIGHT_OFFSET=offset_on, HAS_DROPOUT=has_dropout,
        STORE_DR=store_dr, COMPUTE_DW=compute_dw, COMPUTE_DB=compute_db, COMPUTE_DRS=compute_drs,
        RECOMPUTE_STATS=recompute_stats, LLAMA_CAST=llama_cast(casting_mode, residual_out.dtype),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, SINGLE_BLOCK=cfg.single_block,
        SOFT_BF16=device.type != "cuda", num_warps=cfg.num_warps,
    )
    dw = _sum_partials(kernels, dw_part, weight_dtype) if compute_dw else None
    db = _sum_partials(kernels, db_part, bias_grad_dtype) if compute_db else None
    drs = None
    if compute_drs:  # C partials per row (C = 1 for rows that fit one program), summed in order
        drs = (drs_part[0] if cfg.col_blocks == 1 else drs_part.sum(0)).to(rowscale_grad_dtype).view(lead)
    return dx, dr, dw, db, drs

"""Triton kernels for fused residual add + LayerNorm / RMSNorm, forward and backward.

For one row ``x`` of length N (math in fp32)::

    s    = dropout(x) * rowscale + residual    (residual_out = s, stored in residual_dtype)
    xhat = (s - mean) * rstd                   LayerNorm (Ba et al. 2016); mean = 0 for RMSNorm
    rstd = 1 / sqrt(mean((s - mean)^2) + eps)  RMSNorm (Zhang & Sennrich 2019) has no centering
    y    = xhat * w + b                        w = weight + weight_offset (1 for Gemma's zero-centered
                                               weight); "llama": xhat rounded to residual_dtype first

LayerNorm's mean and variance are those of the row shifted by its first element (exact for a
constant row; nothing lost to the rounding of a large mean). Backward, with ``wdy = w * dy``,
``c1 = mean(xhat * wdy)`` and ``c2 = mean(wdy)`` (0 for RMSNorm)::

    ds = rstd * (wdy - xhat * c1 - c2) + d_residual_out
    dx = ds * rowscale * keep / (1 - p)      d_residual = ds      d_rowscale = sum_cols(ds * dropout(x))
    dw = sum_rows(dy * xhat)                 db = sum_rows(dy)

This module is imported twice by ``resnorm.kernels.launch``: once as-is (compiled kernels for CUDA)
and once with ``TRITON_INTERPRET=1`` in effect (the interpreter, for CPU tensors), so it must stay a
self-contained file of ``@triton.jit`` functions. Only APIs of Triton 3.6 or older are used.

Every row offset is computed in int64 (tensors over 2^31 elements); columns are contiguous
(``stride(-1) == 1``) and rows may have any stride (0 included). Weight, bias and rowscale are
read with their own element stride (0 for an expanded tensor). Dropout keeps an element when
``philox(seed, row * N + col) >= p``: the backward regenerates the same mask from the seed.
"""

import triton
import triton.language as tl

# Only Triton builtins and this file's own @triton.jit helpers are called from the kernels: the
# library's @jit functions (tl.sum, tl.zeros, tl.rand, tl.cdiv) were decorated when triton was
# imported and cannot run inside the interpreted copy. tl.reduce with the library's sum combiner is
# a builtin (and the interpreter's numpy fast path).
_sum_combine = tl.standard._sum_combine


@triton.jit
def _cast(x, DTYPE: tl.constexpr, SOFT_BF16: tl.constexpr):
    """x.to(DTYPE), rounding to nearest even. SOFT_BF16 (the interpreter, whose fp32 -> bf16 cast
    truncates) does the bf16 rounding on the bits; compiled kernels use the hardware conversion."""
    if SOFT_BF16 and DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + (((bits >> 16) & 1) + 0x7FFF)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(DTYPE)


@triton.jit
def _keep_mask(seed, offsets, dropout_p):
    """Dropout's keep mask: u >= p with u uniform in [0, 1) from Philox4x32-10 (Salmon et al. 2011)
    keyed by the 64-bit seed, counter = the element's logical int64 offset (row * N + col)."""
    k0 = seed.to(tl.uint32)
    k1 = (seed >> 32).to(tl.uint32)
    c0 = offsets.to(tl.uint32)
    c1 = (offsets >> 32).to(tl.uint32)
    c2 = c0 * 0
    c3 = c0 * 0
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, 0xD2511F53)
        hi1 = tl.umulhi(c2, 0xCD9E8D57)
        lo0 = c0 * 0xD2511F53
        lo1 = c2 * 0xCD9E8D57
        c0 = hi1 ^ c1 ^ k0
        c2 = hi0 ^ c3 ^ k1
        c1 = lo1
        c3 = lo0
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    u = (c0 >> 8).to(tl.float32) * 5.9604644775390625e-08  # 2^-24: 24 random bits
    return u >= dropout_p


@triton.jit
def _load_sum(X, R, seed, rs, rows64, cols, mask, stride_x, stride_r, N, dropout_p, dropout_scale,
              HAS_RESIDUAL: tl.constexpr, HAS_ROWSCALE: tl.constexpr, HAS_DROPOUT: tl.constexpr):
    """s = dropout(x) * rowscale + residual on a (rows, cols) tile, in fp32 (0 where masked)."""
    s = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_DROPOUT:
        keep = _keep_mask(seed, rows64[:, None] * N + cols[None, :], dropout_p)
        s = tl.where(keep, s * dropout_scale, 0.0)
    if HAS_ROWSCALE:
        s = s * rs[:, None]
    if HAS_RESIDUAL:
        s += tl.load(R + rows64[:, None] * stride_r + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    return s


@triton.jit
def _overflowed_sum(s, flag, X, R, seed, rs, rows64, cols, mask, stride_x, stride_r, N, dropout_p, dropout_scale,
                    HAS_RESIDUAL: tl.constexpr, HAS_ROWSCALE: tl.constexpr, HAS_DROPOUT: tl.constexpr):
    """The backward's s on a (rows, cols) tile: the stored ``s`` (fp16 residual_out, as fp32) except on
    the rows ``flag``ged by the forward (their stored sum overflowed fp16), whose fp32 sum is recomputed
    from the inputs; the loads are masked to those rows, so unflagged rows cost no extra traffic."""
    s_in = _load_sum(X, R, seed, rs, rows64, cols, mask & flag[:, None], stride_x, stride_r, N, dropout_p,
                     dropout_scale, HAS_RESIDUAL, HAS_ROWSCALE, HAS_DROPOUT)
    return tl.where(flag[:, None], s_in, s)


@triton.jit
def _load_weight(W, cols, col_mask, stride_w, weight_offset, HAS_WEIGHT_OFFSET: tl.constexpr):
    """w = weight + weight_offset in fp32 (weight of any element stride, 0 included); without
    HAS_WEIGHT_OFFSET the offset (0) is not added at all."""
    w = tl.load(W + cols * stride_w, mask=col_mask, other=0.0).to(tl.float32)
    if HAS_WEIGHT_OFFSET:
        w += weight_offset
    return w


@triton.jit
def _affine(xhat, W, B, cols, col_mask, stride_w, stride_b, weight_offset, HAS_WEIGHT: tl.constexpr,
            HAS_BIAS: tl.constexpr, HAS_WEIGHT_OFFSET: tl.constexpr, LLAMA_CAST: tl.constexpr,
            ROUND_DTYPE: tl.constexpr, SOFT_BF16: tl.constexpr):
    """y = xhat * w + b in fp32; LLAMA_CAST rounds xhat to ROUND_DTYPE (the residual stream's) first."""
    y = xhat
    if LLAMA_CAST:
        y = _cast(xhat, ROUND_DTYPE, SOFT_BF16).to(tl.float32)
    if HAS_WEIGHT:
        y = y * _load_weight(W, cols, col_mask, stride_w, weight_offset, HAS_WEIGHT_OFFSET)[None, :]
    if HAS_BIAS:
        y += tl.load(B + cols * stride_b, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    return y


@triton.jit
def _count_overflow(ro, mask):
    """Per row: how many stored residual values are inf or NaN (x - x is then NaN, never 0)."""
    ro = ro.to(tl.float32)
    return tl.reduce(tl.where(mask & (ro - ro != 0.0), 1.0, 0.0), 1, _sum_combine)


@triton.jit
def add_norm_fwd_kernel(
    X, R, W, B, RS, Y, RO, Mean, Rstd, Seed,
    stride_x, stride_r, stride_w, stride_b, stride_rs, stride_y, stride_ro,
    M, N, eps, dropout_p, dropout_scale, weight_offset,
    IS_RMS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_ROWSCALE: tl.constexpr, HAS_WEIGHT_OFFSET: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    STORE_RESIDUAL: tl.constexpr, CHECK_OVERFLOW: tl.constexpr, LLAMA_CAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE_BLOCK: tl.constexpr, SOFT_BF16: tl.constexpr,
):
    """One program per tile of BLOCK_M rows. SINGLE_BLOCK: the whole row fits in BLOCK_N columns.
    STORE_RESIDUAL is off when residual_out would equal x (no residual, dropout or rowscale, same
    dtype); RO then points at X (never written) so that RO's dtype is always residual_dtype.

    LayerNorm statistics are taken on the row shifted by its first element, ``d = s - s[0]``:
    ``Mean`` stores ``mean(d)`` and ``xc = d - mean(d)``. A constant row gives ``xc = 0`` exactly
    (y = bias, as torch.nn), and a row with a large mean loses nothing to the rounding of its mean.

    CHECK_OVERFLOW (residual_out stored in fp16): y is computed from the fp32 sum as always (finite);
    a row whose stored sum overflows fp16 is flagged for the backward by storing ``-rstd``: the
    backward then recomputes that row's sum from the inputs instead of reading the stored inf.

    Wide rows (not SINGLE_BLOCK, BLOCK_M == 1): two passes over column blocks; the first writes
    residual_out and accumulates the statistics (per-lane Welford on the shifted row, merged with
    Chan et al.'s formula, for LayerNorm; a sum of squares for RMSNorm); the second recomputes s from
    the inputs (the same bytes the program just read, likely still in L2) and writes y.
    """
    pid = tl.program_id(0)
    seed = 0
    if HAS_DROPOUT:
        seed = tl.load(Seed)
    if SINGLE_BLOCK:
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = rows < M
        rows64 = rows.to(tl.int64)
        cols = tl.arange(0, BLOCK_N)
        col_mask = cols < N
        mask = row_mask[:, None] & col_mask[None, :]
        rs = 0.0
        if HAS_ROWSCALE:
            rs = tl.load(RS + rows64 * stride_rs, mask=row_mask, other=0.0).to(tl.float32)
        s = _load_sum(X, R, seed, rs, rows64, cols, mask, stride_x, stride_r, N, dropout_p, dropout_scale,
                      HAS_RESIDUAL, HAS_ROWSCALE, HAS_DROPOUT)
        if STORE_RESIDUAL:
            ro = _cast(s, RO.dtype.element_ty, SOFT_BF16)
            tl.store(RO + rows64[:, None] * stride_ro + cols[None, :], ro, mask=mask)
            if CHECK_OVERFLOW:
                overflow = _count_overflow(ro, mask)
        if IS_RMS:
            xc = s
        else:
            shift = tl.reduce(tl.where(cols[None, :] == 0, s, 0.0), 1, _sum_combine)
            d = tl.where(mask, s - shift[:, None], 0.0)
            mean = tl.reduce(d, 1, _sum_combine) / N
            tl.store(Mean + rows64, mean, mask=row_mask)
            xc = tl.where(mask, d - mean[:, None], 0.0)
        rstd = tl.rsqrt(tl.reduce(xc * xc, 1, _sum_combine) / N + eps)
        if CHECK_OVERFLOW:  # the row's flag for the backward: a negative rstd
            tl.store(Rstd + rows64, tl.where(overflow > 0.0, -rstd, rstd), mask=row_mask)
        else:
            tl.store(Rstd + rows64, rstd, mask=row_mask)
        y = _affine(xc * rstd[:, None], W, B, cols, col_mask, stride_w, stride_b, weight_offset, HAS_WEIGHT,
                    HAS_BIAS, HAS_WEIGHT_OFFSET, LLAMA_CAST, RO.dtype.element_ty, SOFT_BF16)
        tl.store(Y + rows64[:, None] * stride_y + cols[None, :], _cast(y, Y.dtype.element_ty, SOFT_BF16), mask=mask)
    else:
        # wide rows: BLOCK_M == 1. Persistent: program p handles rows p, p + P, ... so that few rows are
        # in flight at once and the second pass re-reads them from L2, not from device memory.
        for row_start in range(pid, M, tl.num_programs(0)):
            rows = row_start + tl.arange(0, BLOCK_M)
            row_mask = rows < M
            rows64 = rows.to(tl.int64)
            rs = 0.0
            if HAS_ROWSCALE:
                rs = tl.load(RS + rows64 * stride_rs, mask=row_mask, other=0.0).to(tl.float32)
            shift = tl.full([BLOCK_M], 0.0, tl.float32)
            if not IS_RMS:  # the row's first element (one element loaded)
                first = tl.arange(0, BLOCK_N)
                first_mask = row_mask[:, None] & (first < 1)[None, :]
                s0 = _load_sum(X, R, seed, rs, rows64, first, first_mask, stride_x, stride_r, N, dropout_p,
                               dropout_scale, HAS_RESIDUAL, HAS_ROWSCALE, HAS_DROPOUT)
                shift = tl.reduce(s0, 1, _sum_combine)
            acc_mean = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)   # per-lane Welford (LayerNorm) or
            acc_m2 = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)     # per-lane sum of squares (RMSNorm)
            acc_n = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)
            overflow = tl.full([BLOCK_M], 0.0, tl.float32)
            for start in range(0, N, BLOCK_N):
                cols = start + tl.arange(0, BLOCK_N)
                mask = row_mask[:, None] & (cols < N)[None, :]
                s = _load_sum(X, R, seed, rs, rows64, cols, mask, stride_x, stride_r, N, dropout_p, dropout_scale,
                              HAS_RESIDUAL, HAS_ROWSCALE, HAS_DROPOUT)
                if STORE_RESIDUAL:
                    ro = _cast(s, RO.dtype.element_ty, SOFT_BF16)
                    tl.store(RO + rows64[:, None] * stride_ro + cols[None, :], ro, mask=mask)
                    if CHECK_OVERFLOW:
                        overflow += _count_overflow(ro, mask)
                if IS_RMS:
                    acc_m2 += s * s
                else:
                    # only the last block can be partial, so every lane it updates has seen exactly
                    # start // BLOCK_N + 1 values: one scalar reciprocal instead of a division per element
                    d = s - shift[:, None]
                    acc_n += mask.to(tl.float32)
                    delta = d - acc_mean
                    acc_mean += tl.where(mask, delta * (1.0 / (start // BLOCK_N + 1)), 0.0)
                    acc_m2 += tl.where(mask, delta * (d - acc_mean), 0.0)
            if IS_RMS:
                mean = tl.full([BLOCK_M], 0.0, tl.float32)
                var = tl.reduce(acc_m2, 1, _sum_combine) / N
            else:
                mean = tl.reduce(acc_mean * acc_n, 1, _sum_combine) / N
                dev = acc_mean - mean[:, None]
                var = tl.reduce(acc_m2 + acc_n * dev * dev, 1, _sum_combine) / N
                tl.store(Mean + rows64, mean, mask=row_mask)
            rstd = tl.rsqrt(var + eps)
            if CHECK_OVERFLOW:  # the row's flag for the backward: a negative rstd
                tl.store(Rstd + rows64, tl.where(overflow > 0.0, -rstd, rstd), mask=row_mask)
            else:
                tl.store(Rstd + rows64, rstd, mask=row_mask)
            for start in range(0, N, BLOCK_N):
                cols = start + tl.arange(0, BLOCK_N)
                col_mask = cols < N
                mask = row_mask[:, None] & col_mask[None, :]
                s = _load_sum(X, R, seed, rs, rows64, cols, mask, stride_x, stride_r, N, dropout_p, dropout_scale,
                              HAS_RESIDUAL, HAS_ROWSCALE, HAS_DROPOUT)
                if IS_RMS:
                    xc = s
                else:
                    xc = (s - shift[:, None]) - mean[:, None]
                y = _affine(xc * rstd[:, None], W, B, cols, col_mask, stride_w, stride_b, weight_offset,
                            HAS_WEIGHT, HAS_BIAS, HAS_WEIGHT_OFFSET, LLAMA_CAST, RO.dtype.element_ty, SOFT_BF16)
                tl.store(Y + rows64[:, None] * stride_y + cols[None, :], _cast(y, Y.dtype.element_ty, SOFT_BF16),
                         mask=mask)


@triton.jit
def add_norm_bwd_row_terms_kernel(
    DY, RO, W, Mean, Rstd, ShiftOut, MeanOut, RstdOut, C1, C2, X, R, RS, Seed,
    stride_dy, stride_ro, stride_w, stride_x, stride_r, stride_rs,
    M, N, eps, weight_offset, dropout_p, dropout_scale,
    IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_WEIGHT_OFFSET: tl.constexpr,
    RECOMPUTE_STATS: tl.constexpr, CHECK_OVERFLOW: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    HAS_ROWSCALE: tl.constexpr, HAS_DROPOUT: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Wide rows only, one program per row looping over column blocks (fixed order: deterministic):
    the row terms c1 = mean(xhat * w * dy) and c2 = mean(w * dy), and the statistics the backward
    uses (ShiftOut: the row's first stored element; MeanOut: the mean of s - shift; RstdOut).

    The sums are taken on e = (s - shift) - mean_fwd, the forward's centred row (small numbers, so
    they stay accurate; exactly 0 for a constant row). RECOMPUTE_STATS (residual_out stored below
    fp32): mean and rstd of the stored, rounded s, so that xhat is exactly centred and normalized
    (the gradient at the point that was saved). CHECK_OVERFLOW: a row the forward flagged (negative
    rstd: its fp16 sum overflowed) has its fp32 sum recomputed from the inputs, and keeps its flag in
    RstdOut for the main kernel.
    """
    row = tl.program_id(0).to(tl.int64)
    rstd_in = tl.load(Rstd + row)
    rstd = rstd_in
    rows64 = row + tl.arange(0, 1)  # the row as a (1, BLOCK_N) tile for _overflowed_sum
    seed = 0
    rs = tl.full([1], 0.0, tl.float32)
    flag = rows64 < 0
    if CHECK_OVERFLOW:
        flag = tl.load(Rstd + rows64) < 0.0
        rstd = tl.abs(rstd_in)
        if HAS_DROPOUT:
            seed = tl.load(Seed)
        if HAS_ROWSCALE:
            rs = tl.load(RS + rows64 * stride_rs).to(tl.float32)
    shift = 0.0
    mean_fwd = 0.0
    if not IS_RMS:
        shift = tl.load(RO + row * stride_ro).to(tl.float32)
        if CHECK_OVERFLOW:
            first = tl.arange(0, BLOCK_N)
            first_mask = (first < 1)[None, :]
            s0 = tl.load(RO + row * stride_ro + first[None, :], mask=first_mask, other=0.0).to(tl.float32)
            s0 = _overflowed_sum(s0, flag, X, R, seed, rs, rows64, first, first_mask, stride_x, stride_r, N,
                                 dropout_p, dropout_scale, HAS_RESIDUAL, HAS_ROWSCALE, HAS_DROPOUT)
            shift = tl.reduce(tl.reduce(tl.where(first_mask, s0, 0.0), 1, _sum_combine), 0, _sum_combine)
        mean_fwd = tl.load(Mean + row)
    acc_e = tl.full([BLOCK_N], 0.0, tl.float32)
    acc_ee = tl.full([BLOCK_N], 0.0, tl.float32)
    acc_ewdy = tl.full([BLOCK_N], 0.0, tl.float32)
    acc_wdy = tl.full([BLOCK_N], 0.0, tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_mask = cols < N
        dy = tl.load(DY + row * stride_dy + cols, mask=col_mask, other=0.0).to(tl.float32)
        s = tl.load(RO + row * stride_ro + cols, mask=col_mask, other=0.0).to(tl.float32)
        if CHECK_OVERFLOW:
            s2 = _overflowed_sum(s[None, :], flag, X, R, seed, rs, rows64, cols, col_mask[None, :], stride_x,
                                 stride_r, N, dropout_p, dropout_scale, HAS_RESIDUAL, HAS_ROWSCALE, HAS_DROPOUT)
            s = tl.reduce(s2, 0, _sum_combine)
        e = tl.where(col_mask, (s - shift) - mean_fwd, 0.0)
        wdy = dy
        if HAS_WEIGHT:
            wdy = dy * _load_weight(W, cols, col_mask, stride_w, weight_offset, HAS_WEIGHT_OFFSET)
        acc_e += e
        acc_ee += e * e
        acc_ewdy += e * wdy
        acc_wdy += wdy
    sum_wdy = tl.reduce(acc_wdy, 0, _sum_combine)
    sum_ewdy = tl.reduce(acc_ewdy, 0, _sum_combine)
    correction = 0.0
    if not IS_RMS:
        if RECOMPUTE_STATS:
            correction = tl.reduce(acc_e, 0, _sum_combine) / N
    if RECOMPUTE_STATS:
        var = tl.reduce(acc_ee, 0, _sum_combine) / N - correction * correction
        rstd = tl.rsqrt(tl.maximum(var, 0.0) + eps)
    if not IS_RMS:
        tl.store(ShiftOut + row, shift)
        tl.store(MeanOut + row, mean_fwd + correction)
    if CHECK_OVERFLOW:
        tl.store(RstdOut + row, tl.where(rstd_in < 0.0, -rstd, rstd))
    else:
        tl.store(RstdOut + row, rstd)
    tl.store(C1 + row, rstd * (sum_ewdy - correction * sum_wdy) / N)
    tl.store(C2 + row, sum_wdy / N)


@triton.jit
def add_norm_bwd_kernel(
    DY, DRO, RO, X, R, W, RS, Mean, Rstd, Shift, C1, C2, Seed, DX, DR, DW_part, DB_part, DRS_part,
    stride_dy, stride_dro, stride_ro, stride_x, stride_r, stride_w, stride_rs, stride_dx, stride_dr,
    M, N, eps, dropout_p, dropout_scale, weight_offset,
    CHECK_OVERFLOW: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    IS_RMS: tl.constexpr, HAS_DRO: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_ROWSCALE: tl.constexpr,
    HAS_WEIGHT_OFFSET: tl.constexpr, HAS_DROPOUT: tl.constexpr, STORE_DR: tl.constexpr, COMPUTE_DW: tl.constexpr,
    COMPUTE_DB: tl.constexpr, COMPUTE_DRS: tl.constexpr, RECOMPUTE_STATS: tl.constexpr, LLAMA_CAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE_BLOCK: tl.constexpr, SOFT_BF16: tl.constexpr,
):
    """Persistent backward: grid (G, C). Program (g, c) owns column block c and walks the row tiles
    g, g + G, g + 2G, ...; dw and db for its columns accumulate in fp32 registers and are written once
    to row g of the partial buffers (summed afterwards in a fixed order: no atomics, deterministic).

    SINGLE_BLOCK (C == 1): the program holds whole rows and computes c1, c2 itself (and, with
    RECOMPUTE_STATS, the shifted mean and rstd of the stored s); otherwise shift, mean, rstd, c1, c2
    come from ``add_norm_bwd_row_terms_kernel``. COMPUTE_DRS: d_rowscale = sum over the row of
    ds * dropout(x), one partial per (column block, row) in DRS_part[c, row]. CHECK_OVERFLOW (fp16
    residual_out): rows flagged by a negative rstd (their stored sum overflowed) read their fp32 sum
    from the inputs X, R (``_overflowed_sum``): their gradients are those of the forward's math.
    """
    pid_g = tl.program_id(0)
    num_groups = tl.num_programs(0)
    pid_c = tl.program_id(1)
    cols = pid_c * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    seed = 0
    if HAS_DROPOUT:
        seed = tl.load(Seed)
    dw_acc = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)
    db_acc = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)
    num_tiles = (M + BLOCK_M - 1) // BLOCK_M
    for tile in range(pid_g, num_tiles, num_groups):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = rows < M
        rows64 = rows.to(tl.int64)
        mask = row_mask[:, None] & col_mask[None, :]
        dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        s = tl.load(RO + rows64[:, None] * stride_ro + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rs = tl.full([BLOCK_M], 0.0, tl.float32)
        if HAS_ROWSCALE:
            rs = tl.load(RS + rows64 * stride_rs, mask=row_mask, other=0.0).to(tl.float32)
        if CHECK_OVERFLOW:
            rstd_flagged = tl.load(Rstd + rows64, mask=row_mask, other=1.0)
            s = _overflowed_sum(s, rstd_flagged < 0.0, X, R, seed, rs, rows64, cols, mask, stride_x, stride_r, N,
                                dropout_p, dropout_scale, HAS_RESIDUAL, HAS_ROWSCALE, HAS_DROPOUT)
        if SINGLE_BLOCK:
            if IS_RMS:
                xc = s
                if RECOMPUTE_STATS:
                    rstd = tl.rsqrt(tl.reduce(s * s, 1, _sum_combine) / N + eps)
                else:
                    rstd = tl.load(Rstd + rows64, mask=row_mask, other=0.0)
            else:
                # the forward's shift: the row's first element (the same fp32 value when s is stored
                # in fp32; the stored, rounded one otherwise, with the statistics recomputed)
                if CHECK_OVERFLOW:  # s[:, 0]: the recomputed value on flagged rows
                    shift = tl.reduce(tl.where(cols[None, :] == 0, s, 0.0), 1, _sum_combine)
                else:
                    shift = tl.load(RO + rows64 * stride_ro, mask=row_mask, other=0.0).to(tl.float32)
                d = tl.where(mask, s - shift[:, None], 0.0)
                if RECOMPUTE_STATS:
                    mean = tl.reduce(d, 1, _sum_combine) / N
                    xc = tl.where(mask, d - mean[:, None], 0.0)
                    rstd = tl.rsqrt(tl.reduce(xc * xc, 1, _sum_combine) / N + eps)
                else:
                    mean = tl.load(Mean + rows64, mask=row_mask, other=0.0)
                    xc = tl.where(mask, d - mean[:, None], 0.0)
                    rstd = tl.load(Rstd + rows64, mask=row_mask, other=0.0)
        else:
            rstd = tl.load(Rstd + rows64, mask=row_mask, other=0.0)
            if CHECK_OVERFLOW:
                rstd = tl.abs(rstd)  # the flag was used above
            if IS_RMS:
                xc = s
            else:
                shift = tl.load(Shift + rows64, mask=row_mask, other=0.0)
                mean = tl.load(Mean + rows64, mask=row_mask, other=0.0)
                xc = tl.where(mask, (s - shift[:, None]) - mean[:, None], 0.0)
        xhat = xc * rstd[:, None]
        if HAS_WEIGHT:  # reloaded per tile (cached): held across the loop it would cost registers
            wdy = dy * _load_weight(W, cols, col_mask, stride_w, weight_offset, HAS_WEIGHT_OFFSET)[None, :]
        else:
            wdy = dy
        if SINGLE_BLOCK:
            c1 = tl.reduce(xhat * wdy, 1, _sum_combine) / N
            if not IS_RMS:
                c2 = tl.reduce(wdy, 1, _sum_combine) / N
        else:
            c1 = tl.load(C1 + rows64, mask=row_mask, other=0.0)
            if not IS_RMS:
                c2 = tl.load(C2 + rows64, mask=row_mask, other=0.0)
        if IS_RMS:
            ds = (wdy - xhat * c1[:, None]) * rstd[:, None]
        else:
            ds = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_DRO:
            ds += tl.load(DRO + rows64[:, None] * stride_dro + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if STORE_DR:
            tl.store(DR + rows64[:, None] * stride_dr + cols[None, :], _cast(ds, DR.dtype.element_ty, SOFT_BF16), mask=mask)
        dx = ds
        if HAS_ROWSCALE:
            dx = dx * rs[:, None]
        if HAS_DROPOUT:
            keep = _keep_mask(seed, rows64[:, None] * N + cols[None, :], dropout_p)
            dx = tl.where(keep, dx * dropout_scale, 0.0)
        tl.store(DX + rows64[:, None] * stride_dx + cols[None, :], _cast(dx, DX.dtype.element_ty, SOFT_BF16), mask=mask)
        if COMPUTE_DRS:  # d rowscale = sum_j ds_j * dropout(x)_j
            xd = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            if HAS_DROPOUT:
                xd = tl.where(keep, xd * dropout_scale, 0.0)
            tl.store(DRS_part + pid_c.to(tl.int64) * M + rows64, tl.reduce(ds * xd, 1, _sum_combine), mask=row_mask)
        if COMPUTE_DW:
            if LLAMA_CAST:  # y = w * round(xhat): dw sees the rounded value
                xhat = _cast(xhat, RO.dtype.element_ty, SOFT_BF16).to(tl.float32)
            dw_acc += dy * xhat
        if COMPUTE_DB:
            db_acc += dy
    part_offsets = pid_g.to(tl.int64) * N + cols
    if COMPUTE_DW:
        tl.store(DW_part + part_offsets, tl.reduce(dw_acc, 0, _sum_combine), mask=col_mask)
    if COMPUTE_DB:
        tl.store(DB_part + part_offsets, tl.reduce(db_acc, 0, _sum_combine), mask=col_mask)


@triton.jit
def sum_partials_kernel(Part, Out, G, N, BLOCK_N: tl.constexpr, SOFT_BF16: tl.constexpr):
    """Out[n] = sum over g = 0, 1, ..., G-1 of Part[g, n], in that order (fp32), cast to Out's dtype."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    acc = tl.full([BLOCK_N], 0.0, tl.float32)
    part_row = Part
    for _ in range(0, G):
        acc += tl.load(part_row + cols, mask=col_mask, other=0.0)
        part_row += N  # pointer arithmetic is 64-bit: no int32 overflow for large G * N
    tl.store(Out + cols, _cast(acc, Out.dtype.element_ty, SOFT_BF16), mask=col_mask)

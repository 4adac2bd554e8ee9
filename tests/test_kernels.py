"""The fused add+norm Triton kernels against a float64 reference written here (CPU: Triton's interpreter;
CUDA too when present), their torch.library ops under torch.compile, and the benchmark's pure parts.

Tolerance rule (docs/kernels.md, as in flash-attn's tests): ``|kernel - ref64| <= 2 * |pt - ref64| + atol``
elementwise, pt = resnorm's PyTorch path in the same dtype.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import resnorm
from resnorm.functional import add_norm, use_backend
from resnorm.kernels import launch
from resnorm.lab import bench

pytest.importorskip("triton")

ATOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
NAMES = ("x", "residual", "weight", "bias", "rowscale")


def ref64(x, residual, weight, bias, *, kind, eps, zero_centered_weight, keep=None, dropout_p=0.0,
          rowscale=None, casting_mode="fp32", residual_dtype=None, weight_offset=0.0):
    """The contract in float64 with no torch.nn.functional: returns (y, s). In "llama" mode the
    normalized value is rounded to residual_dtype (identity in the backward).
    w = weight + weight_offset (zero_centered_weight: + 1)."""
    s = x.double()
    if keep is not None:
        s = s * keep.double() / (1.0 - dropout_p)
    if rowscale is not None:
        s = s * rowscale.double()[..., None]
    if residual is not None:
        s = s + residual.double()
    n = s.shape[-1]
    centered = s - s.sum(-1, keepdim=True) / n if kind == "layer" else s
    y = centered / torch.sqrt((centered * centered).sum(-1, keepdim=True) / n + eps)
    if casting_mode == "llama" and residual_dtype in (F16, BF16):
        y = y + (y.detach().to(residual_dtype).double() - y.detach())
    if weight is not None:
        w = weight.double() + weight_offset
        y = y * (1.0 + w if zero_centered_weight else w)
    if bias is not None:
        y = y + bias.double()
    return y, s


def assert_close_by_rule(kernel, pt, ref, atol, what):
    kernel, pt, ref = kernel.double().cpu(), pt.double().cpu(), ref.double().cpu()
    assert kernel.shape == ref.shape, what
    assert torch.isfinite(kernel).all(), f"{what}: non-finite values"
    err = (kernel - ref).abs()
    bound = 2 * (pt - ref).abs() + atol
    worst = (err - bound).max().item() if err.numel() else -1.0
    assert worst <= 0, f"{what}: |kernel - ref64| exceeds 2|pt - ref64| + {atol} by {worst:.3g}"


# How a tensor reaches add_norm: made from a base tensor (the autograd leaf) by a view. Layouts every
# kernel must read right: strided rows or elements, stride 0 (expanded), a transposed matrix's row.
def _layout(shape, layout):
    """(base shape, view function) giving a tensor of ``shape`` in ``layout``."""
    if layout == "contiguous":
        return shape, lambda t: t
    if layout == "strided":  # every other element of the last dim (w_big[::2]; rows: stride(-1) = 2)
        return (*shape[:-1], 2 * shape[-1]), lambda t: t[..., ::2]
    if layout == "expanded":  # stride 0 in every dim but the last for >= 2-D; torch.tensor([v]).expand(N)
        if len(shape) == 1:
            return (1,), lambda t: t.expand(shape)
        return (1, *shape[1:]), lambda t: t.expand(shape)
    if layout == "transposed":  # a row of a transposed matrix (1-D: stride 3), or a transposed matrix
        if len(shape) == 1:
            return (shape[0], 3), lambda t: t.t()[1]
        return (*shape[:-2], shape[-1], shape[-2]), lambda t: t.transpose(-1, -2)
    raise ValueError(layout)


def make_inputs(m, n, dtype, *, device, has_residual=True, residual_dtype=None, weight_dtype=None,
                has_bias=True, zero_centered=False, row_stride_pad=0, seed=0, rowscale_dtype=None,
                layouts=None, weight_offset=0.0):
    """Base tensors (the autograd leaves) and the views add_norm receives, for x, residual, weight,
    bias and rowscale (None where absent)."""
    g = torch.Generator().manual_seed(seed)
    layouts = layouts or {}

    def make(name, shape, dt, scale=1.0, center=0.0):
        base_shape, view = _layout(shape, layouts.get(name, "contiguous"))
        if name in ("x", "residual") and row_stride_pad and layouts.get(name, "contiguous") == "contiguous":
            base_shape, view = (m, n + row_stride_pad), lambda t: t[:, :n]  # strided rows
        base = (torch.randn(base_shape, generator=g) * scale + center).to(dt).to(device)
        return base, view

    specs = [make("x", (m, n), dtype)]
    specs.append(make("residual", (m, n), residual_dtype or dtype) if has_residual else (None, None))
    # the weight near 1 - offset, so that w = weight + offset is near 1 (and an ignored offset shows)
    center = 1.0 - (1.0 if zero_centered else weight_offset)
    has_weight = weight_dtype is not None
    specs.append(make("weight", (n,), weight_dtype, 0.5, center) if has_weight else (None, None))
    specs.append(make("bias", (n,), weight_dtype or dtype, 0.5) if has_bias else (None, None))
    if rowscale_dtype is not None:  # drop-path-like factors: some rows dropped (0), the others scaled
        base_shape, view = _layout((m,), layouts.get("rowscale", "contiguous"))
        rs = torch.rand(base_shape, generator=g) * 2
        rs[::3] = 0.0
        specs.append((rs.to(rowscale_dtype).to(device), view))
    else:
        specs.append((None, None))
    return [s[0] for s in specs], [s[1] for s in specs]


def run_add_norm(backend, bases, views, dy, dro, *, rowscale_grad=True, **kw):
    """add_norm with prenorm on leaf copies of the base tensors, seen through their views; returns
    outputs and the gradients of the leaves (None where an input is absent). dy / dro reach the
    backward exactly as given (any strides)."""
    leaves = [t.detach().clone().requires_grad_(i < 4 or rowscale_grad) if t is not None else None
              for i, t in enumerate(bases)]
    args = [v(t) if t is not None else None for t, v in zip(leaves, views, strict=True)]
    with use_backend(backend):
        y, ro = add_norm(*args[:4], prenorm=True, rowscale=args[4], **kw)
    present = [t for t in leaves if t is not None and t.requires_grad]
    if present and y.numel():
        outs, grads_out = ([y, ro], [dy, dro]) if dro is not None else ([y], [dy])
        grads = iter(torch.autograd.grad(outs, present, grads_out, allow_unused=True))
    else:
        grads = iter([torch.zeros_like(t) for t in present])
    return y, ro, [next(grads) if t is not None and t.requires_grad else None for t in leaves]


def grad_layout(shape, layout, dtype, device, g):
    """An incoming gradient of ``shape`` in ``layout`` (an expanded one is what ``y.sum()`` sends)."""
    base_shape, view = _layout(shape, layout)
    return view(torch.randn(base_shape, generator=g).to(dtype).to(device))


def check_against_reference(device, m, n, dtype, *, kind, residual_dtype=None, out_dtype=None,
                            weight_dtype=None, has_residual=True, has_bias=True, zero_centered=False,
                            row_stride_pad=0, with_dro=True, eps=1e-5, seed=0, rowscale_dtype=None,
                            rowscale_grad=True, casting_mode="fp32", layouts=None, dropout_p=0.0,
                            weight_offset=0.0):
    layouts = layouts or {}
    bases, views = make_inputs(
        m, n, dtype, device=device, has_residual=has_residual, residual_dtype=residual_dtype,
        weight_dtype=weight_dtype, has_bias=has_bias, zero_centered=zero_centered,
        row_stride_pad=row_stride_pad, seed=seed, rowscale_dtype=rowscale_dtype, layouts=layouts,
        weight_offset=weight_offset)
    kw = dict(kind=kind, eps=eps, out_dtype=out_dtype, zero_centered_weight=zero_centered,
              residual_dtype=residual_dtype if has_residual else None, casting_mode=casting_mode,
              weight_offset=weight_offset)
    g = torch.Generator().manual_seed(seed + 1)
    res_out_dtype = residual_dtype or dtype
    dy = grad_layout((m, n), layouts.get("dy", "contiguous"), out_dtype or dtype, device, g)
    dro = None
    if with_dro:
        dro = grad_layout((m, n), layouts.get("dro", "contiguous"), res_out_dtype, device, g)

    yk, rok, gk = run_add_norm("triton", bases, views, dy, dro, rowscale_grad=rowscale_grad, **kw)
    yp, rop, gp = run_add_norm("torch", bases, views, dy, dro, rowscale_grad=rowscale_grad, **kw)
    leaves64 = [t.detach().double().cpu().requires_grad_(i < 4 or rowscale_grad) if t is not None else None
                for i, t in enumerate(bases)]
    args64 = [v(t) if t is not None else None for t, v in zip(leaves64, views, strict=True)]
    y64, s64 = ref64(*args64[:4], kind=kind, eps=eps, zero_centered_weight=zero_centered, rowscale=args64[4],
                     casting_mode=casting_mode, residual_dtype=res_out_dtype, weight_offset=weight_offset)
    present = [t for t in leaves64 if t is not None and t.requires_grad]
    loss64 = (y64 * dy.double().cpu()).sum() + ((s64 * dro.double().cpu()).sum() if with_dro else 0.0)
    grads64 = iter(torch.autograd.grad(loss64, present, allow_unused=True) if m * n else
                   [torch.zeros_like(t) for t in present])
    g64 = [next(grads64) if t is not None and t.requires_grad else None for t in leaves64]

    x = views[0](bases[0])
    assert yk.dtype == (out_dtype or dtype) and yk.shape == x.shape and yk.device == x.device
    assert rok.dtype == res_out_dtype and rok.shape == x.shape
    atol = ATOL[dtype]
    if casting_mode == "llama":  # y carries one rounding to residual_dtype
        atol = max(atol, ATOL[res_out_dtype])
    assert_close_by_rule(yk, yp, y64, atol, "y")
    # the backward starts from residual_out as stored (the PyTorch path keeps s in fp32): its accuracy
    # is that of the coarser of x's dtype and residual_dtype
    atol = max(atol, ATOL[res_out_dtype])
    assert torch.equal(rok.cpu(), rop.cpu()), "residual_out must equal the PyTorch path's exactly"
    for name, a, b, c in zip(NAMES, gk, gp, g64, strict=True):
        if c is None:
            assert a is None, name
            continue
        assert a.dtype == b.dtype, name
        # dW, dB and d_rowscale sum M rows / N columns: scale atol with the size of the sum
        size = {"weight": m, "bias": m, "rowscale": n}.get(name, 1)
        tol = atol * max(1.0, math.sqrt(size))
        assert_close_by_rule(a, b, c, tol, f"d_{name}")


# (m, n, dtype, options): odd sizes, every flag and dtype, without the full cartesian product
CASES = [
    (37, 1000, F32, dict(kind="rms", weight_dtype=F32)),
    (37, 1000, F32, dict(kind="layer", weight_dtype=F32)),
    (37, 7, F16, dict(kind="layer", weight_dtype=F32, zero_centered=True)),
    (37, 7, BF16, dict(kind="rms", weight_dtype=BF16, has_bias=False)),
    (1, 4097, BF16, dict(kind="layer", weight_dtype=BF16, residual_dtype=F32)),
    (1, 4097, F16, dict(kind="rms", weight_dtype=F16, residual_dtype=F32, out_dtype=F32)),
    (37, 1, F32, dict(kind="rms", weight_dtype=F32)),
    (37, 1, BF16, dict(kind="layer", weight_dtype=BF16)),
    (0, 1000, BF16, dict(kind="layer", weight_dtype=BF16)),
    (0, 7, F32, dict(kind="rms", weight_dtype=None, has_bias=False)),
    (37, 1000, BF16, dict(kind="rms", weight_dtype=F32, residual_dtype=F32, zero_centered=True)),
    (37, 1000, F16, dict(kind="layer", weight_dtype=F16, has_residual=False)),
    (37, 1000, BF16, dict(kind="rms", weight_dtype=None, has_bias=False, has_residual=False)),
    (37, 1000, F32, dict(kind="layer", weight_dtype=None, has_bias=True, out_dtype=BF16)),
    (37, 1000, BF16, dict(kind="layer", weight_dtype=BF16, row_stride_pad=24, with_dro=False)),
    (37, 7, F32, dict(kind="rms", weight_dtype=F16, row_stride_pad=3, residual_dtype=BF16)),
    (1, 7, BF16, dict(kind="layer", weight_dtype=F32, zero_centered=True, with_dro=False,
                      has_residual=False)),
    # rowscale (some rows 0: drop-path) and the llama casting mode
    (37, 100, BF16, dict(kind="rms", weight_dtype=BF16, rowscale_dtype=F32, casting_mode="llama")),
    (37, 100, F16, dict(kind="layer", weight_dtype=F16, rowscale_dtype=BF16, residual_dtype=F32)),
    (9, 33, F32, dict(kind="layer", weight_dtype=F32, rowscale_dtype=F16, has_residual=False,
                      rowscale_grad=False)),
    (9, 33, F32, dict(kind="layer", weight_dtype=F32, rowscale_dtype=torch.float64, casting_mode="gemma")),
    (9, 33, F32, dict(kind="layer", weight_dtype=F32, residual_dtype=BF16, casting_mode="llama",
                      zero_centered=True)),
    (9, 33, BF16, dict(kind="rms", weight_dtype=F32, residual_dtype=F32, casting_mode="llama",
                       has_bias=False)),
    # weight_offset (w = weight + offset, Liger's offset), with every gradient
    (9, 33, F32, dict(kind="rms", weight_dtype=F32, weight_offset=0.5, rowscale_dtype=F32)),
    (9, 33, F32, dict(kind="layer", weight_dtype=F32, weight_offset=-2.0)),
    (9, 33, BF16, dict(kind="layer", weight_dtype=BF16, weight_offset=1.0, casting_mode="llama")),
    (9, 33, F16, dict(kind="rms", weight_dtype=F32, weight_offset=-2.0, residual_dtype=F32)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,n,dtype,options", CASES, ids=lambda v: str(v).replace(" ", ""))
def test_forward_and_gradients_match_reference(device, m, n, dtype, options):
    check_against_reference(device, m, n, dtype, **options)


WIDE_CASES = [  # rows wider than the forced block: the column-loop forward and the split backward
    (37, 1000, F32, 256, dict(kind="layer", weight_dtype=F32)),
    (9, 1000, BF16, 128, dict(kind="rms", weight_dtype=BF16, residual_dtype=F32, zero_centered=True)),
    (5, 4097, F16, 1024, dict(kind="layer", weight_dtype=F16, has_residual=False, row_stride_pad=8)),
    (37, 7, F32, 2, dict(kind="rms", weight_dtype=F32, has_bias=False)),
    (1, 1000, BF16, 64, dict(kind="layer", weight_dtype=None, has_bias=False, with_dro=False)),
    (9, 300, BF16, 128, dict(kind="layer", weight_dtype=BF16, rowscale_dtype=F32, casting_mode="llama")),
    (9, 300, F16, 64, dict(kind="rms", weight_dtype=F32, rowscale_dtype=F16, residual_dtype=F32,
                           casting_mode="llama")),
    (9, 100, F32, 32, dict(kind="layer", weight_dtype=F32, weight_offset=0.5)),
    (9, 100, BF16, 32, dict(kind="rms", weight_dtype=BF16, weight_offset=-2.0, has_bias=False)),
    (9, 100, F16, 32, dict(kind="layer", weight_dtype=F16, weight_offset=1.0, residual_dtype=F32)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,n,dtype,block,options", WIDE_CASES, ids=lambda v: str(v).replace(" ", ""))
def test_wide_rows_column_loop_path(device, m, n, dtype, block, options):
    assert launch.forward_config(m, n, torch.device(device)).single_block
    with launch.force_max_block_n(block):
        cfg_f = launch.forward_config(m, n, torch.device(device))
        cfg_b = launch.backward_config(m, n, torch.device(device))
        assert not cfg_f.single_block and cfg_f.block_n == block
        assert not cfg_b.single_block and cfg_b.col_blocks == -(-n // block)
        check_against_reference(device, m, n, dtype, **options)


def test_layernorm_statistics_are_stable_for_a_large_mean():
    """Rows with mean 1e4 and std 1: the wide path's per-lane Welford must not lose the variance."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 1000, generator=g) + 1e4
    y64, _ = ref64(x, None, None, None, kind="layer", eps=1e-5, zero_centered_weight=False)
    for block in (None, 128):
        with use_backend("triton"), launch.force_max_block_n(block or 16384):
            y = add_norm(x, kind="layer", eps=1e-5)
        assert (y.double() - y64).abs().max() < 2e-2, block


# ----------------------------------------------------------------------------------------------
# inputs a user can pass that the kernels once got wrong; each test runs the kernels (interpreter, and
# CUDA when present) and the PyTorch path against float64


BACKEND_DEVICES = [("torch", "cpu")] + [("triton", d) for d in DEVICES]


def _grads_against_float64(backend, device, bases, views, dy, dro, kind, eps, **kw):
    """(y, residual_out, grads) of one backend and (y64, grads64) of the float64 contract."""
    y, ro, grads = run_add_norm(backend, [t.to(device) if t is not None else None for t in bases], views,
                                dy.to(device), dro.to(device), kind=kind, eps=eps, **kw)
    leaves = [t.detach().double().requires_grad_(True) if t is not None else None for t in bases]
    args = [v(t) if t is not None else None for t, v in zip(leaves, views, strict=True)]
    y64, s64 = ref64(*args[:4], kind=kind, eps=eps, zero_centered_weight=False, rowscale=args[4])
    present = [t for t in leaves if t is not None]
    g64 = iter(torch.autograd.grad([y64, s64], present, [dy.double(), dro.double()]))
    return y.cpu(), ro.cpu(), [g.cpu() if g is not None else None for g in grads], y64, \
        [next(g64) if t is not None else None for t in leaves]


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("block", [None, 16])
@pytest.mark.parametrize("layout", ["strided", "expanded", "transposed"])
def test_every_tensor_of_any_layout(backend, device, block, layout):
    """weight / bias / rowscale as ``w_big[::2]``, ``torch.tensor([v]).expand(N)`` (stride 0) or a row of
    a transposed matrix; x and residual expanded (row stride 0), strided or transposed; dy and
    d_residual_out the same (``y.sum()`` sends an expanded one). Each is read as what it is and never
    past its storage: y and every gradient match float64."""
    m, n = 6, 40
    layouts = dict.fromkeys(("x", "residual", "weight", "bias", "rowscale", "dy", "dro"), layout)
    bases, views = make_inputs(m, n, F32, device="cpu", weight_dtype=F32, rowscale_dtype=F32, layouts=layouts,
                               seed=4)
    g = torch.Generator().manual_seed(5)
    dy, dro = grad_layout((m, n), layout, F32, "cpu", g), grad_layout((m, n), layout, F32, "cpu", g)
    for kind in ("layer", "rms"):
        with launch.force_max_block_n(block or 16384):
            y, _, grads, y64, g64 = _grads_against_float64(backend, device, bases, views, dy, dro, kind, 1e-5)
        torch.testing.assert_close(y.double(), y64, rtol=1e-4, atol=1e-4)
        for name, a, e in zip(NAMES, grads, g64, strict=True):
            torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-4 * math.sqrt(m * n),
                                       msg=lambda msg, name=name, kind=kind: f"d_{name} ({kind}): {msg}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["strided", "expanded", "transposed"])
def test_every_tensor_of_any_layout_by_the_rule(device, layout):
    """The same layouts in bf16 with the llama cast, held to the tolerance rule."""
    layouts = dict.fromkeys(("x", "residual", "weight", "bias", "rowscale", "dy", "dro"), layout)
    check_against_reference(device, 9, 33, BF16, kind="layer", weight_dtype=BF16, rowscale_dtype=BF16,
                            casting_mode="llama", layouts=layouts, seed=6)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("kind", ["layer", "rms"])
@pytest.mark.parametrize("block", [None, 16])
@pytest.mark.parametrize("rowscale", [False, True])
def test_fp16_residual_overflow_gradients_are_the_forward_math(backend, device, kind, block, rowscale):
    """fp16 x + residual beyond 65504: residual_out holds inf (IEEE rounding, as the PyTorch path), but
    y and every gradient are those of the forward's fp32 sum, finite and within one fp16 rounding of
    float64, on both backends, in the single-block and the wide-row kernels (the kernels' backward
    recomputes an overflowed row's sum from x and residual instead of reading the stored inf)."""
    m, n = 4, 40
    bases, views = make_inputs(m, n, F16, device="cpu", weight_dtype=F16, seed=7,
                               rowscale_dtype=F32 if rowscale else None)  # d rowscale[1] ~ 1e5: not fp16
    x, res = bases[0], bases[1]
    x[1, :3], res[1, :3] = 60000.0, 10000.0  # s = 70000 in fp32
    if rowscale:
        bases[4][1] = 1.0  # the overflowing row keeps its sum; the others are scaled
    g = torch.Generator().manual_seed(8)
    dy, dro = torch.randn(m, n, generator=g).half(), torch.randn(m, n, generator=g).half()
    with launch.force_max_block_n(block or 16384):
        y, ro, grads, y64, g64 = _grads_against_float64(backend, device, bases, views, dy, dro, kind, 1e-5)
    assert torch.isinf(ro[1, :3]).all() and torch.isfinite(ro[[0, 2, 3]]).all()
    tol = lambda ref: 1e-2 * (1 + ref.abs())  # noqa: E731 - one fp16 rounding
    assert ((y.double() - y64).abs() <= tol(y64)).all()
    for name, a, e in zip(NAMES, grads, g64, strict=True):
        if a is None:
            continue
        assert torch.isfinite(a).all(), f"d_{name} is not finite"
        scale = math.sqrt(m * n) if name in ("weight", "bias", "rowscale") else 1.0  # sums over rows
        assert ((a.double() - e).abs() <= scale * tol(e)).all(), f"d_{name}"


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("block", [None, 1024])
@pytest.mark.parametrize("eps", [1e-5, 1e-12])
def test_layernorm_of_a_constant_row_is_its_bias(backend, device, block, eps):
    """Rows whose values are all equal (1000.1 at N = 3000) have zero variance: y is bias exactly, in the
    single-block and the wide-row paths, as F.layer_norm gives it. The kernels' gradients match float64
    too (rstd = 1/sqrt(eps) amplifies any rounding of the mean); the PyTorch path's are
    F.layer_norm's, whose backward uses its rounded mean (1% off at 6e4: documented, not asserted)."""
    m, n = 3, 3000
    g = torch.Generator().manual_seed(9)
    x = torch.full((m, n), 500.05)
    x[1], x[2] = -0.7, 3.0e4
    res = x.clone()  # s = 2x: constant rows through the residual add too
    w, b = torch.randn(n, generator=g), torch.randn(n, generator=g)
    dy, dro = torch.randn(m, n, generator=g), torch.randn(m, n, generator=g)
    bases, views = [x, res, w, b, None], [lambda t: t] * 5
    with launch.force_max_block_n(block or 16384):
        y, ro, grads, y64, g64 = _grads_against_float64(backend, device, bases, views, dy, dro, "layer", eps)
    assert torch.equal(ro, x + res)
    assert torch.equal(y, b.expand(m, n)), (y - b).abs().max()
    if backend == "torch":
        return
    for name, a, e in zip(NAMES[:4], grads[:4], g64[:4], strict=True):
        scale = e.abs().max().item()
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("block", [None, 512])
def test_layernorm_of_a_nearly_constant_row_with_a_large_mean(block):
    """1000.1 + 1e-3 * noise at eps 1e-12: the shifted statistics keep y within 1e-3 of float64 (the
    rounding of a plain fp32 mean alone would be worth ~0.04 here), forward and backward."""
    g = torch.Generator().manual_seed(10)
    x = torch.full((4, 1000), 1000.1) + torch.randn(4, 1000, generator=g) * 1e-3
    w, b = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    dy, dro = torch.randn(4, 1000, generator=g), torch.randn(4, 1000, generator=g)
    with launch.force_max_block_n(block or 16384):
        y, _, grads, y64, g64 = _grads_against_float64("triton", "cpu", [x, None, w, b, None],
                                                       [lambda t: t] * 5, dy, dro, "layer", 1e-12)
    assert (y.double() - y64).abs().max() < 1e-3
    for name, a, e in zip(NAMES, grads, g64, strict=True):
        if e is not None:
            assert ((a.double() - e).abs() <= 1e-3 * (1 + e.abs())).all(), name


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_eps_must_be_finite_positive_and_generator_a_generator(backend, device):
    x = torch.randn(3, 8, device=device)
    with use_backend(backend):
        for bad in (float("inf"), float("nan"), 0.0, -1e-5):
            with pytest.raises(ValueError, match="eps"):
                add_norm(x, eps=bad)
        for bad in (1234, "seed", torch.randn(2)):
            with pytest.raises(TypeError, match="generator"):
                add_norm(x, dropout_p=0.1, generator=bad)
    from resnorm.kernels import add_norm as kernel_add_norm

    with pytest.raises(ValueError, match="eps"):
        kernel_add_norm(x, None, None, None, kind="rms", eps=float("inf"), residual_dtype=F32, out_dtype=F32)
    with pytest.raises(ValueError, match="weight_offset"):  # direct callers of the kernels too
        kernel_add_norm(x, None, torch.ones(8, device=device), None, kind="rms", eps=1e-5, residual_dtype=F32,
                        out_dtype=F32, weight_offset=float("nan"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block", [None, 8])
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_zero_centered_weight_is_weight_offset_one_bitwise(device, block, kind):
    """``zero_centered_weight=True`` is the shorthand of ``weight_offset=1.0``: the same kernels, the same
    bits, forward and every gradient, in the single-block and the wide-row paths."""
    bases, views = make_inputs(3, 24, BF16, device=device, weight_dtype=F32, zero_centered=True, seed=11)
    g = torch.Generator().manual_seed(12)
    dy = torch.randn(3, 24, generator=g).to(BF16).to(device)
    dro = torch.randn(3, 24, generator=g).to(BF16).to(device)
    kw = dict(kind=kind, eps=1e-5, casting_mode="llama")
    with launch.force_max_block_n(block or 16384):
        zc = run_add_norm("triton", bases, views, dy, dro, zero_centered_weight=True, **kw)
        offset = run_add_norm("triton", bases, views, dy, dro, weight_offset=1.0, **kw)
    for a, b in zip([zc[0], zc[1], *zc[2][:4]], [offset[0], offset[1], *offset[2][:4]], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block,dropout_p", [(None, 0.1), (64, 0.0)])
def test_bitwise_deterministic(device, block, dropout_p):
    m = 13 if dropout_p == 0 else 64
    bases, views = make_inputs(m, 300, BF16, device=device, weight_dtype=BF16, seed=5, rowscale_dtype=F32)
    g = torch.Generator().manual_seed(9)
    dy = torch.randn(m, 300, generator=g).to(BF16).to(device)
    dro = torch.randn(m, 300, generator=g).to(BF16).to(device)
    kw = dict(kind="layer", eps=1e-5, dropout_p=dropout_p)
    runs = []
    for _ in range(2):
        torch.manual_seed(11)
        with launch.force_max_block_n(block or 16384):
            runs.append(run_add_norm("triton", bases, views, dy, dro, **kw))
    (y1, ro1, g1), (y2, ro2, g2) = runs
    assert torch.equal(y1, y2) and torch.equal(ro1, ro2)
    for a, b in zip(g1, g2, strict=True):  # dx, d_residual, dW, dB, d_rowscale
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block,m", [(None, 64), (128, 6)])
def test_dropout_rate_and_backward_mask(device, block, m):
    p, n = 0.25, 500
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(m, n, generator=g) + 0.5).to(device).requires_grad_(True)  # never zero
    residual = torch.zeros(m, n, device=device, requires_grad=True)
    weight = torch.randn(n, generator=g).to(device).requires_grad_(True)
    torch.manual_seed(0)
    with use_backend("triton"), launch.force_max_block_n(block or 16384):
        y, ro = add_norm(x, residual, weight, kind="rms", prenorm=True, dropout_p=p,
                         residual_dtype=torch.float32)
        keep = ro != 0
        rate = 1.0 - keep.double().mean().item()
        assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / (m * n)), rate
        # kept elements are scaled by 1 / (1 - p); y normalizes exactly the realized s
        torch.testing.assert_close(ro[keep], x[keep] / (1 - p))
        y64, _ = ref64(ro.detach().double(), None, weight.detach(), None, kind="rms", eps=1e-6,
                       zero_centered_weight=False)
        assert (y.double() - y64).abs().max() < 1e-4
        dy = torch.randn(m, n, generator=g).to(device)
        dx, dres = torch.autograd.grad((y * dy).sum() + ro.sum(), (x, residual))
    # the backward regenerated the forward's mask: dx = d_residual * keep / (1 - p)
    assert torch.equal(dx != 0, keep)
    assert torch.equal(dx[keep], dres[keep] * (1.0 / (1 - p)))
    assert (dres[~keep] != 0).any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block", [None, 64])
def test_rowscale_with_dropout_gradients_use_the_forward_mask(device, block):
    """s = dropout(x) * rowscale + residual: dx = ds * rowscale * keep / (1 - p) and
    d_rowscale = sum_j ds_j * x_j * keep_j / (1 - p), with the mask the forward drew."""
    m, n, p = 6, 200, 0.3
    g = torch.Generator().manual_seed(12)
    x = (torch.rand(m, n, generator=g) + 0.5).to(device).requires_grad_(True)  # never zero
    res = torch.randn(m, n, generator=g).to(device)
    rs = torch.tensor([0.0, 1.5, -2.0, 0.25, 1.0, 3.0], device=device, requires_grad=True)
    dro = torch.randn(m, n, generator=g).to(device)
    torch.manual_seed(3)
    with use_backend("triton"), launch.force_max_block_n(block or 16384):
        _, ro = add_norm(x, res, kind="layer", eps=1e-5, prenorm=True, dropout_p=p, rowscale=rs,
                         residual_dtype=F32)
        dx, d_rs = torch.autograd.grad(ro, (x, rs), dro)
    keep = ((ro - res) != 0).detach()  # row 0 (rowscale 0) shows no mask: it is checked apart
    assert 0.5 < keep[1:].double().mean() < 0.9
    torch.testing.assert_close(ro.detach(), x.detach() * keep / (1 - p) * rs.detach()[:, None] + res)
    torch.testing.assert_close(dx, dro * rs.detach()[:, None] * keep / (1 - p))
    want = (dro.double() * x.detach().double() * keep / (1 - p)).sum(-1)
    torch.testing.assert_close(d_rs[1:].double(), want[1:], rtol=1e-5, atol=1e-4)
    assert d_rs[0] != 0  # a dropped path still gets its gradient (drop-path at rowscale 0)


def test_dropout_seed_follows_torch_generators():
    x = torch.ones(16, 64)
    with use_backend("triton"):
        torch.manual_seed(1)
        a = add_norm(x, kind="rms", prenorm=True, dropout_p=0.5)[1]
        torch.manual_seed(1)
        b = add_norm(x, kind="rms", prenorm=True, dropout_p=0.5)[1]
        c = add_norm(x, kind="rms", prenorm=True, dropout_p=0.5)[1]
        gen = torch.Generator().manual_seed(4)
        d = add_norm(x, kind="rms", prenorm=True, dropout_p=0.5, generator=gen)[1]
        gen.manual_seed(4)
        e = add_norm(x, kind="rms", prenorm=True, dropout_p=0.5, generator=gen)[1]
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(d, e)


def test_strided_rows_are_not_copied():
    base = torch.randn(6, 40)
    view = base[:, 3:35]
    assert launch.rows_view(view).data_ptr() == view.data_ptr()
    assert launch.rows_view(base.t()).is_contiguous()  # stride(-1) != 1: copied
    x3 = torch.randn(2, 3, 40)[:, :, :32]
    assert launch.rows_view(x3).shape == (6, 32)


def test_leading_dims_and_backend_switch(monkeypatch):
    calls = []
    real = resnorm.kernels.add_norm

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(resnorm.kernels, "add_norm", counting)
    x = torch.randn(2, 3, 33)
    w = torch.randn(33)
    monkeypatch.setenv("RESNORM_BACKEND", "triton")
    y = add_norm(x, None, w, kind="layer")
    assert calls == [1]
    monkeypatch.setenv("RESNORM_BACKEND", "torch")
    y_pt = add_norm(x, None, w, kind="layer")
    monkeypatch.setenv("RESNORM_BACKEND", "auto")
    add_norm(x, None, w, kind="layer")
    assert calls == [1]  # auto on CPU tensors: the PyTorch path
    assert y.shape == (2, 3, 33)
    torch.testing.assert_close(y, y_pt, atol=1e-5, rtol=1e-5)


def test_interpreter_used_for_cpu_whatever_the_environment(monkeypatch):
    from triton.runtime.interpreter import InterpretedFunction

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    kernels = launch.kernels_for(torch.device("cpu"))
    assert isinstance(kernels.add_norm_fwd_kernel, InterpretedFunction)
    assert isinstance(kernels.add_norm_bwd_kernel, InterpretedFunction)
    import os

    assert "TRITON_INTERPRET" not in os.environ  # the flag was only in effect while importing


def test_is_available_and_hook_validation():
    assert resnorm.kernels.is_available() == torch.cuda.is_available()
    with pytest.raises(ValueError, match="power of two"):
        with launch.force_max_block_n(3):
            pass


def test_opcheck_custom_ops():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 24, generator=g, requires_grad=True)
    r = torch.randn(5, 24, generator=g, requires_grad=True)
    w = torch.randn(24, generator=g, requires_grad=True)
    b = torch.randn(24, generator=g, requires_grad=True)
    rs = torch.rand(5, generator=g, requires_grad=True)
    for rowscale, mode, offset in ((None, "fp32", 0.0), (rs, "llama", 0.5)):  # offset: w = weight + offset
        torch.library.opcheck(torch.ops.resnorm.add_norm_fwd.default,
                              (x, r, w, b, rowscale, None, "layer", 1e-5, F32, F32, offset, 0.0, mode))
    y, ro, mean, rstd = torch.ops.resnorm.add_norm_fwd(x, r, w, b, rs, None, "layer", 1e-5, F32, F32, -2.0,
                                                        0.0, "fp32")
    dy = torch.randn(5, 24, generator=g)
    bwd_args = (dy, None, ro.detach(), x.detach(), w.detach(), rs.detach(), mean, rstd, None, None, False,
                "layer", 1e-5, -2.0, 0.0, "fp32", F32, BF16, True, F32, F32)
    torch.library.opcheck(torch.ops.resnorm.add_norm_bwd.default, bwd_args,
                          test_utils=("test_schema", "test_faketensor"))
    # an fp16 stream: the backward gets x and residual for the rows whose sum overflowed
    x16, r16 = x.detach().half(), r.detach().half()
    y, ro, mean, rstd = torch.ops.resnorm.add_norm_fwd(x16, r16, w.half(), None, None, None, "rms", 1e-5, F16,
                                                        F16, 0.0, 0.0, "fp32")
    bwd_args = (dy.half(), None, ro, x16, w.detach().half(), None, mean, rstd, None, r16, True, "rms", 1e-5,
                0.0, 0.0, "fp32", F16, F16, True, None, None)
    torch.library.opcheck(torch.ops.resnorm.add_norm_bwd.default, bwd_args,
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_no_recompiles(monkeypatch, device):
    from torch._dynamo.testing import CompileCounterWithBackend

    monkeypatch.setenv("RESNORM_BACKEND", "triton")
    torch._dynamo.reset()
    # CPU: aot_eager (Inductor's C++ build is slow on 2 cores); CUDA: the real thing
    counter = CompileCounterWithBackend("inductor" if device == "cuda" else "aot_eager")

    def block(x, residual, weight, bias):
        y, res = add_norm(x, residual, weight, bias, kind="layer", prenorm=True, eps=1e-5)
        return torch.tanh(y) * 2, res

    compiled = torch.compile(block, backend=counter, fullgraph=True, dynamic=True)
    weight = torch.randn(48, device=device, requires_grad=True)
    bias = torch.randn(48, device=device, requires_grad=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch in (3, 5, 9):
            x = torch.randn(batch, 48, device=device, requires_grad=True)
            r = torch.randn(batch, 48, device=device)
            out, res = compiled(x, r, weight, bias)
            ref, ref_res = block(x, r, weight, bias)
            assert torch.equal(out, ref) and torch.equal(res, ref_res)
            g_c = torch.autograd.grad(out.sum() + res.sum(), (x, weight, bias))
            g_e = torch.autograd.grad(ref.sum() + ref_res.sum(), (x, weight, bias))
            for a, b in zip(g_c, g_e, strict=True):
                assert torch.equal(a, b)
    graphs = [g for g in counter.graphs if "add_norm_fwd" in g.code]
    assert len(graphs) == 1


# ----------------------------------------------------------------------------------------------
# the benchmark's pure parts


def test_byte_model():
    assert bench.bytes_moved(1024, 4096, 2, "fwd") == 4 * 1024 * 4096 * 2
    assert bench.bytes_moved(1024, 4096, 2, "fwdbwd") == 8 * 1024 * 4096 * 2
    assert bench.gbps(4e9, 2.0) == pytest.approx(2000.0)  # 4 GB in 2 ms
    with pytest.raises(ValueError, match="kind"):
        bench.bytes_moved(1, 1, 2, "bwd")


def test_bench_arguments_and_no_cuda(capsys):
    args = bench.parse_args(["--shapes", "128x256,64x1024", "--ops", "add_rmsnorm",
                             "--impls", "resnorm,eager"])
    assert args.shapes == [(128, 256), (64, 1024)] and args.ops == ["add_rmsnorm"]
    assert args.impls == ["resnorm", "eager"]
    for bad in (["--shapes", "12x"], ["--ops", "add_batchnorm"], ["--impls", "cudnn"], ["--shapes", "0x5"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)
    capsys.readouterr()
    if not torch.cuda.is_available():
        assert bench.main(["--shapes", "64x64"]) == 2
        out = capsys.readouterr()
        assert "CUDA" in out.out + out.err and "Traceback" not in out.out + out.err


def test_bench_report_writing(tmp_path):
    rows = [bench.make_row("add_rmsnorm", "resnorm", 1024, 4096, 0.010, 0.030, 12.5),
            bench.make_row("add_rmsnorm", "eager", 1024, 4096, 0.020, None, 20.0)]
    assert rows[0]["fwd_GBps"] == pytest.approx(4 * 1024 * 4096 * 2 / 0.010e-3 / 1e9)
    assert rows[1]["fwdbwd_GBps"] is None
    result = {"device": "Fake GPU", "torch": "2.x", "triton": "3.x", "copy_GBps": 3000.0, "rows": rows}
    json_path, md_path = bench.write_results(result, tmp_path)
    assert json_path.name == "Fake_GPU.json" and md_path.name == "Fake_GPU.md"
    assert json.loads(json_path.read_text()) == result
    md = md_path.read_text()
    assert "add_rmsnorm" in md and "1024×4096" in md and "copy" in md.lower()
    pct = 100 * rows[0]["fwd_GBps"] / 3000.0
    assert f"{pct:.0f}%" in md


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_properties(0).total_memory < 40e9,
                    reason="needs a CUDA device with >= 40 GB")
@pytest.mark.parametrize("dropout_p", [0.0, 0.2])
def test_more_than_2_to_the_31_elements(dropout_p):
    """int64 offsets: the rows past element 2^31 (and Philox counters past 2^32) are right."""
    n = 4096
    m = (1 << 31) // n + 3
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(m, n, device="cuda", dtype=BF16, generator=g).requires_grad_(True)
    w = torch.randn(n, device="cuda", dtype=BF16, generator=g)
    with use_backend("triton"):
        y, ro = add_norm(x, None, w, kind="rms", prenorm=True, dropout_p=dropout_p,
                         residual_dtype=torch.float32)
    tail = slice(m - 5, m)
    if dropout_p:
        keep = ro[tail] != 0
        assert abs(1 - keep.float().mean().item() - dropout_p) < 0.02
        torch.testing.assert_close(ro[tail][keep], x[tail].float()[keep] / (1 - dropout_p))
    else:
        assert torch.equal(ro[tail], x[tail].float())
    y64, _ = ref64(ro[tail].double(), None, w, None, kind="rms", eps=1e-6, zero_centered_weight=False)
    assert (y[tail].double() - y64).abs().max() < 5e-2
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert torch.isfinite(dx[tail].float()).all() and (dx[tail] != 0).any()
    if dropout_p:
        assert torch.equal(dx[tail] != 0, ro[tail] != 0)  # the backward's mask is the forward's


def test_compiled_path_builds_for_sm90_with_16_byte_accesses():
    """The CPU tests run the interpreter; this compiles the CUDA path (Triton's ptxas, no GPU needed)
    for two benchmark shapes plus dropout and the wide-row kernels, and reads the resources."""
    from resnorm.kernels import compile_report

    pytest.importorskip("triton.backends.nvidia")
    for variant in compile_report.variants([(65536, 1024), (8192, 8192)]):
        try:
            report = compile_report.compile_variant(variant, arch=90)
        except (FileNotFoundError, PermissionError) as exc:  # no usable ptxas in this install
            pytest.skip(f"ptxas unavailable: {exc}")
        assert report["load_vectors"] and max(report["load_vectors"]) == "v4", report
        if report["stack"] is not None:
            assert report["stack"] == 0 and report["local"] == 0, report  # nothing spills


def test_bench_sweep_dry_run_on_cpu(tmp_path, monkeypatch, capsys):
    """The whole measurement flow on CPU with a stand-in timer: rows, checks, files."""
    monkeypatch.setenv("RESNORM_BACKEND", "triton")
    calls = []

    def fake_do_bench(fn, warmup=None, rep=None, grad_to_none=None, return_mode=None):
        fn()
        calls.append(return_mode)
        return 0.5

    args = bench.parse_args(["--shapes", "4x32", "--impls", "resnorm,eager,liger", "--out", str(tmp_path)])
    result = bench.run_sweep(args, device="cpu", do_bench=fake_do_bench)
    assert set(calls) == {"median"}
    assert result["copy_GBps"] == pytest.approx(bench.gbps(2 * (1 << 20), 0.5))
    ran = {(r["op"], r["impl"]) for r in result["rows"] if r["fwd_ms"] is not None}
    assert {("add_rmsnorm", "resnorm"), ("add_rmsnorm", "eager"), ("add_layernorm", "eager")} <= ran
    assert all(c["ok"] for c in result["checks"] if c["impl"] == "eager"), result["checks"]
    row = next(r for r in result["rows"] if r["impl"] == "resnorm")
    assert row["fwd_GBps"] == pytest.approx(bench.gbps(4 * 4 * 32 * 2, 0.5))
    json_path, _ = bench.write_results(result, tmp_path)
    assert json.loads(json_path.read_text())["rows"][0]["M"] == 4


def test_tuning_candidates_and_dry_run(monkeypatch):
    from resnorm.kernels import launch

    monkeypatch.setattr(launch, "_programs_budget", lambda device: 132)  # an H100's SM count
    cands = bench.tune_candidates(8192, 8192, "cuda")
    assert cands[0] == {} and {"bwd_warps_per_sm": 32} in cands
    assert {"wide_fwd_block_n": 4096} not in cands  # no effect on a row that fits one program
    wide = bench.tune_candidates(256, 262144, "cuda")
    assert {"wide_fwd_block_n": 4096} in wide and {"fwd_tile": 8192} not in wide
    with pytest.raises(ValueError, match="unknown tuning"):
        with launch.tuned(fwd_tiles=1):
            pass
    with launch.tuned(bwd_warps_per_sm=32):
        assert launch.backward_config(8192, 8192, torch.device("cuda")).groups == 264
    assert launch.backward_config(8192, 8192, torch.device("cuda")).groups == 132
    monkeypatch.setenv("RESNORM_BACKEND", "triton")
    args = bench.parse_args(["--shapes", "4x32", "--ops", "add_rmsnorm", "--tune"])
    rows = bench.run_tuning(args, device="cpu", do_bench=lambda fn, **kw: (fn(), 0.25)[1])
    assert [r["tuning"] for r in rows] == [{}] and rows[0]["fwdbwd_ms"] == 0.25


def test_plain_norm_writes_no_residual_copy_and_float64_is_refused():
    from resnorm.kernels import add_norm as kernel_add_norm

    x = torch.randn(6, 40, requires_grad=True)
    w = torch.randn(40, requires_grad=True)
    kw = dict(kind="rms", eps=1e-6, out_dtype=F32)
    y, ro = kernel_add_norm(x, None, w, None, residual_dtype=F32, **kw)
    assert ro is x  # nothing written: residual_out would equal x (as in the PyTorch path)
    y64, _ = ref64(x.detach(), None, w.detach(), None, kind="rms", eps=1e-6, zero_centered_weight=False)
    assert (y.double() - y64).abs().max() < 1e-5
    dx, dw = torch.autograd.grad(y.sum(), (x, w))  # the backward read x in place of residual_out
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    dx64, dw64 = torch.autograd.grad(ref64(x64, None, w64, None, kind="rms", eps=1e-6,
                                           zero_centered_weight=False)[0].sum(), (x64, w64))
    assert (dx.double() - dx64).abs().max() < 1e-4 and (dw.double() - dw64).abs().max() < 1e-4
    _, ro_bf16 = kernel_add_norm(x, None, w, None, residual_dtype=BF16, **kw)
    assert ro_bf16.dtype == BF16 and torch.equal(ro_bf16, x.detach().to(BF16))
    with pytest.raises(TypeError, match="float64"):
        kernel_add_norm(x.double(), None, w, None, residual_dtype=torch.float64, **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the auto backend picks the kernels on CUDA only")
def test_auto_backend_keeps_a_float64_parameter_on_the_pytorch_path(monkeypatch):
    """docs/kernels.md: the auto backend keeps float64 x, residual, weight or bias on the PyTorch path
    (the kernels refuse them); an fp32 x with a float64 weight must not raise."""
    monkeypatch.setenv("RESNORM_BACKEND", "auto")
    x = torch.randn(4, 32, device="cuda")
    for weight, residual in ((torch.randn(32, device="cuda", dtype=torch.float64), None),
                             (None, torch.randn(4, 32, device="cuda", dtype=torch.float64))):
        y = add_norm(x, residual, weight, kind="rms")
        with use_backend("torch"):
            torch.testing.assert_close(y, add_norm(x, residual, weight, kind="rms"))

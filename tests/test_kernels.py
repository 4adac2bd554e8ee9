"""The fused add+norm Triton kernels against a float64 reference written here (CPU: Triton's interpreter;
CUDA too when present), their torch.library ops under torch.compile, and the benchmark's pure parts.

Tolerance rule (design.md, as in flash-attn's tests): ``|kernel - ref64| <= 2 * |pt - ref64| + atol``
elementwise, pt = resnorm's PyTorch path in the same dtype.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import resnorm
from resnorm import bench
from resnorm.functional import add_norm, use_backend
from resnorm.kernels import launch

pytest.importorskip("triton")

ATOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def ref64(x, residual, weight, bias, *, kind, eps, zero_centered_weight, keep=None, dropout_p=0.0):
    """The contract in float64 with no torch.nn.functional: returns (y, s)."""
    s = x.double()
    if keep is not None:
        s = s * keep.double() / (1.0 - dropout_p)
    if residual is not None:
        s = s + residual.double()
    n = s.shape[-1]
    centered = s - s.sum(-1, keepdim=True) / n if kind == "layer" else s
    y = centered / torch.sqrt((centered * centered).sum(-1, keepdim=True) / n + eps)
    if weight is not None:
        w = weight.double()
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


def make_inputs(m, n, dtype, *, device, has_residual=True, residual_dtype=None, weight_dtype=None,
                has_bias=True, zero_centered=False, row_stride_pad=0, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rows(dt):
        t = torch.randn(m, n + row_stride_pad, generator=g).to(dt)
        return t[:, :n].to(device)  # strided rows when row_stride_pad > 0

    x = rows(dtype)
    residual = rows(residual_dtype or dtype) if has_residual else None
    weight = None
    if weight_dtype is not None:
        center = 0.0 if zero_centered else 1.0
        weight = (torch.randn(n, generator=g) * 0.5 + center).to(weight_dtype).to(device)
    bias = (torch.randn(n, generator=g) * 0.5).to(weight_dtype or dtype).to(device) if has_bias else None
    return x, residual, weight, bias


def run_add_norm(backend, x, residual, weight, bias, dy, dro, **kw):
    """add_norm with prenorm on leaf copies of the inputs; returns outputs and gradients (None where
    an input is absent)."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None
              for t in (x, residual, weight, bias)]
    with use_backend(backend):
        y, ro = add_norm(*leaves, prenorm=True, **kw)
    loss = (y.float() * dy.float()).sum()
    if dro is not None:
        loss = loss + (ro.float() * dro.float()).sum()
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(loss, present, allow_unused=True) if present and y.numel() else
                 [torch.zeros_like(t) for t in present])
    return y, ro, [next(grads) if t is not None else None for t in leaves]


def check_against_reference(device, m, n, dtype, *, kind, residual_dtype=None, out_dtype=None,
                            weight_dtype=None, has_residual=True, has_bias=True, zero_centered=False,
                            row_stride_pad=0, with_dro=True, eps=1e-5, seed=0):
    x, residual, weight, bias = make_inputs(
        m, n, dtype, device=device, has_residual=has_residual, residual_dtype=residual_dtype,
        weight_dtype=weight_dtype, has_bias=has_bias, zero_centered=zero_centered,
        row_stride_pad=row_stride_pad, seed=seed)
    kw = dict(kind=kind, eps=eps, out_dtype=out_dtype, zero_centered_weight=zero_centered,
              residual_dtype=residual_dtype if has_residual else None)
    g = torch.Generator().manual_seed(seed + 1)
    res_out_dtype = residual_dtype or dtype
    dy = torch.randn(m, n, generator=g).to(out_dtype or dtype).to(device)
    dro = torch.randn(m, n, generator=g).to(res_out_dtype).to(device) if with_dro else None

    yk, rok, gk = run_add_norm("triton", x, residual, weight, bias, dy, dro, **kw)
    yp, rop, gp = run_add_norm("torch", x, residual, weight, bias, dy, dro, **kw)
    leaves64 = [t.detach().double().cpu().requires_grad_(True) if t is not None else None
                for t in (x, residual, weight, bias)]
    y64, s64 = ref64(*leaves64, kind=kind, eps=eps, zero_centered_weight=zero_centered)
    present = [t for t in leaves64 if t is not None]
    loss64 = (y64 * dy.double().cpu()).sum() + ((s64 * dro.double().cpu()).sum() if with_dro else 0.0)
    grads64 = iter(torch.autograd.grad(loss64, present, allow_unused=True) if m * n else
                   [torch.zeros_like(t) for t in present])
    g64 = [next(grads64) if t is not None else None for t in leaves64]

    assert yk.dtype == (out_dtype or dtype) and yk.shape == x.shape and yk.device == x.device
    assert rok.dtype == res_out_dtype and rok.shape == x.shape
    atol = ATOL[dtype]
    assert_close_by_rule(yk, yp, y64, atol, "y")
    # the backward starts from residual_out as stored (the PyTorch path keeps s in fp32): its accuracy
    # is that of the coarser of x's dtype and residual_dtype
    atol = max(atol, ATOL[res_out_dtype])
    assert torch.equal(rok.cpu(), rop.cpu()), "residual_out must equal the PyTorch path's exactly"
    for name, a, b, c in zip(("dx", "d_residual", "d_weight", "d_bias"), gk, gp, g64, strict=True):
        if c is None:
            assert a is None
            continue
        assert a.dtype == b.dtype, name
        # dW and dB sum M rows: scale atol with the size of the sum
        tol = atol * (max(1.0, math.sqrt(m)) if name in ("d_weight", "d_bias") else 1.0)
        assert_close_by_rule(a, b, c, tol, name)


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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block,dropout_p", [(None, 0.1), (64, 0.0)])
def test_bitwise_deterministic(device, block, dropout_p):
    m = 13 if dropout_p == 0 else 64
    x, residual, weight, bias = make_inputs(m, 300, BF16, device=device, weight_dtype=BF16, seed=5)
    g = torch.Generator().manual_seed(9)
    dy = torch.randn(m, 300, generator=g).to(BF16).to(device)
    dro = torch.randn(m, 300, generator=g).to(BF16).to(device)
    kw = dict(kind="layer", eps=1e-5, dropout_p=dropout_p)
    runs = []
    for _ in range(2):
        torch.manual_seed(11)
        with launch.force_max_block_n(block or 16384):
            runs.append(run_add_norm("triton", x, residual, weight, bias, dy, dro, **kw))
    (y1, ro1, g1), (y2, ro2, g2) = runs
    assert torch.equal(y1, y2) and torch.equal(ro1, ro2)
    for a, b in zip(g1, g2, strict=True):
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
    torch.library.opcheck(torch.ops.resnorm.add_norm_fwd.default,
                          (x, r, w, b, None, "layer", 1e-5, F32, F32, False, 0.0))
    y, ro, mean, rstd = torch.ops.resnorm.add_norm_fwd(x, r, w, b, None, "layer", 1e-5, F32, F32, False, 0.0)
    dy = torch.randn(5, 24, generator=g)
    bwd_args = (dy, None, ro.detach(), w.detach(), mean, rstd, None, "layer", 1e-5, False, 0.0, F32, BF16,
                True, F32)
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

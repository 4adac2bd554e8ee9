"""add_norm's PyTorch path against a float64 reference written here, and every validation error."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import resnorm
from resnorm.functional import add_norm, get_backend, layer_norm, rms_norm, use_backend

ATOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def ref64(x, residual=None, weight=None, bias=None, *, kind="rms", eps=1e-6, zero_centered_weight=False):
    """The contract in float64, row by row, with no torch.nn.functional."""
    s = x.double()
    if residual is not None:
        s = s + residual.double()
    n = s.shape[-1]
    if kind == "layer":
        mean = s.sum(-1, keepdim=True) / n
        centered = s - mean
    else:
        centered = s
    var = (centered * centered).sum(-1, keepdim=True) / n
    y = centered / torch.sqrt(var + eps)
    if weight is not None:
        w = weight.double()
        y = y * (1.0 + w if zero_centered_weight else w)
    if bias is not None:
        y = y + bias.double()
    return y, s


@settings(max_examples=60, deadline=None)
@given(
    lead=st.lists(st.integers(0, 5), min_size=0, max_size=2),
    n=st.integers(1, 70),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    kind=st.sampled_from(["rms", "layer"]),
    has_residual=st.booleans(),
    has_weight=st.booleans(),
    has_bias=st.booleans(),
    zero_centered=st.booleans(),
    residual_fp32=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_add_norm_matches_float64(lead, n, dtype, kind, has_residual, has_weight, has_bias, zero_centered,
                                  residual_fp32, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (*lead, n)
    x = torch.randn(shape, generator=g).to(dtype)
    residual = torch.randn(shape, generator=g).to(dtype) if has_residual else None
    w_center = 0 if zero_centered else 1
    weight = (torch.randn(n, generator=g) * 0.5 + w_center).to(dtype) if has_weight else None
    bias = torch.randn(n, generator=g).to(dtype) if has_bias else None
    residual_dtype = torch.float32 if residual_fp32 else None
    y, r = add_norm(x, residual, weight, bias, kind=kind, prenorm=True, residual_dtype=residual_dtype,
                    zero_centered_weight=zero_centered)
    want_y, want_s = ref64(x, residual, weight, bias, kind=kind, zero_centered_weight=zero_centered)
    assert y.dtype == dtype and y.shape == x.shape
    assert r.dtype == (torch.float32 if residual_fp32 else dtype) and r.shape == x.shape
    # one rounding of the fp32 result to the output dtype, relative to the magnitude of y
    tol = ATOL[dtype] * (1 + want_y.abs())
    assert ((y.double() - want_y).abs() <= tol).all()
    assert ((r.double() - want_s).abs() <= ATOL[r.dtype] * (1 + want_s.abs())).all()


def test_prenorm_returns_pair_and_y_alone_otherwise():
    x, res = torch.randn(4, 8), torch.randn(4, 8)
    y = add_norm(x, res)
    y2, s = add_norm(x, res, prenorm=True)
    assert isinstance(y, torch.Tensor) and torch.equal(y, y2)
    assert torch.equal(s, x + res)


def test_prenorm_without_residual_does_not_alias_input():
    x = torch.randn(3, 5)
    _, s = add_norm(x, prenorm=True)
    assert torch.equal(s, x) and s.data_ptr() != x.data_ptr()


def test_fp32_residual_stream_keeps_precision():
    # bf16 activations, fp32 stream: the stream must carry the fp32 sum, not a bf16-rounded one
    x = torch.randn(16, 64).bfloat16()
    res = torch.randn(16, 64) * 100
    _, s = add_norm(x, res, prenorm=True, residual_dtype=torch.float32)
    assert s.dtype == torch.float32
    assert torch.equal(s, x.float() + res)


def test_out_dtype():
    x = torch.randn(2, 8, dtype=torch.bfloat16)
    assert add_norm(x, out_dtype=torch.float32).dtype == torch.float32
    assert add_norm(x.float(), out_dtype=torch.float16).dtype == torch.float16


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_gradients_match_float64(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 33, generator=g, dtype=torch.float64, requires_grad=True)
    res = torch.randn(6, 33, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(33, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(33, generator=g, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(6, 33, generator=g, dtype=torch.float64)
    ds = torch.randn(6, 33, generator=g, dtype=torch.float64)

    def loss_of(fn):
        y, s = fn()
        return (y * dy).sum() + (s * ds).sum()

    got = torch.autograd.grad(
        loss_of(lambda: add_norm(x.float(), res.float(), w.float(), b.float(), kind=kind, prenorm=True)),
        (x, res, w, b))
    want = torch.autograd.grad(loss_of(lambda: ref64(x, res, w, b, kind=kind)), (x, res, w, b))
    for name, a, e in zip(("x", "residual", "weight", "bias"), got, want, strict=True):
        assert torch.allclose(a, e, rtol=1e-4, atol=1e-4), name


def test_dropout_rate_scale_and_reproducibility():
    x = torch.ones(200, 500)
    s1 = add_norm(x, torch.zeros_like(x), prenorm=True, dropout_p=0.3,
                  generator=torch.Generator().manual_seed(1))[1]
    s2 = add_norm(x, torch.zeros_like(x), prenorm=True, dropout_p=0.3,
                  generator=torch.Generator().manual_seed(1))[1]
    assert torch.equal(s1, s2)
    kept = s1 != 0
    rate = 1 - kept.float().mean().item()
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / x.numel())
    assert torch.allclose(s1[kept], torch.full_like(s1[kept], 1 / 0.7))


def test_dropout_backward_uses_the_same_mask():
    x = torch.randn(50, 40, requires_grad=True)
    _, s = add_norm(x, torch.zeros(50, 40), prenorm=True, dropout_p=0.5,
                    generator=torch.Generator().manual_seed(3))
    (gx,) = torch.autograd.grad(s.sum(), x)
    assert torch.equal(gx != 0, s != 0)
    assert torch.allclose(gx[gx != 0], torch.full_like(gx[gx != 0], 2.0))


@pytest.mark.parametrize("shape", [(0, 8), (3, 0, 8), (0,)])
def test_empty_tensors(shape):
    x = torch.randn(shape, requires_grad=True)
    y, s = add_norm(x, torch.randn(shape), prenorm=True)
    assert y.shape == s.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_layer_norm_and_rms_norm_match_torch():
    x, w, b = torch.randn(5, 12), torch.randn(12), torch.randn(12)
    torch.testing.assert_close(layer_norm(x, w, b), torch.nn.functional.layer_norm(x, (12,), w, b, 1e-5))
    torch.testing.assert_close(rms_norm(x, w, eps=1e-6), torch.nn.functional.rms_norm(x, (12,), w, 1e-6))
    assert resnorm.add_norm is add_norm and resnorm.layer_norm is layer_norm and resnorm.rms_norm is rms_norm


def test_non_contiguous_rows():
    base = torch.randn(6, 20)
    x = base[:, 2:18]  # a row stride of 20, stride(-1) == 1
    xt = torch.randn(16, 6).t()  # stride(-1) != 1
    for v in (x, xt):
        want, _ = ref64(v)
        torch.testing.assert_close(add_norm(v).double(), want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "kwargs, exc, needle",
    [
        (dict(x=torch.randn(2, 4), residual=torch.randn(2, 5)), ValueError, "residual"),
        (dict(x=torch.randn(2, 4), weight=torch.randn(5)), ValueError, "weight"),
        (dict(x=torch.randn(2, 4), weight=torch.randn(4, 1)), ValueError, "weight"),
        (dict(x=torch.randn(2, 4), bias=torch.randn(3)), ValueError, "bias"),
        (dict(x=torch.ones(2, 4, dtype=torch.int64)), TypeError, "x"),
        (dict(x=torch.randn(2, 4), residual=torch.ones(2, 4, dtype=torch.int32)), TypeError, "residual"),
        (dict(x=torch.randn(2, 4), weight=torch.ones(4, dtype=torch.int32)), TypeError, "weight"),
        (dict(x=[1.0, 2.0]), TypeError, "x"),
        (dict(x=torch.tensor(1.0)), ValueError, "x"),
        (dict(x=torch.randn(2, 4), eps=0.0), ValueError, "eps"),
        (dict(x=torch.randn(2, 4), eps=-1e-5), ValueError, "eps"),
        (dict(x=torch.randn(2, 4), eps="small"), TypeError, "eps"),
        (dict(x=torch.randn(2, 4), kind="batch"), ValueError, "kind"),
        (dict(x=torch.randn(2, 4), dropout_p=1.0), ValueError, "dropout_p"),
        (dict(x=torch.randn(2, 4), dropout_p=-0.1), ValueError, "dropout_p"),
        (dict(x=torch.randn(2, 4), out_dtype=torch.int8), TypeError, "out_dtype"),
        (dict(x=torch.randn(2, 4), residual_dtype="float32"), TypeError, "residual_dtype"),
    ],
)
def test_validation_errors_name_the_argument(kwargs, exc, needle):
    x = kwargs.pop("x")
    with pytest.raises(exc, match=needle):
        add_norm(x, **kwargs)


def test_backend_env_var(monkeypatch):
    monkeypatch.setenv("RESNORM_BACKEND", "torch")
    assert get_backend() == "torch"
    monkeypatch.setenv("RESNORM_BACKEND", "cuda")
    with pytest.raises(ValueError, match="RESNORM_BACKEND"):
        add_norm(torch.randn(2, 3))
    monkeypatch.delenv("RESNORM_BACKEND")
    assert get_backend() == "auto"
    with use_backend("torch"):
        assert get_backend() == "torch"
    assert get_backend() == "auto"
    with pytest.raises(ValueError, match="backend"):
        with use_backend("gpu"):
            pass


def test_float64_inputs_are_computed_in_float64():
    x, res, w = (
        torch.randn(4, 9, dtype=torch.float64), torch.randn(4, 9, dtype=torch.float64),
        torch.randn(9, dtype=torch.float64))
    want, _ = ref64(x, res, w, kind="layer", eps=1e-5)
    torch.testing.assert_close(add_norm(x, res, w, kind="layer", eps=1e-5), want, rtol=1e-12, atol=1e-12)

"""Norm modules of resnorm.nn against torch.nn and float64 formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import resnorm.nn.norms as norms_module
from resnorm.functional import add_norm
from resnorm.nn import (
    NORMS,
    AddNorm,
    BatchNorm,
    ChannelsFirst,
    DyT,
    GroupNorm,
    LayerNorm,
    RMSNorm,
    ScaleNorm,
    make_norm,
)

ATOL, RTOL = 1e-5, 1e-5



def _randomize_(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def _run(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Output, input grad and parameter grads for a fixed random upstream gradient."""
    x = x.detach().clone().requires_grad_(True)
    y = module(x)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    grads = torch.autograd.grad(y, [x, *module.parameters()], dy)
    return y.detach(), grads[0], list(grads[1:])


def _assert_same_module_behaviour(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    y1, dx1, dp1 = _run(ours, x)
    y2, dx2, dp2 = _run(theirs, x)
    torch.testing.assert_close(y1, y2, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(dx1, dx2, atol=ATOL, rtol=RTOL)
    assert len(dp1) == len(dp2)
    for a, b in zip(dp1, dp2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# LayerNorm / RMSNorm: drop-ins for torch.nn


LAYERNORM_CASES = [
    dict(normalized_shape=16),
    dict(normalized_shape=(16,), eps=1e-3),
    dict(normalized_shape=(4, 5)),
    dict(normalized_shape=7, bias=False),
    dict(normalized_shape=7, elementwise_affine=False),
    dict(normalized_shape=[3, 2, 5], elementwise_affine=False, bias=False),
]


@pytest.mark.parametrize("kwargs", LAYERNORM_CASES, ids=str)
def test_layernorm_matches_torch(kwargs):
    ours, theirs = LayerNorm(**kwargs), nn.LayerNorm(**kwargs)
    _randomize_(theirs)
    ours.load_state_dict(theirs.state_dict())  # torch -> ours
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    shape = ours.normalized_shape
    x = torch.randn(3, 2, *shape) * 3 + 1
    _assert_same_module_behaviour(ours, theirs, x)
    # ours -> torch
    _randomize_(ours, seed=5)
    back = nn.LayerNorm(**kwargs)
    back.load_state_dict(ours.state_dict())
    torch.testing.assert_close(back(x), ours(x), atol=ATOL, rtol=RTOL)


RMSNORM_CASES = [
    dict(normalized_shape=16),
    dict(normalized_shape=(16,), eps=1e-2),
    dict(normalized_shape=(4, 5), eps=None),
    dict(normalized_shape=9, elementwise_affine=False),
]


@pytest.mark.parametrize("kwargs", RMSNORM_CASES, ids=str)
def test_rmsnorm_matches_torch(kwargs):
    ours = RMSNorm(**kwargs)
    kwargs = dict(kwargs, eps=ours.eps)  # resnorm's default eps is 1e-6, torch's None (finfo)
    theirs = nn.RMSNorm(**kwargs)
    _randomize_(theirs)
    ours.load_state_dict(theirs.state_dict())
    shape = ours.normalized_shape
    x = torch.randn(5, *shape) * 0.01  # small values: eps matters
    _assert_same_module_behaviour(ours, theirs, x)
    _randomize_(ours, seed=3)
    back = nn.RMSNorm(**kwargs)
    back.load_state_dict(ours.state_dict())
    torch.testing.assert_close(back(x), ours(x), atol=ATOL, rtol=RTOL)


def _rms_of_small_values(eps, dtype=torch.float32):
    x = torch.full((2, 4), 1e-4, dtype=dtype)
    x[:, 0] = 0.0  # small values: eps matters
    ms = (x.double() ** 2).mean(-1, keepdim=True)
    return x, x.double() / torch.sqrt(ms + eps)


def test_one_default_eps_per_norm_kind():
    """RMSNorm 1e-6 everywhere (RMSNorm, AddNorm, make_norm, add_norm, rms_norm), LayerNorm 1e-5."""
    x, expected = _rms_of_small_values(1e-6)
    for norm in (RMSNorm(4), make_norm("rmsnorm", 4)):
        assert norm.eps == 1e-6
        torch.testing.assert_close(norm(x).double(), expected, atol=1e-6, rtol=1e-6)
    y, _ = AddNorm(4, kind="rms")(x)
    torch.testing.assert_close(y.double(), expected, atol=1e-6, rtol=1e-6)
    assert AddNorm(4, kind="layer").eps == LayerNorm(4).eps == make_norm("layernorm", 4).eps == 1e-5


def test_rmsnorm_eps_none_is_finfo_eps_of_the_normalized_sum():
    """torch's rule for eps=None, finfo(dtype).eps, with dtype that of x + residual: the same whichever
    operand of the fused add is called x (a bf16 branch output added to an fp32 stream: fp32's eps)."""
    x, expected = _rms_of_small_values(torch.finfo(torch.float32).eps)
    norm = RMSNorm(4, eps=None)
    torch.testing.assert_close(norm(x).double(), expected, atol=1e-5, rtol=1e-5)
    small_bf16 = torch.zeros(2, 4, dtype=torch.bfloat16)
    for a, b in ((small_bf16, x), (x, small_bf16)):  # s = x either way, an fp32 sum
        y, s = norm.forward_add(a, b, prenorm=True)
        assert s.dtype == b.dtype and y.dtype == a.dtype
        tol = 1e-2 if y.dtype == torch.bfloat16 else 1e-5  # bf16's own eps would give y ~ 1e-3, not ~1
        torch.testing.assert_close(y.double(), expected, atol=tol, rtol=tol)
    xb, expected_b = _rms_of_small_values(torch.finfo(torch.bfloat16).eps, torch.bfloat16)
    torch.testing.assert_close(norm(xb).double(), expected_b, atol=1e-2, rtol=1e-2)


def test_norm_modules_casting_mode_and_rowscale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=g).bfloat16()
    res = torch.randn(3, 5, 16, generator=g).bfloat16()
    rs = torch.rand(3, 5, generator=g)
    for cls, kind in ((RMSNorm, "rms"), (LayerNorm, "layer")):
        norm = cls(16, casting_mode="llama")
        _randomize_(norm)
        y, s = norm.forward_add(x, res, prenorm=True, rowscale=rs)
        want_y, want_s = add_norm(x, res, norm.weight, getattr(norm, "bias", None), kind=kind, eps=norm.eps,
                                  prenorm=True, rowscale=rs, casting_mode="llama")
        assert torch.equal(y, want_y) and torch.equal(s, want_s)
        plain = cls(16)  # the default fp32 casting rounds once: another result in bf16
        plain.load_state_dict(norm.state_dict())
        assert not torch.equal(y, plain.forward_add(x, res, rowscale=rs))
        assert "llama" in repr(norm)
    m = AddNorm(16, kind="rms", casting_mode="gemma", zero_centered_weight=True)
    y, s = m(x, res, rs)
    torch.testing.assert_close(s.float(), (x.float() * rs[..., None] + res.float()).bfloat16().float())
    for bad in ("bf16", None):
        with pytest.raises((ValueError, TypeError), match="casting_mode"):
            RMSNorm(16, casting_mode=bad)
        with pytest.raises((ValueError, TypeError), match="casting_mode"):
            AddNorm(16, casting_mode=bad)
    for bad in (float("inf"), 0.0, float("nan")):
        for make in (lambda e: RMSNorm(4, eps=e), lambda e: LayerNorm(4, eps=e), lambda e: AddNorm(4, eps=e)):
            with pytest.raises(ValueError, match="eps"):
                make(bad)


def test_norm_factory_kwargs_and_empty_input():
    ln = LayerNorm((3, 4), dtype=torch.float64, device="cpu")
    assert ln.weight.dtype == torch.float64 and ln.weight.shape == (3, 4)
    assert RMSNorm(4, dtype=torch.float64).weight.dtype == torch.float64
    assert LayerNorm(4)(torch.empty(0, 4)).shape == (0, 4)


@pytest.mark.parametrize("cls", [LayerNorm, RMSNorm])
def test_norm_modules_call_add_norm(cls, monkeypatch):
    calls = []
    real = norms_module.add_norm

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(norms_module, "add_norm", spy)
    cls((3, 4))(torch.randn(2, 5, 3, 4))
    assert calls == [torch.Size([2, 5, 12])]  # trailing dims flattened into one row


@pytest.mark.parametrize("cls,kind", [(LayerNorm, "layer"), (RMSNorm, "rms")])
def test_forward_add_is_norm_of_the_sum(cls, kind):
    norm = cls((2, 3), eps=1e-5)
    _randomize_(norm)
    x, r = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    y, s = norm.forward_add(x, r, prenorm=True)
    torch.testing.assert_close(s, x + r)
    torch.testing.assert_close(y, norm(x + r))
    torch.testing.assert_close(norm.forward_add(x, r), y)


def test_norm_module_validation():
    with pytest.raises(TypeError, match="normalized_shape"):
        LayerNorm(2.5)
    with pytest.raises(ValueError, match="normalized_shape"):
        RMSNorm(())
    with pytest.raises(ValueError, match="normalized_shape"):
        LayerNorm((4, 0))
    with pytest.raises(ValueError, match="normalized_shape"):
        LayerNorm(4)(torch.randn(2, 5))


# ----------------------------------------------------------------------------------------------
# AddNorm


def _layer64(s, w, b, eps):
    mu = s.mean(-1, keepdim=True)
    var = ((s - mu) ** 2).mean(-1, keepdim=True)
    return (s - mu) / torch.sqrt(var + eps) * w + b


def _rms64(s, w, eps):
    return s / torch.sqrt((s**2).mean(-1, keepdim=True) + eps) * w


@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("zero_centered", [False, True])
def test_addnorm_matches_float64_formula(kind, zero_centered):
    m = AddNorm(8, kind=kind, zero_centered_weight=zero_centered, bias=True)
    assert m.eps == (1e-6 if kind == "rms" else 1e-5)
    with torch.no_grad():
        torch.testing.assert_close(m.weight, torch.zeros(8) if zero_centered else torch.ones(8))
        m.weight.uniform_(-0.5, 0.5)
        m.bias.uniform_(-0.5, 0.5)
    x, r = torch.randn(5, 8), torch.randn(5, 8)
    y, s = m(x, r)
    s64 = x.double() + r.double()
    w = m.weight.double() + (1.0 if zero_centered else 0.0)
    b = m.bias.double()
    expected = _layer64(s64, w, b, m.eps) if kind == "layer" else _rms64(s64, w, m.eps) + b
    torch.testing.assert_close(s.double(), s64, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(y.double(), expected, atol=1e-5, rtol=1e-5)
    y_nores, s_nores = m(x)
    torch.testing.assert_close(s_nores, x)


@pytest.mark.parametrize("offset", [0.5, 1.0, -2.0])
def test_norm_modules_weight_offset_match_float64(offset):
    """w = weight + weight_offset (Liger's offset): the weight starts at 1 - offset (a scale of 1, so
    the module is torch.nn's norm at init); forward and gradients against float64 formulas."""
    g = torch.Generator().manual_seed(0)
    x, r = torch.randn(4, 3, 8, generator=g), torch.randn(4, 3, 8, generator=g)
    dy = torch.randn(4, 3, 8, generator=g, dtype=torch.float64)
    for module, kind in ((LayerNorm(8, weight_offset=offset), "layer"),
                         (RMSNorm(8, weight_offset=offset), "rms"),
                         (AddNorm(8, kind="layer", weight_offset=offset), "layer"),
                         (AddNorm(8, kind="rms", bias=True, weight_offset=offset), "rms")):
        assert torch.equal(module.weight, torch.full((8,), 1.0 - offset))
        torch_norm = nn.LayerNorm(8) if kind == "layer" else nn.RMSNorm(8, eps=1e-6)
        s = x + r
        y0 = module(x, r)[0] if isinstance(module, AddNorm) else module(s)
        torch.testing.assert_close(y0, torch_norm(s), atol=ATOL, rtol=RTOL)
        _randomize_(module, seed=1)
        x1 = x.clone().requires_grad_(True)
        y = module(x1, r)[0] if isinstance(module, AddNorm) else module.forward_add(x1, r)
        params = [module.weight] + ([module.bias] if getattr(module, "bias", None) is not None else [])
        grads = torch.autograd.grad(y, [x1, *params], dy.float())
        x64 = x.double().requires_grad_(True)
        p64 = [p.detach().double().requires_grad_(True) for p in params]
        s64 = x64 + r.double()
        w64 = p64[0] + offset
        b64 = p64[1] if len(p64) > 1 else torch.zeros(8, dtype=torch.float64)
        y64 = _layer64(s64, w64, b64, module.eps) if kind == "layer" else _rms64(s64, w64, module.eps) + b64
        torch.testing.assert_close(y.double(), y64, atol=1e-5, rtol=1e-5)
        for name, a, e in zip(("x", "weight", "bias"), grads, torch.autograd.grad(y64, [x64, *p64], dy),
                              strict=False):
            torch.testing.assert_close(a.double(), e, atol=1e-4, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
        assert f"weight_offset={offset}" in repr(module)


def test_norm_modules_weight_offset_options_and_errors():
    import inspect

    for cls in (LayerNorm, RMSNorm, AddNorm):  # torch's positional signature untouched: keyword-only
        assert inspect.signature(cls).parameters["weight_offset"].kind is inspect.Parameter.KEYWORD_ONLY
    norm = LayerNorm(6, weight_offset=1.0)
    assert set(norm.state_dict()) == set(nn.LayerNorm(6).state_dict())
    assert "weight_offset" not in repr(LayerNorm(6)) and "weight_offset" not in repr(AddNorm(6))
    norm.reset_parameters()
    assert torch.equal(norm.weight, torch.zeros(6))
    # AddNorm: zero_centered_weight is weight_offset=1.0, exactly
    x, r = torch.randn(3, 6), torch.randn(3, 6)
    zc, off = AddNorm(6, zero_centered_weight=True), AddNorm(6, weight_offset=1.0)
    both = AddNorm(6, zero_centered_weight=True, weight_offset=1.0)
    for m in (zc, off, both):
        _randomize_(m, seed=2)
    assert torch.equal(zc(x, r)[0], off(x, r)[0]) and torch.equal(zc(x, r)[0], both(x, r)[0])
    with pytest.raises(ValueError, match="zero_centered_weight.*weight_offset"):
        AddNorm(6, zero_centered_weight=True, weight_offset=0.5)
    for make in (lambda o: LayerNorm(6, weight_offset=o), lambda o: RMSNorm(6, weight_offset=o),
                 lambda o: AddNorm(6, weight_offset=o)):
        for bad, exc in ((float("nan"), ValueError), (float("inf"), ValueError), ("1", TypeError),
                         (None, TypeError), (True, TypeError)):
            with pytest.raises(exc, match="weight_offset"):
                make(bad)
    for cls in (LayerNorm, RMSNorm):  # an offset needs a weight
        with pytest.raises(ValueError, match="weight_offset.*elementwise_affine"):
            cls(6, elementwise_affine=False, weight_offset=0.5)
        assert cls(6, elementwise_affine=False, weight_offset=0.0).weight is None


def test_addnorm_defaults_residual_dtype_and_dropout():
    assert AddNorm(4, kind="rms").bias is None
    assert AddNorm(4, kind="layer").bias is not None
    m = AddNorm(16, residual_dtype=torch.float64)
    _, s = m(torch.randn(2, 16), torch.randn(2, 16))
    assert s.dtype == torch.float64
    m = AddNorm(1000, dropout=0.5)
    x, r = torch.randn(4, 1000), torch.randn(4, 1000)
    _, s = m(x, r)  # training: each x element dropped or scaled by 1 / (1 - p)
    added = s - r
    dropped = added.abs() < 1e-6
    assert 0.3 < dropped.float().mean() < 0.7
    torch.testing.assert_close(added[~dropped], 2 * x[~dropped])
    m.eval()
    torch.testing.assert_close(m(x, r)[1], x + r)
    with pytest.raises(ValueError, match="kind"):
        AddNorm(4, kind="batch")
    with pytest.raises(ValueError, match="dropout"):
        AddNorm(4, dropout=1.0)
    with pytest.raises(TypeError, match="dim"):
        AddNorm(4.0)


# ----------------------------------------------------------------------------------------------
# DyT and ScaleNorm against their formulas in float64


def test_dyt_formula_and_gradients():
    m = DyT(6, dtype=torch.float64)
    assert m.alpha.item() == 0.5
    torch.testing.assert_close(m.weight, torch.ones(6, dtype=torch.float64))
    _randomize_(m)
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    expected = m.weight * torch.tanh(m.alpha * x) + m.bias
    torch.testing.assert_close(m(x), expected)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,))
    dy = torch.randn_like(x)
    got = torch.autograd.grad(m(x), [x, m.alpha, m.weight, m.bias], dy)
    t = torch.tanh(m.alpha * x)
    sech2 = 1 - t**2
    want = [
        dy * m.weight * m.alpha * sech2,
        (dy * m.weight * x * sech2).sum().reshape(1),
        (dy * t).sum((0, 1)),
        dy.sum((0, 1)),
    ]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_scalenorm_formula_and_gradients():
    m = ScaleNorm(5, dtype=torch.float64)
    assert math.isclose(m.g.item(), math.sqrt(5))
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    norm = torch.sqrt((x.detach() ** 2).sum(-1, keepdim=True))
    torch.testing.assert_close(m(x), math.sqrt(5) * x.detach() / norm)
    assert torch.autograd.gradcheck(m, (x,))
    zero = torch.zeros(2, 5, dtype=torch.float64)
    assert torch.isfinite(m(zero)).all()


def test_dyt_and_scalenorm_reject_bad_arguments_by_name():
    """eps of ScaleNorm is a finite number > 0 (as every other norm's), DyT's alpha_init a finite float:
    anything else is a clear error at construction, not NaNs at the first forward."""
    for bad in (0.0, -1e-5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="eps"):
            ScaleNorm(5, eps=bad)
    with pytest.raises(TypeError, match="eps"):
        ScaleNorm(5, eps="1e-5")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha_init"):
            DyT(5, alpha_init=bad)
    with pytest.raises(TypeError, match="alpha_init"):
        DyT(5, alpha_init="0.5")


# ----------------------------------------------------------------------------------------------
# make_norm: every name, every layout


def test_make_norm_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        make_norm("weightnorm", 8)
    for name in NORMS:
        assert name in str(err.value)
    with pytest.raises(TypeError, match="dim"):
        make_norm("layernorm", "8")
    with pytest.raises(ValueError, match="dim"):
        make_norm("rmsnorm", 0)


@pytest.mark.parametrize("name", NORMS)
@pytest.mark.parametrize("layout", ["NC", "NLC", "NCHW"])
def test_make_norm_every_name_and_layout(name, layout):
    C = 8
    shapes = {"NC": (6, C), "NLC": (3, 5, C), "NCHW": (3, C, 4, 5)}
    channels_first = layout == "NCHW"
    x = torch.randn(shapes[layout]) * 2 + 0.5
    extra = {"num_groups": 2} if name == "groupnorm" else {}
    norm = make_norm(name, C, channels_first=channels_first, **extra)
    y = norm(x)
    assert y.shape == x.shape
    # reference: move channels last, flatten positions into rows where the norm is per position
    xl = x.movedim(1, -1) if channels_first else x
    yl = y.movedim(1, -1) if channels_first else y
    rows, yrows = xl.reshape(-1, C).double(), yl.reshape(-1, C).double()
    if name == "none":
        assert isinstance(norm, nn.Identity)
        torch.testing.assert_close(y, x)
    elif name == "layernorm":
        torch.testing.assert_close(yrows, _layer64(rows, 1.0, 0.0, 1e-5), atol=1e-5, rtol=1e-5)
    elif name == "rmsnorm":
        expected = _rms64(rows, 1.0, 1e-6)
        torch.testing.assert_close(yrows, expected, atol=1e-5, rtol=1e-5)
    elif name == "dyt":
        torch.testing.assert_close(yrows, torch.tanh(0.5 * rows), atol=1e-6, rtol=1e-6)
    elif name == "scalenorm":
        expected = math.sqrt(C) * rows / rows.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(yrows, expected, atol=1e-5, rtol=1e-5)
    elif name == "batchnorm":  # per channel over batch and all positions (biased variance)
        mu, var = rows.mean(0), rows.var(0, unbiased=False)
        torch.testing.assert_close(yrows, (rows - mu) / torch.sqrt(var + 1e-5), atol=1e-5, rtol=1e-5)
    elif name == "groupnorm":  # 2 groups of 4 channels
        if channels_first:  # torch semantics: per sample and group, over the group's channels and H, W
            torch.testing.assert_close(y, nn.GroupNorm(2, C)(x), atol=1e-5, rtol=1e-5)
        else:  # token layout: per sample, per position and per group
            groups = rows.reshape(-1, 2, 4)
            mu, var = groups.mean(-1, keepdim=True), groups.var(-1, unbiased=False, keepdim=True)
            expected = ((groups - mu) / torch.sqrt(var + 1e-5)).reshape(-1, C)
            torch.testing.assert_close(yrows, expected, atol=1e-5, rtol=1e-5)


def test_batchnorm_channels_last_matches_batchnorm1d_on_transposed_input():
    ours, theirs = BatchNorm(6), nn.BatchNorm1d(6)
    _randomize_(theirs)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 7, 6) * 3 + 2  # (N, L, C)
    y1, dx1, dp1 = _run(ours, x)
    x_t = x.transpose(1, 2).detach().clone().requires_grad_(True)
    y2 = theirs(x_t)
    dy = torch.randn(y1.shape, generator=torch.Generator().manual_seed(1))
    dx2, *dp2 = torch.autograd.grad(y2, [x_t, *theirs.parameters()], dy.transpose(1, 2))
    torch.testing.assert_close(y1, y2.transpose(1, 2).detach(), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(dx1, dx2.transpose(1, 2), atol=ATOL, rtol=RTOL)
    for a, b in zip(dp1, dp2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # running statistics updated the same way (twice: ours ran _run once, theirs once)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x.transpose(1, 2)).transpose(1, 2))


def test_batchnorm_channels_first_state_dict_round_trip_with_batchnorm2d():
    ours, theirs = BatchNorm(3, channels_first=True), nn.BatchNorm2d(3)
    _randomize_(theirs)
    x = torch.randn(4, 3, 5, 5)
    theirs(x)  # update running stats
    ours.load_state_dict(theirs.state_dict())
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x))
    ours.train(), theirs.train()
    _assert_same_module_behaviour(ours, theirs, x)
    back = nn.BatchNorm2d(3)
    back.load_state_dict(ours.state_dict())
    torch.testing.assert_close(back.running_var, ours.running_var)


def test_groupnorm_against_torch_and_per_position_formula():
    x = torch.randn(2, 8, 3, 3)
    ours, theirs = GroupNorm(4, 8, channels_first=True), nn.GroupNorm(4, 8)
    _randomize_(theirs)
    ours.load_state_dict(theirs.state_dict())
    _assert_same_module_behaviour(ours, theirs, x)
    # (N, C) agrees with torch in both layouts
    x2 = torch.randn(5, 8)
    torch.testing.assert_close(GroupNorm(2, 8)(x2), nn.GroupNorm(2, 8)(x2))
    # channels last (N, L, C): per sample, per position, per group of 4 channels
    x3 = torch.randn(2, 5, 8, dtype=torch.float64)
    y3 = GroupNorm(2, 8, dtype=torch.float64)(x3)
    groups = x3.reshape(2, 5, 2, 4)
    mu, var = groups.mean(-1, keepdim=True), groups.var(-1, unbiased=False, keepdim=True)
    torch.testing.assert_close(y3, ((groups - mu) / torch.sqrt(var + 1e-5)).reshape(2, 5, 8))


@pytest.mark.parametrize("name", ["batchnorm", "groupnorm"])
def test_batch_and_group_norm_pick_the_channel_dim_by_rank_by_default(name):
    C = 8
    images = torch.randn(3, C, 5, C)  # W == C: only the rank tells the layout
    tokens = torch.randn(3, C, C)  # (N, L, C) with L == C
    auto, first, last = (
        make_norm(name, C, num_groups=2, channels_first=flag) for flag in (None, True, False)
    )
    torch.testing.assert_close(auto(images), first(images))
    torch.testing.assert_close(auto(tokens), last(tokens))
    torch.testing.assert_close(auto(tokens[:, 0]), last(tokens[:, 0]))
    assert not torch.allclose(first(images), last(images))
    torch.testing.assert_close(
        make_norm(name, C, num_groups=2)(images),
        torch.nn.BatchNorm2d(C)(images) if name == "batchnorm" else torch.nn.GroupNorm(2, C)(images),
    )


def test_layout_errors_name_the_expected_channels():
    with pytest.raises(ValueError, match="channels"):
        make_norm("batchnorm", 8, channels_first=False)(torch.randn(2, 8, 4, 4))  # NCHW map read as NHWC
    with pytest.raises(ValueError, match="channels"):
        make_norm("groupnorm", 8, channels_first=True)(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=">= 2 dims"):
        make_norm("batchnorm", 8)(torch.randn(8))
    with pytest.raises(ValueError, match="divisible"):
        make_norm("groupnorm", 8, num_groups=3)
    with pytest.raises(ValueError, match="ChannelsFirst"):
        ChannelsFirst(nn.Identity())(torch.randn(3))


def test_make_norm_channels_first_wraps_per_position_norms_and_passes_eps():
    for name in ("layernorm", "rmsnorm", "dyt", "scalenorm"):
        assert isinstance(make_norm(name, 4, channels_first=True), ChannelsFirst)
    assert make_norm("layernorm", 4, eps=1e-3).eps == 1e-3
    assert make_norm("batchnorm", 4, eps=1e-3).eps == 1e-3
    assert make_norm("groupnorm", 64).num_groups == 4  # 16 channels per group
    assert make_norm("groupnorm", 1024).num_groups == 32
    assert make_norm("groupnorm", 16).num_groups == 1


def test_make_norm_layernorm_without_bias_matches_torch():
    from resnorm.nn import make_norm

    norm = make_norm("layernorm", 6, bias=False)
    ref = torch.nn.LayerNorm(6, bias=False)
    assert norm.bias is None and set(norm.state_dict()) == set(ref.state_dict()) == {"weight"}
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        ref.weight.copy_(norm.weight)
    x = torch.randn(3, 6)
    torch.testing.assert_close(norm(x), ref(x))

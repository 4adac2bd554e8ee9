"""Residual designs: each placement's formula by hand, DeepNet constants, fusion, deep stacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import resnorm.nn.norms as norms_module
from resnorm.nn import (
    MULTI_STREAM,
    NORMS,
    PLACEMENTS,
    Residual,
    StreamBlock,
    begin_stream,
    deepnorm_constants,
    end_stream,
    make_final_norm,
    needs_final_norm,
    scale_branch_init_,
)

W = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0], [2.0, 1.0, -1.0]])  # the branch: F(x) = W x
X = torch.tensor([[1.0, 2.0, 4.0], [-3.0, 0.5, 2.0]])
EPS = 1e-5
# placements whose block maps one (..., d) stream: their formula by hand below (hyper, mhc and ngpt have
# their own tests in test_designs.py)
SINGLE_STREAM = [p for p in PLACEMENTS if p not in (*MULTI_STREAM, "ngpt")]


def linear_branch() -> nn.Linear:
    branch = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        branch.weight.copy_(W)
    return branch


def F64(x: torch.Tensor, weight: torch.Tensor = W) -> torch.Tensor:
    return x @ weight.double().T


def ln64(v: torch.Tensor) -> torch.Tensor:
    mu = v.mean(-1, keepdim=True)
    var = ((v - mu) ** 2).mean(-1, keepdim=True)
    return (v - mu) / torch.sqrt(var + EPS)


def rms64(v: torch.Tensor) -> torch.Tensor:
    return v / torch.sqrt((v**2).mean(-1, keepdim=True) + EPS)


def test_hand_computed_layernorm_of_a_row():
    # [1, 2, 4]: mean 7/3, deviations (-4/3, -1/3, 5/3), variance 14/9
    expected = torch.tensor([-4 / 3, -1 / 3, 5 / 3], dtype=torch.float64) / (14 / 9 + EPS) ** 0.5
    torch.testing.assert_close(ln64(X[:1].double())[0], expected)


@pytest.mark.parametrize("norm,N", [("layernorm", ln64), ("rmsnorm", rms64)])
@pytest.mark.parametrize("placement", SINGLE_STREAM)
def test_each_placement_matches_its_formula(placement, norm, N):
    # layer 2 of 4: lnscale divides by sqrt(2); mixln (rho 0.25: post in layer 1 only) is pre there
    block = Residual(linear_branch(), 3, placement, norm, depth=6, layer=2, num_layers=4, norm_eps=EPS)
    x = X.double()
    if placement == "none":
        expected = N(F64(x))
    elif placement == "post":
        expected = N(x + F64(x))
    elif placement in ("pre", "mixln"):
        expected = x + F64(N(x))
    elif placement == "sandwich":
        expected = x + N(F64(N(x)))
    elif placement == "deepnorm":  # depth 6: alpha = 6^(1/4), branch weight scaled by beta = 24^(-1/4)
        alpha, beta = 6**0.25, 24**-0.25
        torch.testing.assert_close(block.branch.weight, W * beta)
        expected = N(alpha * x + F64(x, W * beta))
    elif placement == "rezero":  # gate 0 at init: the identity; then x + a W x
        torch.testing.assert_close(block(X), X)
        with torch.no_grad():
            block.gate.fill_(0.5)
        expected = x + 0.5 * F64(x)
    elif placement == "layerscale":
        torch.testing.assert_close(block.scale, torch.full((3,), 0.1))
        expected = x + 0.1 * F64(N(x))
    elif placement == "reordered":
        expected = x + N(F64(x))
    elif placement == "lnscale":
        expected = x + F64(N(x) / 2**0.5)
    else:  # seed
        expected = N(x) + F64(N(x))
    torch.testing.assert_close(block(X).double(), expected, atol=1e-5, rtol=1e-5)
    # the stream form (fused adds): (hidden, residual) stands for hidden + residual; the same result
    stream = StreamBlock(linear_branch(), 3, placement, norm, depth=6, layer=2, num_layers=4, norm_eps=EPS)
    stream.load_state_dict(block.state_dict())
    assert stream.fused
    h, r = stream(X[:, [2, 0, 1]], X - X[:, [2, 0, 1]])
    got = h if r is None else h + r
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_mixln_layers_up_to_floor_rho_l_are_post():
    x = X.double()
    for layer, num_layers, rho, post in [(1, 4, 0.25, True), (2, 4, 0.25, False), (2, 8, 0.25, True),
                                         (3, 8, 0.25, False), (4, 4, 1.0, True), (1, 4, 0.0, False)]:
        block = Residual(linear_branch(), 3, "mixln", "layernorm", layer=layer, num_layers=num_layers,
                         mixln_rho=rho, norm_eps=EPS)
        expected = ln64(x + F64(x)) if post else x + F64(ln64(x))
        torch.testing.assert_close(block(X).double(), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="layer"):
        Residual(linear_branch(), 3, "mixln")
    with pytest.raises(ValueError, match="mixln_rho"):
        Residual(linear_branch(), 3, "mixln", layer=1, num_layers=2, mixln_rho=1.5)
    with pytest.raises(ValueError, match="layer"):
        Residual(linear_branch(), 3, "lnscale")
    with pytest.raises(ValueError, match="num_layers"):
        Residual(linear_branch(), 3, "mixln", layer=5, num_layers=4)


def test_plain_blocks_none_placement():
    plain = Residual(linear_branch(), 3, "none", "none")
    torch.testing.assert_close(plain(X), X @ W.T)
    plain_bn = Residual(linear_branch(), 3, "none", "batchnorm")
    y = F64(X.double())
    expected = (y - y.mean(0)) / torch.sqrt(y.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(plain_bn(X).double(), expected, atol=1e-5, rtol=1e-5)


def test_identity_branch_by_hand_with_no_norm():
    # F = 2 I and Norm = identity: post and pre give 3x, none gives 2x, sandwich 3x, seed 3x
    branch = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        branch.weight.copy_(2 * torch.eye(3))
    for placement, factor in [("none", 2), ("post", 3), ("pre", 3), ("sandwich", 3), ("seed", 3)]:
        torch.testing.assert_close(Residual(branch, 3, placement, "none")(X), factor * X)


def test_rezero_ignores_norm_and_layerscale_init_is_configurable():
    block = Residual(linear_branch(), 3, "rezero", "layernorm")
    assert isinstance(block.norm, nn.Identity) and block.norm_name == "none"
    ls = Residual(linear_branch(), 3, "layerscale", "none", layerscale_init=1e-5)
    torch.testing.assert_close(ls(X), X + 1e-5 * X @ W.T)


def test_deepnorm_constants_match_deepnet_decoder_rule():
    for n_layers in (1, 6, 18, 100):
        alpha, beta = deepnorm_constants(2 * n_layers)  # 2 residual sublayers per layer
        assert alpha == pytest.approx((2 * n_layers) ** 0.25)
        assert beta == pytest.approx((8 * n_layers) ** -0.25)
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="depth"):
            deepnorm_constants(bad)


def test_scale_branch_init_scales_linear_and_conv_weights_not_biases():
    branch = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Conv1d(4, 4, 3))
    before = [p.detach().clone() for p in branch.parameters()]
    scale_branch_init_(branch, 0.5)
    after = list(branch.parameters())
    torch.testing.assert_close(after[0], 0.5 * before[0])  # linear weight
    torch.testing.assert_close(after[1], before[1])  # linear bias
    torch.testing.assert_close(after[2], 0.5 * before[2])  # conv weight
    torch.testing.assert_close(after[3], before[3])


def test_scale_branch_init_lets_a_module_choose_via_deepnorm_scale_():
    class QK(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(2, 2)
            self.v = nn.Linear(2, 2)

        @torch.no_grad()
        def deepnorm_scale_(self, beta):
            self.v.weight.mul_(beta)

    branch = nn.Sequential(QK(), nn.Linear(2, 2))
    q, v, out = (t.detach().clone() for t in (branch[0].q.weight, branch[0].v.weight, branch[1].weight))
    scale_branch_init_(branch, 0.25)
    torch.testing.assert_close(branch[0].q.weight, q)  # its own rule: q untouched
    torch.testing.assert_close(branch[0].v.weight, 0.25 * v)
    torch.testing.assert_close(branch[1].weight, 0.25 * out)


@pytest.mark.parametrize("placement", ["post", "deepnorm"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_post_and_deepnorm_fuse_add_and_norm_in_one_call(placement, norm, monkeypatch):
    calls = []
    real = norms_module.add_norm

    def spy(x, residual=None, *args, **kwargs):
        calls.append(residual is not None)
        return real(x, residual, *args, **kwargs)

    monkeypatch.setattr(norms_module, "add_norm", spy)
    block = Residual(nn.Linear(8, 8), 8, placement, norm, depth=4)
    assert block.fused
    x = torch.randn(5, 8)
    y = block(x)
    assert calls == [True]  # one call, with the residual add inside it
    skip = x * block.alpha
    torch.testing.assert_close(y, block.norm(skip + block.branch(x)))


def test_unfusable_norms_are_not_fused():
    assert not Residual(nn.Linear(4, 4), 4, "post", "dyt").fused
    assert not Residual(nn.Identity(), 4, "post", "layernorm", channels_first=True).fused
    assert not Residual(nn.Linear(4, 4), 4, "pre", "layernorm").fused  # x + F(Norm(x)): its add is plain
    assert not Residual(nn.Linear(4, 4), 4, "post", "layernorm", fused=False).fused
    assert Residual(nn.Linear(4, 4), 4, "ngpt").fused


def test_channels_first_residual_on_feature_maps():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 5, 5)
    pre = Residual(conv, 4, "pre", "layernorm", channels_first=True)
    normed = nn.functional.layer_norm(x.movedim(1, -1), (4,)).movedim(-1, 1)
    torch.testing.assert_close(pre(x), x + conv(normed), atol=1e-5, rtol=1e-5)
    ls = Residual(conv, 4, "layerscale", "batchnorm", channels_first=True, layerscale_init=0.5)
    with torch.no_grad():
        ls.scale.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    bn = nn.functional.batch_norm(x, None, None, training=True)
    expected = x + torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1) * conv(bn)
    torch.testing.assert_close(ls(x), expected, atol=1e-5, rtol=1e-5)


def test_needs_final_norm_and_make_final_norm():
    assert [p for p in PLACEMENTS if p != "mixln" and needs_final_norm(p)] == [
        "pre", "sandwich", "layerscale", "reordered", "lnscale", "hyper", "mhc"]
    assert needs_final_norm("mixln", num_layers=4)  # rho 0.25: layers 2-4 are pre
    assert not needs_final_norm("mixln", num_layers=4, mixln_rho=1.0)  # all post
    assert needs_final_norm("mixln", num_layers=4, mixln_rho=0.9)  # floor(3.6) = 3 post layers, 1 pre
    with pytest.raises(ValueError, match="num_layers"):
        needs_final_norm("mixln")
    assert isinstance(make_final_norm("post", "layernorm", 8), nn.Identity)
    final = make_final_norm("pre", "rmsnorm", 8)
    assert type(final).__name__ == "RMSNorm"
    with pytest.raises(ValueError, match="placement"):
        needs_final_norm("middle")


def _branch(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_depth_64_stacks_give_finite_outputs_and_gradients(placement):
    torch.manual_seed(0)
    norms = NORMS if placement in SINGLE_STREAM else ("layernorm", "rmsnorm", "dyt")
    for norm in norms:
        if placement == "deepnorm" and norm == "none":
            continue  # x <- alpha x + F(x) with no norm grows like alpha^depth by design (tested below)
        depth, width = 64, 16
        blocks = [StreamBlock(_branch(width), width, placement, norm, depth=depth, layer=i + 1,
                              num_layers=depth) for i in range(depth)]
        final = make_final_norm(placement, norm, width, num_layers=depth)
        x = torch.randn(8, width, requires_grad=True)
        hidden, residual = begin_stream(x, placement)
        for block in blocks:
            hidden, residual = block(hidden, residual)
        y = end_stream(hidden, residual, final, placement=placement)
        y.square().mean().backward()
        assert torch.isfinite(y).all(), (placement, norm)
        assert torch.isfinite(x.grad).all(), (placement, norm)
        params = [p for b in blocks for p in b.parameters()] + list(final.parameters())
        assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)


def test_deepnorm_without_a_norm_scales_the_skip_by_alpha_per_block():
    zero_branch = nn.Linear(3, 3, bias=False)
    nn.init.zeros_(zero_branch.weight)
    stack = nn.Sequential(*[Residual(zero_branch, 3, "deepnorm", "none", depth=16) for _ in range(16)])
    torch.testing.assert_close(stack(X), X * 2.0**16)  # alpha = 16^(1/4) = 2 per block


def test_validation_errors():
    with pytest.raises(ValueError) as err:
        Residual(nn.Identity(), 4, "middle")
    for p in PLACEMENTS:
        assert p in str(err.value)
    with pytest.raises(ValueError) as err:
        Residual(nn.Identity(), 4, "pre", "weightnorm")
    assert "layernorm" in str(err.value) and "scalenorm" in str(err.value)
    with pytest.raises(ValueError, match="depth"):
        Residual(nn.Linear(4, 4), 4, "deepnorm")
    with pytest.raises(ValueError, match="depth"):
        Residual(nn.Linear(4, 4), 4, "deepnorm", depth=0)
    with pytest.raises(ValueError, match="dim"):
        Residual(nn.Identity(), 0, "pre")
    with pytest.raises(TypeError, match="branch"):
        Residual(lambda x: x, 4, "pre")
    with pytest.raises(TypeError, match="layerscale_init"):
        Residual(nn.Identity(), 4, "layerscale", layerscale_init="small")
    for bad in (float("nan"), float("inf")):  # a NaN lambda would silently poison the stream
        with pytest.raises(ValueError, match="layerscale_init"):
            Residual(nn.Identity(), 4, "layerscale", layerscale_init=bad)

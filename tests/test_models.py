"""Models: shapes, blocks, parameter counts against the papers, GPT causality and probes, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnorm.models import GPT, GPTConfig, residual_mlp, resnet_cifar, seed_mlp, seed_resnet
from resnorm.nn import NORMS, PLACEMENTS, RMSNorm, deepnorm_constants


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def block_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in model.blocks]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return outs


# ----------------------------------------------------------------------------------------------
# seed models


def test_seed_resnet_shapes_and_blocks():
    model = seed_resnet()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert isinstance(model.blocks, nn.ModuleList) and len(model.blocks) == 2
    assert [tuple(o.shape) for o in block_outputs(model, x)] == [(2, 64, 16, 16), (2, 64, 8, 8)]
    assert seed_resnet(num_classes=7, in_channels=1)(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    # the README's layers and nothing else: stem conv + BN, per block 2 convs + 2 BNs + 1x1 conv,
    # dense 64 -> 128 -> 10
    block = 2 * 64 * 64 * 9 + 2 * 2 * 64 + (64 * 64 + 64)
    expected = (3 * 64 * 9 + 2 * 64) + 2 * block + (64 * 128 + 128) + (128 * 10 + 10)
    assert n_params(model) == expected
    with pytest.raises(ValueError, match="images"):
        model(torch.randn(2, 3 * 32 * 32))


def test_seed_resnet_block_is_residual_with_projection_shortcut():
    block = seed_resnet().blocks[0].eval()
    x = torch.randn(2, 64, 16, 16)
    out = torch.relu(block.bn1(block.conv1(x)))
    expected = torch.relu(block.bn2(block.conv2(out)) + block.shortcut(x))
    torch.testing.assert_close(block(x), expected)
    assert block.shortcut.kernel_size == (1, 1) and block.shortcut.stride == (2, 2)


def test_seed_mlp_shapes_and_the_residual_add():
    model = seed_mlp()
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    assert model(torch.randn(4, 784)).shape == (4, 10)
    assert len(model.blocks) == 2
    assert n_params(model) == (784 * 256 + 256) + 2 * 256 + (256 * 256 + 256) + 2 * 256 + (256 * 10 + 10)
    model.eval()
    h1 = torch.randn(4, 256)
    stage = model.blocks[1]
    expected = h1 + stage.bn(torch.relu(stage.linear(h1)))  # identity skip around the second hidden layer
    torch.testing.assert_close(stage(h1), expected)
    with pytest.raises(ValueError, match="784"):
        model(torch.randn(4, 100))


# ----------------------------------------------------------------------------------------------
# CIFAR ResNets


@pytest.mark.parametrize("depth,paper_millions,digits", [(20, 0.27, 2), (56, 0.85, 2), (110, 1.7, 1)])
def test_resnet_cifar_parameter_counts_match_the_paper(depth, paper_millions, digits):
    count = n_params(resnet_cifar(depth))
    assert round(count / 1e6, digits) == paper_millions
    assert n_params(resnet_cifar(depth, residual=False)) == count  # option A shortcuts have no parameters


def test_resnet_cifar_structure_and_plain_twin():
    model = resnet_cifar(20)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    outs = block_outputs(model, x)
    assert len(outs) == 9
    assert [tuple(o.shape[1:]) for o in outs[::3]] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    plain = resnet_cifar(8, residual=False, num_classes=100, in_channels=1)
    assert plain(torch.randn(2, 1, 32, 32)).shape == (2, 100)
    assert not plain.blocks[0].residual


def test_resnet_cifar_option_a_shortcut():
    block = resnet_cifar(8).blocks[1].eval()  # first block of stage 2: 16 -> 32 channels, stride 2
    x = torch.randn(2, 16, 8, 8)
    sub = x[:, :, ::2, ::2]
    expected_shortcut = torch.cat([sub, torch.zeros(2, 16, 4, 4)], dim=1)
    torch.testing.assert_close(block.shortcut(x), expected_shortcut)
    out = torch.relu(block.norm1(block.conv1(x)))
    torch.testing.assert_close(block(x), torch.relu(block.norm2(block.conv2(out)) + expected_shortcut))


@pytest.mark.parametrize("norm", NORMS)
def test_resnet_cifar_every_norm(norm):
    model = resnet_cifar(8, norm=norm)
    y = model(torch.randn(2, 3, 16, 16))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


def test_resnet_cifar_validation():
    for bad in (21, 6, 0, 20.0):
        with pytest.raises(ValueError, match="6n\\+2"):
            resnet_cifar(bad)
    with pytest.raises(ValueError, match="norm"):
        resnet_cifar(20, norm="weightnorm")
    with pytest.raises(ValueError, match="num_classes"):
        resnet_cifar(20, num_classes=0)


# ----------------------------------------------------------------------------------------------
# residual MLP


def test_residual_mlp_shapes_blocks_and_final_norm():
    model = residual_mlp(5, 16, 64, 10)
    assert model(torch.randn(3, 8, 8)).shape == (3, 10)
    assert len(model.blocks) == 5
    assert type(model.final_norm).__name__ == "LayerNorm"
    assert isinstance(residual_mlp(2, 8, 4, 2, placement="post").final_norm, nn.Identity)
    with pytest.raises(ValueError, match="64"):
        model(torch.randn(3, 10))
    with pytest.raises(ValueError, match="placement"):
        residual_mlp(2, 8, 4, 2, placement="middle")
    with pytest.raises(ValueError, match="depth"):
        residual_mlp(0, 8, 4, 2)


def _toy_problem() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).long() + 2 * (x[:, 3] > 0).long()  # 4 classes
    return x, y


def _norms_for(placement: str) -> tuple[str, ...]:
    if placement in ("rezero", "ngpt"):  # they ignore the norm
        return ("none",)
    if placement in ("hyper", "mhc"):  # the norm is only the branch input's (and the final one)
        return ("layernorm", "rmsnorm", "derf")
    return tuple(NORMS)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_residual_mlp_trains_for_every_placement_and_norm(placement):
    x, y = _toy_problem()
    for norm in _norms_for(placement):
        torch.manual_seed(0)
        model = residual_mlp(3, 16, 8, 4, norm=norm, placement=placement)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(40):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.after_optimizer_step()  # nGPT's re-normalization; nothing for the others
            losses.append(loss.item())
        assert math.isfinite(losses[-1]) and losses[-1] < 0.6 * losses[0], (
            placement,
            norm,
            losses[0],
            losses[-1],
        )


# ----------------------------------------------------------------------------------------------
# GPT


def small_config(**overrides) -> GPTConfig:
    fields = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, d_model=16)
    fields.update(overrides)
    return GPTConfig(**fields)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_gpt_every_placement_and_norm_output_shape(placement):
    idx = torch.randint(0, 23, (2, 9))
    for norm in NORMS:
        model = GPT(small_config(norm=norm, placement=placement))
        logits = model(idx)
        assert logits.shape == (2, 9, 23) and torch.isfinite(logits).all(), (placement, norm)
        assert len(model.blocks) == 2


@pytest.mark.parametrize(
    "placement,norm",
    [
        ("pre", "rmsnorm"),
        ("post", "layernorm"),
        ("sandwich", "groupnorm"),
        ("deepnorm", "rmsnorm"),
        ("rezero", "none"),
        ("layerscale", "dyt"),
        ("seed", "scalenorm"),
        ("none", "layernorm"),
        ("post", "batchnorm"),
    ],
)
def test_gpt_is_causal(placement, norm):
    torch.manual_seed(0)
    model = GPT(small_config(norm=norm, placement=placement)).eval()
    idx = torch.randint(0, 23, (2, 12))
    t = 7
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + 1) % 23
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, t:], b[:, t:])


@pytest.mark.parametrize("norm,bias", [("rmsnorm", False), ("layernorm", True)])
def test_gpt_parameter_count_with_weight_tying(norm, bias):
    V, T, L, d = 23, 16, 3, 16
    model = GPT(small_config(n_layer=L, norm=norm, bias=bias))
    assert model.lm_head.weight is model.token_embedding.weight
    norm_params = d if norm == "rmsnorm" else 2 * d
    linear_biases = (3 * d + d + 4 * d + d) if bias else 0
    per_block = 3 * d * d + d * d + 4 * d * d + 4 * d * d + linear_biases + 2 * norm_params
    expected = V * d + T * d + L * per_block + norm_params  # the head shares the token embedding
    assert n_params(model) == expected == model.num_params()
    assert model.num_params(non_embedding=True) == expected - T * d


def test_gpt_pre_layer_in_the_stream_form_equals_the_textbook_layer():
    """A pre-norm layer fed (hidden, residual) computes x = hidden + residual, then
    x += attn(Norm1(x)); x += mlp(Norm2(x)), and returns the last add still pending."""
    torch.manual_seed(0)
    for norm in ("rmsnorm", "layernorm", "dyt"):
        model = GPT(small_config(norm=norm, placement="pre"))
        block = model.blocks[1]
        attn = model.attention_modules()[1]
        hidden, residual = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
        modules = dict(block.named_modules())
        norm1, norm2 = modules["attention.norm"], modules["feedforward.norm"]
        x = hidden + residual
        x = x + attn(norm1(x))
        ff_in = norm2(x)
        h, r = block(hidden, residual)
        torch.testing.assert_close(r, x, atol=1e-6, rtol=1e-6)  # the stream before the feed-forward add
        torch.testing.assert_close(h + r, x + block.feedforward.branch(ff_in), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("eps", ["default", None])
def test_gpt_rmsnorm_fused_equals_unfused_under_bf16_autocast(eps):
    """The eps of a norm must not depend on which operand of the fused add is called x: with
    norm=rmsnorm under bf16 autocast (a bf16 branch output added to the fp32 stream), the fused pre-norm
    blocks give the unfused model's numbers, with the default eps and with eps=None (torch's finfo rule,
    which must then see the fp32 sum in both)."""
    torch.manual_seed(0)
    model = GPT(small_config(norm="rmsnorm", placement="pre", n_layer=3))
    textbook = GPT(small_config(norm="rmsnorm", placement="pre", n_layer=3, fused=False))
    textbook.load_state_dict(model.state_dict())
    norms = [m for net in (model, textbook) for m in net.modules() if isinstance(m, RMSNorm)]
    assert norms and all(m.eps == 1e-6 for m in norms)  # one default per norm kind
    if eps is None:
        for m in norms:
            m.eps = None
    idx = torch.randint(0, 23, (2, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = model(idx)
        unfused = textbook(idx)
    assert fused.dtype == unfused.dtype
    torch.testing.assert_close(fused, unfused, atol=0, rtol=0)


def test_gpt_pre_norm_init_and_deepnorm_scaling():
    L = 3
    torch.manual_seed(0)
    post = GPT(small_config(n_layer=L, placement="post", d_model=64, n_head=4))
    torch.manual_seed(0)
    deep = GPT(small_config(n_layer=L, placement="deepnorm", d_model=64, n_head=4))
    _, beta = deepnorm_constants(2 * L)
    assert beta == pytest.approx((8 * L) ** -0.25)
    pa, da = post.blocks[1].attention.branch, deep.blocks[1].attention.branch
    d = 64
    torch.testing.assert_close(da.qkv.weight[: 2 * d], pa.qkv.weight[: 2 * d])  # query, key: unscaled
    torch.testing.assert_close(da.qkv.weight[2 * d :], beta * pa.qkv.weight[2 * d :])  # value
    torch.testing.assert_close(da.out.weight, beta * pa.out.weight)
    pf, df = post.blocks[1].feedforward.branch, deep.blocks[1].feedforward.branch
    torch.testing.assert_close(df.fc.weight, beta * pf.fc.weight)
    torch.testing.assert_close(df.proj.weight, beta * pf.proj.weight)
    assert deep.blocks[0].attention.alpha == pytest.approx((2 * L) ** 0.25)
    # GPT-2 init: output projections have std 0.02 / sqrt(2 L)
    big = GPT(small_config(n_layer=L, d_model=256, n_head=4))
    std = big.blocks[0].feedforward.branch.proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(2 * L), rel=0.05)


def test_gpt_attention_entropy_probe():
    model = GPT(small_config()).eval()
    with torch.no_grad():
        for attn in model.attention_modules():
            attn.qkv.weight[: 2 * 16].zero_()  # q = k = 0: uniform attention over the causal prefix
    idx = torch.randint(0, 23, (3, 10))
    plain = model(idx)
    for attn in model.attention_modules():
        assert attn.record_entropy is False and attn.last_entropy is None
        attn.record_entropy = True
    recorded = model(idx)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    uniform_entropy = sum(math.log(t + 1) for t in range(10)) / 10  # mean of log(prefix length), nats
    for attn in model.attention_modules():
        assert isinstance(attn.last_entropy, float)
        assert attn.last_entropy == pytest.approx(uniform_entropy, rel=1e-5)


def test_gpt_generate():
    torch.manual_seed(0)
    model = GPT(small_config(block_size=8)).eval()
    idx = torch.randint(0, 23, (2, 3))
    out = model.generate(idx, max_new_tokens=12, temperature=0.8, top_k=5)
    assert out.shape == (2, 15) and torch.equal(out[:, :3], idx)
    assert out.min() >= 0 and out.max() < 23
    greedy = model.generate(idx, max_new_tokens=1, top_k=1)
    assert torch.equal(greedy[:, -1], model(idx)[:, -1].argmax(-1))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(idx, 2, temperature=0.0)


def test_gpt_learns_to_continue_a_text():
    text = "to be or not to be that is the question " * 4
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])
    torch.manual_seed(0)
    model = GPT(small_config(vocab_size=len(chars), block_size=16, d_model=32, dropout=0.1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    starts = torch.arange(0, len(data) - 17, 3)
    x = torch.stack([data[s : s + 16] for s in starts])
    y = torch.stack([data[s + 1 : s + 17] for s in starts])
    first = None
    for _ in range(60):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_gpt_validation():
    with pytest.raises(ValueError, match="divisible"):
        small_config(d_model=10, n_head=3)
    with pytest.raises(ValueError, match="norm"):
        small_config(norm="weightnorm")
    with pytest.raises(ValueError, match="placement"):
        small_config(placement="middle")
    with pytest.raises(ValueError, match="dropout"):
        small_config(dropout=1.5)
    with pytest.raises(ValueError, match="vocab_size"):
        small_config(vocab_size=0)
    with pytest.raises(TypeError, match="config"):
        GPT({"vocab_size": 3})
    model = GPT(small_config())
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(TypeError, match="idx"):
        model(torch.zeros(1, 4))


def test_constructor_and_generate_validation():
    from resnorm.models import SeedMLPStage

    with pytest.raises(ValueError, match="num_classes"):
        seed_resnet(num_classes=0)
    with pytest.raises(TypeError, match="in_channels"):
        seed_resnet(in_channels=3.0)
    with pytest.raises(ValueError, match="hidden"):
        seed_mlp(hidden=0)
    with pytest.raises(ValueError, match="equal in/out"):
        SeedMLPStage(4, 8, residual=True)
    with pytest.raises(ValueError, match="width"):
        residual_mlp(2, 0, 4, 2)
    with pytest.raises(ValueError, match="norm"):
        residual_mlp(2, 8, 4, 2, norm="weightnorm")
    model = GPT(small_config())
    idx = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(idx, 2, top_k=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(idx, -1)
    assert torch.equal(model.generate(idx, 0), idx)


def test_seed_mlp_learns_real_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    model = seed_mlp(in_features=64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):  # the seed's recipe, shortened: Adam, cross-entropy, batch 32
        for batch in train[torch.randperm(len(train))].split(32):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    accuracy = (model(x[test]).argmax(-1) == y[test]).float().mean().item()
    assert accuracy > 0.9


def test_gpt_bias_switch_covers_the_layernorms_too():
    """As nanoGPT: bias=False means no additive bias in the Linear layers nor in the LayerNorms."""
    from resnorm.models import GPT, GPTConfig

    def biases(bias):
        model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=8, norm="layernorm",
                              placement="pre", bias=bias))
        return [name for name, _ in model.named_parameters() if name.endswith("bias")]

    assert biases(False) == []
    with_bias = biases(True)
    # per layer: 2 norms + qkv + out + fc + proj; plus the final norm
    assert len(with_bias) == 2 * 6 + 1 and "final_norm.bias" in with_bias


@pytest.mark.parametrize("placement", ["pre", "mixln", "hyper", "mhc"])
def test_residual_mlp_checks_every_design_option_by_name(placement):
    """A bad placement option is an error naming it whatever the placement (as GPTConfig does), never a
    value silently ignored because another placement would have used it."""
    bad = [("mixln_rho", 2.0, ValueError), ("mixln_rho", float("nan"), ValueError),
           ("sinkhorn_iters", 0, ValueError), ("streams", 0, ValueError), ("hyper_dynamic", "no", TypeError)]
    for name, value, error in bad:
        with pytest.raises(error, match=name):
            residual_mlp(4, 8, 5, 3, placement=placement, **{name: value})


@pytest.mark.parametrize("placement", ["hyper", "mhc"])
def test_every_gpt_module_with_residual_mixing_returns_n_by_n_matrices(placement):
    """``residual_mixing()`` means one thing wherever a module has it: the current mixing matrices
    ``(..., n, n)`` (a GPT layer, which holds two blocks, lists them with ``mixing_matrices()``)."""
    n = 3
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=16, placement=placement,
                          streams=n))
    model(torch.randint(0, 11, (2, 8)))
    found = [m for m in model.modules() if hasattr(m, "residual_mixing")]
    assert len(found) == 2 * 2 * 2  # per layer: two StreamBlocks and their two connections
    for module in found:
        mixing = module.residual_mixing()
        assert isinstance(mixing, torch.Tensor) and mixing.shape[-2:] == (n, n)
        if placement == "mhc":  # doubly stochastic
            assert (mixing >= 0).all()
            torch.testing.assert_close(mixing.sum(-1), torch.ones(mixing.shape[:-1]), atol=1e-3, rtol=0)
            torch.testing.assert_close(mixing.sum(-2), torch.ones(mixing.shape[:-1]), atol=1e-3, rtol=0)
    assert [len(block.mixing_matrices()) for block in model.blocks] == [2, 2]

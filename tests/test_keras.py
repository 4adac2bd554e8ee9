"""resnorm.keras (Keras 3 on the torch backend) against resnorm's PyTorch modules, float64 formulas and
Keras's own training loop; save/load; the two seed examples."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

os.environ.setdefault("KERAS_BACKEND", "torch")  # conftest.py sets it too; Keras reads it on import
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip(f"resnorm.keras's tests run on the torch backend (KERAS_BACKEND=torch); "
                f"Keras is on {keras.backend.backend()}", allow_module_level=True)

import resnorm.functional  # noqa: E402
import resnorm.keras as rk  # noqa: E402
import resnorm.nn as rnn  # noqa: E402
from resnorm.models import seed_mlp, seed_resnet  # noqa: E402

# Keras 3.15 on numpy 2 warns inside its own numpy conversions (not resnorm's code)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

ROOT = Path(__file__).resolve().parents[1]
D = 8


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


def _assign(variable, tensor: torch.Tensor) -> None:
    variable.assign(tensor.detach().to(variable.value.dtype))


def _randomize_keras(layer, seed: int = 0) -> None:
    """Random values in every trainable variable (so gates at 0 and scales at 1 are not what is tested)."""
    for i, v in enumerate(layer.trainable_weights):
        _assign(v, 0.5 * torch.randn(tuple(v.shape), generator=_gen(seed + i), dtype=torch.float64))


def _grads(outputs, inputs: list[torch.Tensor], seed: int = 1) -> list[torch.Tensor]:
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    upstream = [torch.randn(o.shape, generator=_gen(seed + i), dtype=o.dtype) for i, o in enumerate(outputs)]
    return list(torch.autograd.grad(outputs, inputs, upstream, allow_unused=True))


def _np(variable) -> np.ndarray:
    """A Keras variable's value as numpy (Keras 3.15's own .numpy() warns under numpy 2)."""
    return variable.value.detach().cpu().numpy().copy()


def _close(a, b, tol: float = 1e-10) -> None:
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


# ----------------------------------------------------------------------------------------------
# import discipline


def test_import_resnorm_never_imports_keras():
    code = ("import sys, resnorm, resnorm.nn, resnorm.models; "
            "assert 'keras' not in sys.modules, 'import resnorm imported keras'")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_resnorm_keras_without_keras_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "resnorm.keras" or m.startswith("resnorm.keras.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "keras", None)  # import keras now fails as if it were not installed
    with pytest.raises(ImportError, match=r"resnorm\[keras\].*KERAS_BACKEND=torch"):
        importlib.import_module("resnorm.keras")


# ----------------------------------------------------------------------------------------------
# LayerNorm / RMSNorm / AddNorm against resnorm.nn's modules (float64, same weights)


NORM_CASES = [
    (rk.LayerNorm, {}, lambda: rnn.LayerNorm(D)),
    (rk.LayerNorm, dict(eps=1e-3, bias=False), lambda: rnn.LayerNorm(D, eps=1e-3, bias=False)),
    (rk.LayerNorm, dict(elementwise_affine=False), lambda: nn.LayerNorm(D, elementwise_affine=False)),
    (rk.RMSNorm, {}, lambda: rnn.RMSNorm(D, eps=1e-6)),
    (rk.RMSNorm, dict(eps=1e-2), lambda: nn.RMSNorm(D, eps=1e-2)),
    (rk.RMSNorm, dict(elementwise_affine=False), lambda: nn.RMSNorm(D, eps=1e-6, elementwise_affine=False)),
]


@pytest.mark.parametrize("cls, kwargs, make_torch", NORM_CASES, ids=lambda c: getattr(c, "__name__", str(c)))
def test_norm_layers_match_torch_modules(cls, kwargs, make_torch):
    layer = cls(dtype="float64", **kwargs)
    x = _randn(3, 5, D)
    layer.build(x.shape)
    ref = make_torch().double()
    _randomize_keras(layer)
    names = [v.name for v in layer.trainable_weights]
    assert names == [n for n, _ in ref.named_parameters()]  # weight (and bias), as torch names them
    with torch.no_grad():
        for v in layer.trainable_weights:
            getattr(ref, v.name).copy_(v.value)
    xk, xt = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    yk, yt = layer(xk), ref(xt)
    _close(yk, yt)
    params_k = [xk] + [v.value for v in layer.trainable_weights]
    params_t = [xt] + list(ref.parameters())
    for gk, gt in zip(_grads(yk, params_k), _grads(yt, params_t), strict=True):
        _close(gk, gt)


@pytest.mark.parametrize("cls", [rk.LayerNorm, rk.RMSNorm])
def test_zero_centered_weight_scales_by_one_plus_weight(cls):
    layer = cls(zero_centered_weight=True, dtype="float64")
    x = _randn(4, D)
    layer.build(x.shape)
    np.testing.assert_array_equal(_np(layer.weight), np.zeros(D))  # offset from 1
    _randomize_keras(layer)
    w = layer.weight.value.detach() + 1.0
    if cls is rk.LayerNorm:
        s = x - x.mean(-1, keepdim=True)
        expected = s / torch.sqrt(s.pow(2).mean(-1, keepdim=True) + 1e-5) * w + layer.bias.value.detach()
    else:
        expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
    _close(layer(x), expected)


@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("zero_centered", [False, True])
@pytest.mark.parametrize("with_residual", [True, False])
def test_addnorm_matches_torch_addnorm(kind, zero_centered, with_residual):
    layer = rk.AddNorm(kind, bias=True, zero_centered_weight=zero_centered, prenorm=True, dtype="float64")
    ref = rnn.AddNorm(D, kind=kind, bias=True, zero_centered_weight=zero_centered).double()
    x, r = _randn(2, 3, D, seed=0), _randn(2, 3, D, seed=1)
    layer.build(x.shape)
    assert layer.eps == ref.eps == rk.DEFAULT_EPS[kind]
    _randomize_keras(layer)
    with torch.no_grad():
        ref.weight.copy_(layer.weight.value)
        ref.bias.copy_(layer.bias.value)
    xk, rk_, xt, rt = (t.clone().requires_grad_(True) for t in (x, r, x, r))
    out_k = layer(xk, rk_) if with_residual else layer(xk)
    out_t = ref(xt, rt) if with_residual else ref(xt)
    for a, b in zip(out_k, out_t, strict=True):  # (y, new residual)
        _close(a, b)
    inputs_k = [xk, rk_, layer.weight.value, layer.bias.value]
    inputs_t = [xt, rt, ref.weight, ref.bias]
    for gk, gt in zip(_grads(out_k, inputs_k), _grads(out_t, inputs_t), strict=True):
        assert (gk is None) == (gt is None) == (not with_residual and gk is None)
        if gk is not None:
            _close(gk, gt)
    plain = rk.AddNorm(kind, dtype="float64")  # prenorm=False: y only
    plain.build(x.shape)
    assert not isinstance(plain(x, r), (tuple, list))


def test_addnorm_defaults_dropout_and_residual_dtype():
    assert rk.AddNorm("rms").use_bias is False and rk.AddNorm("layer").use_bias is True
    layer = rk.AddNorm("layer", prenorm=True, residual_dtype="float64")
    _, s = layer(torch.randn(2, D), torch.randn(2, D))
    assert s.dtype == torch.float64
    drop = rk.AddNorm("rms", dropout=0.5, prenorm=True)
    x, r = torch.randn(4, 1000), torch.randn(4, 1000)
    for ops_path in (False, True):
        with rk.use_keras_ops(ops_path):
            _, s = drop(x, r, training=True)  # each x element dropped or scaled by 1 / (1 - p)
            added = s - r
            dropped = added.abs() < 1e-6
            assert 0.4 < dropped.float().mean() < 0.6
            _close(added[~dropped], 2 * x[~dropped], tol=1e-5)
            _close(drop(x, r, training=False)[1], x + r)  # inference: no dropout


# ----------------------------------------------------------------------------------------------
# Residual against resnorm.nn.Residual (float64, same weights)


RESIDUAL_CASES = [
    ("none", "layernorm"), ("none", "none"), ("post", "layernorm"), ("post", "rmsnorm"),
    ("post", "batchnorm"), ("pre", "rmsnorm"), ("sandwich", "layernorm"), ("deepnorm", "layernorm"),
    ("rezero", "none"), ("layerscale", "layernorm"), ("seed", "batchnorm"), ("seed", "rmsnorm"),
]
EPS = {"layernorm": 1e-5, "rmsnorm": 1e-6, "batchnorm": 1e-5, "none": None}


def _copy_norm(keras_norm, torch_norm) -> None:
    if keras_norm is None:
        return
    if isinstance(keras_norm, keras.layers.BatchNormalization):
        pairs = [("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                 ("moving_variance", "running_var")]
        for k, t in pairs:
            getattr(torch_norm, t).copy_(getattr(keras_norm, k).value)
        return
    for v in keras_norm.trainable_weights:
        getattr(torch_norm, v.name).copy_(v.value)


@pytest.mark.parametrize("placement, norm", RESIDUAL_CASES, ids=lambda c: str(c))
def test_residual_matches_torch_residual(placement, norm):
    depth = 6 if placement == "deepnorm" else None
    # EinsumDense: Keras 3.15's torch matmul (Dense) computes float64 in float32; einsum keeps float64
    branch = keras.layers.EinsumDense("...i,ij->...j", D, bias_axes="j", activation="tanh", dtype="float64")
    layer = rk.Residual(branch, placement=placement, norm=norm, depth=depth, norm_eps=EPS[norm],
                        dtype="float64")
    ref = rnn.Residual(nn.Sequential(nn.Linear(D, D), nn.Tanh()), D, placement=placement, norm=norm,
                       depth=depth, norm_eps=EPS[norm]).double()
    x = _randn(4, 3, D)
    layer.build(x.shape)
    _randomize_keras(layer)
    with torch.no_grad():  # Keras's kernel is (in, out): torch's weight transposed
        ref.branch[0].weight.copy_(branch.kernel.value.T)
        ref.branch[0].bias.copy_(branch.bias.value)
        if placement == "rezero":
            ref.gate.copy_(layer.gate.value)
        if placement == "layerscale":
            ref.scale.copy_(layer.scale.value)
    assert layer.fused == ref.fused and layer.alpha == ref.alpha
    tol = 1e-6 if norm == "batchnorm" else 1e-10  # Keras's BatchNormalization rounds through float32
    for training in (True, False):
        ref.train(training)
        with torch.no_grad():  # the BatchNorms' moving statistics too (each updates its own way in training)
            _copy_norm(layer.norm, ref.norm)
            _copy_norm(layer.norm_out, getattr(ref, "norm_out", None))
        xk, xt = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        yk, yt = layer(xk, training=training), ref(xt)
        _close(yk, yt, tol)
        params_k = [xk] + [v.value for v in layer.trainable_weights]
        params_t = [xt] + [dict(ref.named_parameters())[n] for n in _torch_names(layer, ref)]
        for p, gk, gt in zip(params_k, _grads(yk, params_k), _grads(yt, params_t), strict=True):
            _close(gk, gt.T if p is branch.kernel.value else gt, tol)


def _torch_names(layer, ref) -> list[str]:
    """resnorm.nn.Residual's parameter names in the order of the Keras layer's trainable weights."""
    keras_to_torch = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                      "weight": "weight"}
    names = []
    for v in layer.trainable_weights:
        owner, leaf = v.path.split("/")[-2], v.name
        if leaf in ("gate", "scale"):
            names.append(leaf)
        elif owner in ("norm", "norm_out"):
            names.append(f"{owner}.{keras_to_torch[leaf]}")
        else:
            names.append(f"branch.0.{keras_to_torch[leaf]}")
    assert sorted(names) == sorted(n for n, _ in ref.named_parameters())
    return names


def test_deepnorm_scales_the_branch_kernels_by_beta_at_build():
    branch = keras.Sequential([keras.layers.Dense(16, activation="relu"), keras.layers.Dense(D)])
    branch.build((None, D))
    before = [_np(v) for v in branch.weights]
    layer = rk.Residual(branch, placement="deepnorm", depth=12)
    layer.build((None, D))
    alpha, beta = 12 ** 0.25, 48 ** -0.25  # DeepNet: M blocks -> alpha = M^(1/4), beta = (4M)^(-1/4)
    assert layer.alpha == pytest.approx(alpha) and layer.beta == pytest.approx(beta)
    for v, old in zip(branch.weights, before, strict=True):
        factor = beta if v.name == "kernel" else 1.0  # kernels scaled, biases untouched
        np.testing.assert_allclose(_np(v), factor * old, rtol=1e-6)


def test_residual_initial_values_and_sublayer_weight_names():
    rezero = rk.Residual(keras.layers.Dense(D), placement="rezero", norm="layernorm")
    x = torch.randn(3, D)
    _close(rezero(x), x)  # a = 0 at init: the block is the identity
    assert rezero.norm_name == "none" and rezero.norm is None
    scale = rk.Residual(keras.layers.Dense(D), placement="layerscale", layerscale_init=0.25)
    scale.build((None, D))
    np.testing.assert_allclose(_np(scale.scale), np.full(D, 0.25))
    sandwich = rk.Residual(keras.layers.Dense(D, name="ffn"), placement="sandwich", norm="rmsnorm",
                           name="block3")
    sandwich.build((None, D))
    assert [v.path for v in sandwich.weights] == [
        "block3/ffn/kernel", "block3/ffn/bias", "block3/norm/weight", "block3/norm_out/weight"]


# ----------------------------------------------------------------------------------------------
# the keras.ops path (JAX / TensorFlow backends) equals the add_norm path


def _every_layer_model(dtype: str = "float32") -> keras.Model:
    inputs = keras.Input((5, D), dtype=dtype)
    h = rk.LayerNorm(dtype=dtype)(inputs)
    h = rk.RMSNorm(zero_centered_weight=True, dtype=dtype)(h)
    y, s = rk.AddNorm("layer", prenorm=True, zero_centered_weight=True, dtype=dtype)(h, inputs)
    h = rk.AddNorm("rms", bias=True, dtype=dtype)(y, s)
    for placement, norm in (("post", "layernorm"), ("post", "rmsnorm"), ("pre", "rmsnorm"),
                            ("sandwich", "layernorm"), ("deepnorm", "rmsnorm"), ("rezero", "none"),
                            ("layerscale", "rmsnorm"), ("seed", "layernorm"), ("none", "batchnorm")):
        branch = keras.Sequential([keras.layers.Dense(12, activation="gelu", dtype=dtype),
                                   keras.layers.Dense(D, dtype=dtype)], name=f"{placement}_{norm}_branch")
        h = rk.Residual(branch, placement=placement, norm=norm, depth=4, name=f"{placement}_{norm}",
                        dtype=dtype)(h)
    return keras.Model(inputs, h)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 1e-4)])  # fp32: 13 norms deep
def test_keras_ops_path_equals_add_norm_path(dtype, tol, monkeypatch):
    keras.utils.set_random_seed(0)
    model = _every_layer_model(dtype)
    _randomize_keras(model)
    x = _randn(3, 5, D, dtype=getattr(torch, dtype))
    calls = []
    real_add_norm = resnorm.functional.add_norm
    counting = lambda *args, **kwargs: calls.append(1) or real_add_norm(*args, **kwargs)
    monkeypatch.setattr(resnorm.functional, "add_norm", counting)

    def run():
        xi = x.clone().requires_grad_(True)
        y = model(xi, training=True)
        return [y, *_grads(y, [xi] + [v.value for v in model.trainable_weights])]

    assert rk.uses_add_norm()
    with_add_norm = run()
    n_calls = len(calls)
    # every norm went through add_norm: LayerNorm, RMSNorm, 2 AddNorm, post x2 (fused), pre, sandwich x2,
    # deepnorm (fused), layerscale, seed (rezero and none + batchnorm have none)
    assert n_calls == 12
    with rk.use_keras_ops():
        assert not rk.uses_add_norm()
        with_ops = run()
    assert len(calls) == n_calls  # the keras.ops path never calls it
    assert rk.uses_add_norm()
    for a, b in zip(with_add_norm, with_ops, strict=True):
        _close(a, b, tol)


# ----------------------------------------------------------------------------------------------
# a real Keras training step reaches the variables


def test_keras_training_step_updates_every_variable_by_its_gradient():
    keras.utils.set_random_seed(1)
    model = _every_layer_model("float32")
    _randomize_keras(model, seed=3)
    x, target = _randn(6, 5, D, dtype=torch.float32), _randn(6, 5, D, seed=9, dtype=torch.float32)
    loss = keras.losses.MeanSquaredError()(target, model(x, training=True))
    variables = model.trainable_weights
    grads = torch.autograd.grad(loss, [v.value for v in variables])
    before = [v.value.detach().clone() for v in variables]
    lr = 0.05
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    model.train_on_batch(x, target)
    resnorm_vars = [v for v in variables if v.name in ("weight", "bias", "gate", "scale")]
    assert len(resnorm_vars) >= 20
    for v, old, g in zip(variables, before, grads, strict=True):
        assert g.abs().sum() > 0, v.path  # every variable gets a gradient
        torch.testing.assert_close(v.value.detach(), old - lr * g, atol=1e-5, rtol=1e-4, msg=v.path)


# ----------------------------------------------------------------------------------------------
# serialization


def test_save_and_load_model_round_trip(tmp_path):
    keras.utils.set_random_seed(2)
    model = _every_layer_model("float32")
    _randomize_keras(model, seed=5)
    x = np.random.default_rng(0).standard_normal((4, 5, D)).astype("float32")
    model(x, training=True)  # move the BatchNorm statistics off their initial values
    expected = model.predict(x, verbose=0)
    path = tmp_path / "every_layer.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
    # resnorm's own variables keep their paths ("post_layernorm/norm/weight"); Keras renames a nested
    # Sequential's (its name drops out of the path of a Sequential built from its config)
    own_names = ("weight", "gate", "scale", "gamma", "moving_mean")
    own = lambda m: [v.path for v in m.weights if v.name in own_names]
    assert own(loaded) == own(model) and len(own(model)) == 16
    assert [v.name for v in loaded.weights] == [v.name for v in model.weights]
    for a, b in zip(loaded.weights, model.weights, strict=True):
        np.testing.assert_array_equal(_np(a), _np(b))
    as_json = lambda layer: json.loads(json.dumps(layer.get_config()))  # tuples saved as lists
    for a, b in zip(loaded.layers, model.layers, strict=True):
        assert type(a) is type(b) and as_json(a) == as_json(b)


@pytest.mark.parametrize("layer", [
    rk.LayerNorm(eps=1e-3, elementwise_affine=True, bias=False, zero_centered_weight=True, name="ln"),
    rk.RMSNorm(eps=1e-4, elementwise_affine=False),
    rk.AddNorm("layer", eps=1e-3, bias=False, zero_centered_weight=True, dropout=0.25, prenorm=True,
               residual_dtype="float32", seed=7),
    rk.Residual(keras.layers.Dense(D, activation="relu"), placement="layerscale", norm="rmsnorm",
                layerscale_init=1e-4, norm_eps=1e-3, norm_bias=False),
    rk.Residual(keras.Sequential([keras.layers.Dense(D)]), placement="deepnorm", norm="layernorm", depth=3),
], ids=lambda layer: type(layer).__name__)
def test_get_config_round_trips_every_argument(layer):
    config = layer.get_config()
    assert keras.saving.get_registered_name(type(layer)) == f"resnorm>{type(layer).__name__}"
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is type(layer) and clone.get_config() == config


@pytest.mark.parametrize("make", [
    lambda: rk.LayerNorm(), lambda: rk.RMSNorm(zero_centered_weight=True),
    lambda: rk.AddNorm("layer", prenorm=True), lambda: rk.AddNorm("rms", dropout=0.0),
], ids=["LayerNorm", "RMSNorm-zero-centered", "AddNorm-layer-prenorm", "AddNorm-rms"])
def test_layers_run_the_triton_kernels(make, monkeypatch):
    """On the torch backend the layers call resnorm.add_norm, so the kernel backend serves them (here
    through Triton's interpreter): outputs and gradients equal to the PyTorch path's."""
    pytest.importorskip("triton")
    import resnorm
    import resnorm.kernels as kernels

    launches = []
    original = kernels.add_norm
    monkeypatch.setattr(kernels, "add_norm", lambda *a, **k: launches.append(1) or original(*a, **k))
    layer = make()
    x = _randn(3, 2 * D, seed=1, dtype=torch.float32).requires_grad_(True)
    residual = _randn(3, 2 * D, seed=2, dtype=torch.float32)
    args = (x, residual) if isinstance(layer, rk.AddNorm) else (x,)
    layer.build(x.shape)
    _randomize_keras(layer)
    outputs = {}
    for backend in ("torch", "triton"):
        with resnorm.use_backend(backend):
            out = layer(*args)
        out = out if isinstance(out, tuple) else (out,)
        outputs[backend] = [o.detach() for o in out] + _grads(out, [x] + [v.value for v in layer.weights])
    assert launches
    for a, b in zip(outputs["triton"], outputs["torch"], strict=True):
        _close(a, b, 1e-5)


# ----------------------------------------------------------------------------------------------
# bad input


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="kind"):
        rk.AddNorm("batch")
    with pytest.raises(ValueError, match="eps"):
        rk.LayerNorm(eps=0.0)
    with pytest.raises(TypeError, match="eps"):
        rk.RMSNorm(eps="small")
    with pytest.raises(ValueError, match="dropout"):
        rk.AddNorm(dropout=1.0)
    with pytest.raises(ValueError, match="residual_dtype"):
        rk.AddNorm(residual_dtype="int32")
    with pytest.raises(TypeError, match="branch"):
        rk.Residual(lambda x: x)
    with pytest.raises(ValueError, match="placement.*none, post"):
        rk.Residual(keras.layers.Dense(D), placement="prenorm")
    with pytest.raises(ValueError, match="norm must be one of"):
        rk.Residual(keras.layers.Dense(D), norm="groupnorm")
    with pytest.raises(ValueError, match="depth"):
        rk.Residual(keras.layers.Dense(D), placement="deepnorm")
    with pytest.raises(ValueError, match="branch must keep"):
        rk.Residual(keras.layers.Dense(D + 1)).build((None, D))
    with pytest.raises(ValueError, match="last axis"):
        rk.LayerNorm().build((None, None))


@pytest.mark.parametrize("make, name", [
    (lambda v: rk.LayerNorm(elementwise_affine=v), "elementwise_affine"),
    (lambda v: rk.LayerNorm(bias=v), "bias"),
    (lambda v: rk.RMSNorm(zero_centered_weight=v), "zero_centered_weight"),
    (lambda v: rk.AddNorm(prenorm=v), "prenorm"),
    (lambda v: rk.AddNorm("layer", bias=v), "bias"),
    (lambda v: rk.Residual(keras.layers.Dense(D), norm_bias=v), "norm_bias"),
], ids=lambda c: c if isinstance(c, str) else "")
def test_switches_must_be_bools(make, name):
    """A flag given as a string ("False" from a config file, truthy for bool()) is refused, naming it."""
    with pytest.raises(TypeError, match=f"{name} must be a bool; got str"):
        make("False")
    make(False)


# ----------------------------------------------------------------------------------------------
# the seed examples


def _example(name: str):
    path = ROOT / "examples" / "keras" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"keras_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _val_accuracy(output: str) -> float:
    match = re.search(r"^val accuracy: (\d+\.\d)%$", output, flags=re.MULTILINE)
    assert match, output[-2000:]
    return float(match.group(1))


def test_seed_mlp_example_is_the_pytorch_seed_mlp():
    """Same weights, same function: the Keras example computes resnorm.models.seed_mlp's network."""
    model = _example("seed_mlp").build_model()
    ref = seed_mlp().double().eval()
    dense1, residual, head = (layer for layer in model.layers if layer.weights)
    dense2, bn2 = residual.branch.layers
    keras.utils.set_random_seed(4)
    x = np.random.default_rng(1).standard_normal((16, 784)).astype("float32")
    model(x, training=True)  # BatchNorm moving statistics away from 0 / 1
    with torch.no_grad():
        pairs = ((ref.blocks[0].linear, dense1), (ref.blocks[1].linear, dense2), (ref.head, head))
        for linear, dense in pairs:
            linear.weight.copy_(dense.kernel.value.T)
            linear.bias.copy_(dense.bias.value)
        for bn, kbn in ((ref.blocks[0].bn, residual.norm), (ref.blocks[1].bn, bn2)):
            _copy_norm(kbn, bn)
            bn.eps = kbn.epsilon  # Keras's BatchNormalization default (1e-3) where torch's is 1e-5
    probs = model(x, training=False).detach().numpy()
    with torch.no_grad():
        expected = torch.softmax(ref(torch.from_numpy(x).double()), -1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_seed_resnet_example_has_the_seed_shape():
    model = _example("seed_resnet").build_model((32, 32, 3))
    pool = next(layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D))
    assert pool.input.shape == (None, 8, 8, 64) and pool.pool_size == (8, 8)  # the 8x8 pool covers the map
    assert model.output.shape == (None, 10)
    torch_params = sum(p.numel() for p in seed_resnet().parameters())
    # the PyTorch twin drops the bias of the five 3x3 convs that a BatchNorm follows; Keras keeps them
    assert model.count_params() - sum(int(np.prod(v.shape)) for v in model.non_trainable_weights) \
        == torch_params + 5 * 64


def test_seed_resnet_example_trains_a_short_epoch(capsys):
    _example("seed_resnet").main(["--epochs", "1", "--limit", "640"])
    assert _val_accuracy(capsys.readouterr().out) > 20.0  # chance is 10%


def test_seed_resnet_example_rejects_missing_data(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _example("seed_resnet").main(["--data", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "--data" in capsys.readouterr().err


def test_seed_mlp_documented_command_trains_one_epoch():
    """`python examples/keras/seed_mlp.py --epochs 1`, in a fresh process; without KERAS_BACKEND in the
    environment the example chooses the torch backend itself."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "examples/keras/seed_mlp.py", "--epochs", "1"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "backend torch" in result.stdout
    assert _val_accuracy(result.stdout) > 60.0  # chance is 10%


@pytest.mark.parametrize("name", ["seed_mlp", "seed_resnet"])
def test_examples_with_a_missing_keras_backend_say_so_in_one_line(name):
    """KERAS_BACKEND naming a backend Keras cannot import: one line naming it, exit 2, no traceback."""
    env = {**os.environ, "KERAS_BACKEND": "no_such_backend", "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, f"examples/keras/{name}.py", "--epochs", "1"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "KERAS_BACKEND='no_such_backend'" in lines[0] and "error" in lines[0]

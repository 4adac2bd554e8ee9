"""``Residual(branch, placement=..., norm=...)``: resnorm's residual designs as one Keras 3 layer.

``F`` is the branch (any Keras layer or model that maps the stream to the same shape), ``Norm`` the
norm named by ``norm`` over the last axis, ``x`` the residual stream. One block:

placement     one block                                                   source
none          x <- Norm(F(x))  (no skip; plain net; Norm may be "none")   ablation
post          x <- Norm(x + F(x))                                         Vaswani et al. 2017; He et al. 2016
pre           x <- x + F(Norm(x)); final Norm at the end of the model     Xiong et al. 2020; He et al. 2016b
sandwich      x <- x + Norm2(F(Norm1(x)))                                 CogView 2021; Peri-LN 2025
deepnorm      x <- Norm(alpha * x + F(x)); branch kernels scaled by beta  Wang et al. 2022 (DeepNet)
rezero        x <- x + a * F(x), scalar a = 0 at init, no norm            Bachlechner et al. 2020
layerscale    x <- x + diag(lambda) * F(Norm(x)), lambda = 0.1 at init    Touvron et al. 2021 (CaiT)
seed          y = Norm(x); x <- y + F(y)  (normalized skip)               the seed MLP's block

The same designs, names and formulas as ``resnorm.nn.Residual`` (the PyTorch layer).
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from resnorm._checks import check_bool
from resnorm.keras.norms import LayerNorm, RMSNorm

__all__ = ["Residual", "PLACEMENTS", "NORMS"]

PLACEMENTS = ("none", "post", "pre", "sandwich", "deepnorm", "rezero", "layerscale", "seed")
# layernorm / rmsnorm: resnorm's layers (add_norm); batchnorm: keras.layers.BatchNormalization
NORMS = ("layernorm", "rmsnorm", "batchnorm", "none")


def _deepnorm_constants(depth: object) -> tuple[float, float]:
    from resnorm.nn.residual import deepnorm_constants

    return deepnorm_constants(depth)


def _make_norm(name: str, eps: float | None, bias: bool, layer_name: str, dtype) -> keras.layers.Layer | None:
    """The norm layer named ``name`` (None for "none"), in the block's dtype policy."""
    eps_kw = {} if eps is None else {"eps": eps}
    if name == "layernorm":
        return LayerNorm(**eps_kw, bias=bias, name=layer_name, dtype=dtype)
    if name == "rmsnorm":
        return RMSNorm(**eps_kw, name=layer_name, dtype=dtype)
    if name == "batchnorm":
        # Keras's own BatchNormalization with Keras's defaults (momentum 0.99, epsilon 1e-3), as in a
        # tf.keras program; norm_eps sets its epsilon
        eps_kw = {} if eps is None else {"epsilon": eps}
        return keras.layers.BatchNormalization(**eps_kw, name=layer_name, dtype=dtype)
    return None


def _kernels(layer: keras.layers.Layer) -> list:
    """The ``kernel`` variables of the Dense / EinsumDense / convolution layers inside ``layer``."""
    kernels = []
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        kernel = getattr(sub, "kernel", None)
        if isinstance(kernel, keras.Variable):
            kernels.append(kernel)
    return kernels


@keras.saving.register_keras_serializable(package="resnorm")
class Residual(keras.layers.Layer):
    """One residual block ``x -> x'`` with the branch ``F`` and the norm placed by ``placement``.

    Formulas (``Norm`` = the layer named by ``norm``, over the last axis):

    - ``none``:       ``x' = Norm(F(x))`` — no skip (the plain net).
    - ``post``:       ``x' = Norm(x + F(x))`` — Vaswani et al. 2017; He et al. 2016. With layernorm
      or rmsnorm the add and the norm are one ``add_norm`` call.
    - ``pre``:        ``x' = x + F(Norm(x))``; end the model with one more Norm — Xiong et al. 2020;
      He et al. 2016b.
    - ``sandwich``:   ``x' = x + Norm2(F(Norm1(x)))`` — CogView (Ding et al. 2021); Peri-LN (Kim et
      al. 2025). Two separate norms (``norm`` and ``norm_out``).
    - ``deepnorm``:   ``x' = Norm(alpha * x + F(x))``, ``alpha = depth**0.25``, and the branch's
      kernels multiplied by ``beta = (4 * depth)**-0.25`` when the block is built (``depth`` = the
      number of residual blocks M; for an N-layer decoder M = 2N gives DeepNet's alpha = (2N)^(1/4),
      beta = (8N)^(-1/4)) — Wang et al. 2022. Fused like post.
    - ``rezero``:     ``x' = x + a * F(x)``, one scalar ``a`` (``gate``) initialised to 0; no norm
      (``norm`` is ignored) — Bachlechner et al. 2020.
    - ``layerscale``: ``x' = x + lambda * F(Norm(x))``, a per-feature ``lambda`` (``scale``)
      initialised to ``layerscale_init`` (0.1, CaiT's value up to 18 layers) — Touvron et al. 2021.
    - ``seed``:       ``y = Norm(x); x' = y + F(y)`` — the normalized skip. With ``norm="batchnorm"``
      and ``F`` = Dense-ReLU-BatchNorm this is the seed MLP's second hidden layer and its add.

    ``norm``: ``layernorm`` / ``rmsnorm`` (resnorm's layers: ``norm_eps`` defaults 1e-5 / 1e-6,
    ``norm_bias=False`` drops LayerNorm's bias), ``batchnorm`` (``keras.layers.BatchNormalization``
    with Keras's defaults, ``norm_eps`` its epsilon) or ``none``. ``branch`` is called with the
    block's ``training`` flag; it must keep the input's shape.
    """

    def __init__(
        self,
        branch: keras.layers.Layer,
        placement: str = "pre",
        norm: str = "layernorm",
        *,
        depth: int | None = None,
        layerscale_init: float = 0.1,
        norm_eps: float | None = None,
        norm_bias: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(branch, keras.layers.Layer):
            raise TypeError(f"branch must be a Keras layer or model; got {type(branch).__name__}")
        if not isinstance(placement, str) or placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}; got {placement!r}")
        if not isinstance(norm, str) or norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
        if isinstance(layerscale_init, bool) or not isinstance(layerscale_init, numbers.Real):
            raise TypeError(f"layerscale_init must be a float; got {type(layerscale_init).__name__}")
        self.branch = branch
        self.placement = placement
        self.norm_name = norm if placement != "rezero" else "none"
        self.depth = depth
        self.layerscale_init = float(layerscale_init)
        self.norm_eps = norm_eps
        self.norm_bias = check_bool("norm_bias", norm_bias)
        self.alpha, self.beta = 1.0, 1.0
        if placement == "deepnorm":
            if depth is None:
                raise ValueError("depth (the number of residual blocks) is required for placement='deepnorm'")
            self.alpha, self.beta = _deepnorm_constants(depth)
        new_norm = lambda name: _make_norm(self.norm_name, norm_eps, self.norm_bias, name, self.dtype_policy)
        self.norm = new_norm("norm")
        self.norm_out = new_norm("norm_out") if placement == "sandwich" else None
        # post / deepnorm with layernorm or rmsnorm: the add and the norm are one add_norm call
        self.fused = placement in ("post", "deepnorm") and self.norm_name in ("layernorm", "rmsnorm")
        self.gate = None
        self.scale = None

    def build(self, input_shape) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) == 0 or input_shape[-1] is None:
            raise ValueError(f"Residual needs a known last axis (the stream's features); got {input_shape}")
        if not self.branch.built:
            self.branch.build(input_shape)
        try:
            out_shape = tuple(self.branch.compute_output_shape(input_shape))
        except NotImplementedError:  # a custom branch without compute_output_shape: checked at call time
            out_shape = input_shape
        if out_shape != input_shape:
            raise ValueError(
                f"the branch must keep the stream's shape {input_shape}; it maps it to {out_shape}"
            )
        for norm in (self.norm, self.norm_out):
            if norm is not None and not norm.built:
                norm.build(input_shape)
        dim = input_shape[-1]
        if self.placement == "rezero":
            self.gate = self.add_weight(shape=(1,), initializer="zeros", name="gate")
        if self.placement == "layerscale":
            self.scale = self.add_weight(
                shape=(dim,), initializer=keras.initializers.Constant(self.layerscale_init), name="scale"
            )
        if self.placement == "deepnorm":  # DeepNet's branch init: kernels x beta (biases untouched)
            for kernel in _kernels(self.branch):
                kernel.assign(kernel * self.beta)

    def _norm(self, layer, x, training):
        if layer is None:
            return x
        if isinstance(layer, keras.layers.BatchNormalization):
            return layer(x, training=training)
        return layer(x)

    def call(self, x, training=None):
        p = self.placement
        F = lambda t: self.branch(t, training=training)
        if p == "none":
            return self._norm(self.norm, F(x), training)
        if p in ("post", "deepnorm"):
            skip = x if p == "post" else x * self.alpha
            if self.fused:
                return self.norm.add_norm(F(x), skip)
            return self._norm(self.norm, ops.add(skip, F(x)), training)
        if p == "pre":
            return ops.add(x, F(self._norm(self.norm, x, training)))
        if p == "sandwich":
            return ops.add(x, self._norm(self.norm_out, F(self._norm(self.norm, x, training)), training))
        if p == "rezero":
            return ops.add(x, ops.multiply(self.gate, F(x)))
        if p == "layerscale":
            return ops.add(x, ops.multiply(self.scale, F(self._norm(self.norm, x, training))))
        y = self._norm(self.norm, x, training)  # seed
        return ops.add(y, F(y))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            branch=keras.saving.serialize_keras_object(self.branch),
            placement=self.placement,
            norm=self.norm_name,
            depth=self.depth,
            layerscale_init=self.layerscale_init,
            norm_eps=self.norm_eps,
            norm_bias=self.norm_bias,
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> Residual:
        config = dict(config)
        # in the block's name scope, so that a branch built while it is deserialized (a Sequential
        # does) names its weights "block/branch/..." as when the block was first built
        with keras.name_scope(config.get("name") or "residual"):
            config["branch"] = keras.saving.deserialize_keras_object(config["branch"])
        return cls(**config)

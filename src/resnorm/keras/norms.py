"""Keras 3 norm layers on the add_norm contract: ``LayerNorm``, ``RMSNorm``, ``AddNorm``.

Each normalizes the last axis (Keras's channels-last convention: features of ``(batch, features)``,
tokens of ``(batch, length, features)``, channels of ``(batch, height, width, channels)``). The
weights are Keras variables named ``weight`` and ``bias``, shaped ``(features,)`` like the
parameters of ``resnorm.nn``'s modules (copy them across one to one). On the torch backend the layers
call ``resnorm.add_norm``; elsewhere they compute the same formulas with ``keras.ops``
(``resnorm.keras.functional``).
"""

from __future__ import annotations

import numbers

import keras

from resnorm._checks import check_bool
from resnorm.keras import functional

__all__ = ["LayerNorm", "RMSNorm", "AddNorm", "DEFAULT_EPS"]

# the project's defaults (as resnorm.add_norm's callers): LayerNorm 1e-5 (torch.nn.LayerNorm's), RMSNorm 1e-6
DEFAULT_EPS = {"layer": 1e-5, "rms": 1e-6}


def _check_kind(kind: object) -> str:
    if kind not in ("rms", "layer"):
        raise ValueError(f"kind must be 'rms' or 'layer'; got {kind!r}")
    return kind


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a positive float; got {type(eps).__name__}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0; got {eps}")
    return float(eps)


def _check_dropout(dropout: object) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a float in [0, 1); got {dropout!r}")
    return float(dropout)


def _check_residual_dtype(dtype: object) -> str | None:
    if dtype is None:
        return None
    try:
        name = keras.backend.standardize_dtype(dtype)
    except (ValueError, TypeError, AttributeError):
        name = None
    if name not in ("float16", "bfloat16", "float32", "float64"):
        raise ValueError(f"residual_dtype must be a floating-point dtype name or None; got {dtype!r}")
    return name


def _last_dim(layer: keras.layers.Layer, input_shape) -> int:
    if input_shape is None or len(input_shape) == 0 or input_shape[-1] is None:
        raise ValueError(
            f"{type(layer).__name__} normalizes the last axis and needs its size; "
            f"got input shape {input_shape}"
        )
    return int(input_shape[-1])


class _AddNormLayer(keras.layers.Layer):
    """Shared by the three layers: the weights (built from the last axis) and the add_norm call."""

    kind: str

    def __init__(self, *, eps: float, affine: bool, bias: bool, zero_centered_weight: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.eps = _check_eps(eps)
        self.zero_centered_weight = check_bool("zero_centered_weight", zero_centered_weight)
        self._affine = check_bool("elementwise_affine", affine)
        self._use_bias = check_bool("bias", bias) and self._affine
        self.weight = None
        self.bias = None

    def build(self, input_shape) -> None:
        dim = _last_dim(self, input_shape)
        if self._affine:
            # zero_centered_weight stores the scale as an offset from 1 (Gemma): 0 at init
            init = "zeros" if self.zero_centered_weight else "ones"
            self.weight = self.add_weight(shape=(dim,), initializer=init, name="weight")
        if self._use_bias:
            self.bias = self.add_weight(shape=(dim,), initializer="zeros", name="bias")

    def add_norm(self, x, residual=None, *, prenorm: bool = False, dropout: float = 0.0,
                 residual_dtype: str | None = None, seed_generator=None):
        """``Norm(dropout(x) + residual)`` with this layer's weights; ``(y, residual_out)`` when
        ``prenorm``. Residual blocks call this to fuse their add into the norm."""
        return functional.add_norm(
            x, residual, self.weight, self.bias, kind=self.kind, eps=self.eps, prenorm=prenorm,
            residual_dtype=residual_dtype, zero_centered_weight=self.zero_centered_weight,
            dropout=dropout, seed_generator=seed_generator,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(eps=self.eps, zero_centered_weight=self.zero_centered_weight)
        return config


@keras.saving.register_keras_serializable(package="resnorm")
class LayerNorm(_AddNormLayer):
    """LayerNorm (Ba et al. 2016) over the last axis: ``y = (x - mean) / sqrt(var + eps) * w + b``.

    ``w = weight`` (or ``1 + weight`` with ``zero_centered_weight``), ``b = bias``; ``bias=False``
    drops ``b``, ``elementwise_affine=False`` drops both. Same math and parameters as
    ``resnorm.nn.LayerNorm`` / ``torch.nn.LayerNorm`` over the last dimension.
    """

    kind = "layer"

    def __init__(self, eps: float = DEFAULT_EPS["layer"], elementwise_affine: bool = True, bias: bool = True,
                 zero_centered_weight: bool = False, **kwargs) -> None:
        super().__init__(eps=eps, affine=elementwise_affine, bias=bias,
                         zero_centered_weight=zero_centered_weight, **kwargs)
        self.elementwise_affine = bool(elementwise_affine)
        self.use_bias = bool(bias)

    def call(self, x):
        return self.add_norm(x)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(elementwise_affine=self.elementwise_affine, bias=self.use_bias)
        return config


@keras.saving.register_keras_serializable(package="resnorm")
class RMSNorm(_AddNormLayer):
    """RMSNorm (Zhang & Sennrich 2019) over the last axis: ``y = x / sqrt(mean(x^2) + eps) * w``.

    ``w = weight`` (or ``1 + weight`` with ``zero_centered_weight``); ``elementwise_affine=False``
    drops it. Same math and parameter as ``resnorm.nn.RMSNorm`` / ``torch.nn.RMSNorm`` over the last
    dimension (with the same ``eps``: this layer's default is 1e-6).
    """

    kind = "rms"

    def __init__(self, eps: float = DEFAULT_EPS["rms"], elementwise_affine: bool = True,
                 zero_centered_weight: bool = False, **kwargs) -> None:
        super().__init__(eps=eps, affine=elementwise_affine, bias=False,
                         zero_centered_weight=zero_centered_weight, **kwargs)
        self.elementwise_affine = bool(elementwise_affine)

    def call(self, x):
        return self.add_norm(x)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(elementwise_affine=self.elementwise_affine)
        return config


@keras.saving.register_keras_serializable(package="resnorm")
class AddNorm(_AddNormLayer):
    """Residual add + norm, the layer form of ``resnorm.add_norm``::

        s = dropout(x) + residual;   y = Norm(s)       (Norm: RMSNorm for kind="rms", LayerNorm for "layer")

    ``layer(x, residual)`` returns ``y``, or ``(y, s)`` — the new residual stream of a pre-norm
    block — with ``prenorm=True``; ``residual`` may be omitted (then ``s = dropout(x)``).
    ``eps=None`` means 1e-6 for rms and 1e-5 for layer; ``bias=None`` means a bias for layer and none
    for rms; ``zero_centered_weight`` stores the scale as an offset from 1 (initialised to 0; Gemma);
    ``dropout`` applies to ``x`` in training only; ``residual_dtype`` (e.g. ``"float32"``) is the
    dtype of the returned ``s`` (default: the residual's, else x's). The same layer as
    ``resnorm.nn.AddNorm`` (whose ``forward`` returns ``(y, s)`` always).
    """

    def __init__(self, kind: str = "rms", eps: float | None = None, bias: bool | None = None,
                 zero_centered_weight: bool = False, dropout: float = 0.0, prenorm: bool = False,
                 residual_dtype: str | None = None, seed: int | None = None, **kwargs) -> None:
        kind = _check_kind(kind)
        use_bias = (kind == "layer") if bias is None else check_bool("bias", bias)
        super().__init__(eps=DEFAULT_EPS[kind] if eps is None else eps, affine=True, bias=use_bias,
                         zero_centered_weight=zero_centered_weight, **kwargs)
        self.kind = kind
        self.use_bias = use_bias
        self.dropout = _check_dropout(dropout)
        self.prenorm = check_bool("prenorm", prenorm)
        self.residual_dtype = _check_residual_dtype(residual_dtype)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.dropout > 0 else None

    def call(self, x, residual=None, training=None):
        return self.add_norm(
            x, residual, prenorm=self.prenorm, dropout=self.dropout if training else 0.0,
            residual_dtype=self.residual_dtype, seed_generator=self.seed_generator,
        )

    def compute_output_spec(self, x, residual=None, training=None):
        y = keras.KerasTensor(x.shape, dtype=self.compute_dtype)
        if not self.prenorm:
            return y
        dtype = self.residual_dtype or (residual.dtype if residual is not None else self.compute_dtype)
        return y, keras.KerasTensor(x.shape, dtype=dtype)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(kind=self.kind, bias=self.use_bias, dropout=self.dropout, prenorm=self.prenorm,
                      residual_dtype=self.residual_dtype, seed=self.seed)
        return config

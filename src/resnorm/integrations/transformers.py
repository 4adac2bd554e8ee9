"""resnorm inside Hugging Face ``transformers`` models: one call swaps every norm and fuses every
residual add.

``apply_resnorm(model)`` works in place on an instantiated ``PreTrainedModel`` of a supported family
(``SUPPORTED_MODEL_TYPES``):

1. every normalization module (the decoder layers' norms, the QK-norms of Qwen 3 / OLMo 2 /
   Gemma 3, the final norm) becomes a ``ResnormRMSNorm`` or ``ResnormLayerNorm`` that holds the very
   same ``Parameter`` objects under the same names, so the ``state_dict`` (names, shapes, values) and
   the checkpoint format do not change, and that computes the norm with ``resnorm.add_norm`` in the
   family's own numerics (``casting_mode`` below);
2. with ``fuse_residual=True`` (the default) every residual add that a norm reads next is computed by
   that norm, in the same ``add_norm(..., prenorm=True)`` call (Xiong et al. 2020's pre-norm block
   ``x <- x + F(Norm(x))``: the add of one sublayer and the norm of the next one are one pass over
   the residual stream). A pre-norm decoder of L layers makes 2L fused adds; the add after a layer's
   MLP is computed by the next layer's input norm, the last one by the final norm.

How the add crosses from one decoder layer into the next: a patched decoder layer returns a
``ResidualStream(branch, residual)`` (the value ``residual + branch`` not yet added) instead of a
tensor; the model's own loop hands it to the next layer, whose first norm adds and normalizes in one
call, and finally to the final norm. The stream is an argument and a return value, never hidden
state, so the KV cache, ``torch.compile(fullgraph=True)``, non-reentrant activation checkpointing and
``output_hidden_states`` (materialized to the same tensors the unpatched model returns) all see an
ordinary forward.

Numerics (``casting_mode`` of ``ResnormRMSNorm``; ``n(s) = s / sqrt(mean(s^2) + eps)`` in fp32):

- ``"llama"`` (Llama, Mistral, Qwen 2, Qwen 3, Phi-3): ``w * n(s).to(s.dtype)``, the normalized value
  rounded to the input's dtype before the weight multiplies it (Touvron et al. 2023's reference code);
- ``"gemma"`` (Gemma, Gemma 2, Gemma 3): ``(n(s) * (1 + w.float())).to(s.dtype)``, a zero-centered
  weight and one rounding at the end;
- ``"fp32"`` (OLMo 2): ``(w * n(s)).to(s.dtype)``, one rounding at the end;
- GPT-2: LayerNorm with bias and its own ``layer_norm_epsilon`` (``ResnormLayerNorm``).

Where a norm sits decides which adds fuse: Gemma 2 / 3 normalize each sublayer's output (post-norm)
before the add and normalize the stream again before the next sublayer (pre-norm): the add fuses into
the pre-norm, the post-norm is a plain norm. OLMo 2 normalizes only the sublayer's output
(``x <- x + Norm(F(x))``): no add inside the stack is followed by a norm, so only the last layer's add
fuses (into the final norm).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from resnorm import functional as _functional
from resnorm.integrations.hf_common import SUPPORTED_MODEL_TYPES, ResidualStream, materialize

try:
    import transformers
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "resnorm.integrations.transformers needs the transformers package: "
        'pip install "resnorm[transformers]"'
    ) from error

from packaging.version import Version
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

__all__ = [
    "apply_resnorm",
    "SUPPORTED_MODEL_TYPES",
    "TRANSFORMERS_VERSIONS",
    "ResnormRMSNorm",
    "ResnormLayerNorm",
    "ResidualStream",
    "materialize",
    "causal_lm_from_config",
    "decoder_layers",
    "attention_modules",
    "fused_add_count",
    "SIZE_KEYS",
]

# the transformers releases whose model code this module follows (checked at import): from 5.3 every
# supported family's decoder layer returns a tensor (GPT-2's block returned a tuple before); the
# tests pass on 5.3.0, 5.10.1 and 5.23.0
TRANSFORMERS_VERSIONS = ">=5.3,<6"
_MIN_VERSION, _MAX_VERSION = Version("5.3"), Version("6")


def _check_transformers_version(version: str) -> None:
    found = Version(version)
    if not _MIN_VERSION <= Version(found.base_version) < _MAX_VERSION:
        raise ImportError(
            f"resnorm.integrations.transformers supports transformers{TRANSFORMERS_VERSIONS} "
            f"(the decoder-layer code it follows); found transformers {version}. "
            f'Install a supported release: pip install "transformers{TRANSFORMERS_VERSIONS}"'
        )


_check_transformers_version(transformers.__version__)

CASTING_MODES = ("llama", "gemma", "fp32")


# ----------------------------------------------------------------------------------------------
# norm modules


def _sum_dtype(x: torch.Tensor, residual: torch.Tensor | None) -> torch.dtype:
    """The dtype of ``residual + x`` in eager PyTorch: what the model's own add stores."""
    return x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)


class _FusedNorm(nn.Module):
    """Shared by the two norms: ``forward`` takes a tensor or a ``ResidualStream``;
    ``normalize_stream`` returns ``(normalized, new residual)`` for a decoder layer."""

    def _add_norm(
        self, x: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def forward(self, hidden_states: torch.Tensor | ResidualStream) -> torch.Tensor:
        if isinstance(hidden_states, ResidualStream):
            return self._add_norm(hidden_states.branch, hidden_states.residual)[0]
        return self._add_norm(hidden_states, None)[0]

    def normalize_stream(
        self, stream: torch.Tensor | ResidualStream
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Norm(s), s)`` for the stream ``s``: one fused ``add_norm(..., prenorm=True)`` call when
        ``stream`` is a ``ResidualStream``, a plain norm when it is a tensor."""
        if isinstance(stream, ResidualStream):
            y, s = self._add_norm(stream.branch, stream.residual)
            return y, s
        return self._add_norm(stream, None)[0], stream


class ResnormRMSNorm(_FusedNorm):
    """RMSNorm (Zhang & Sennrich 2019) ``y = s / sqrt(mean(s^2) + eps) * w`` over the last dimension,
    computed by ``resnorm.add_norm`` with a transformers family's casting rules.

    ``casting_mode``: ``"llama"`` (``w * n(s).to(dtype)``: Llama, Mistral, Qwen, Phi-3), ``"gemma"``
    (``(n(s) * (1 + w.float())).to(dtype)``, the weight stored zero-centered: Gemma 1/2/3), ``"fp32"``
    (``(w * n(s)).to(dtype)``: OLMo 2); ``n(s)`` in fp32 (float64 for float64 inputs), ``dtype`` the
    input's. The state_dict is one entry, ``weight`` (as the modules it replaces). ``eps`` is also
    readable as ``variance_epsilon`` (Llama's name for it).
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-6,
        *,
        casting_mode: str = "llama",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if casting_mode not in CASTING_MODES:
            raise ValueError(f"casting_mode must be one of {', '.join(CASTING_MODES)}; got {casting_mode!r}")
        self.hidden_size = int(hidden_size)
        self.eps = float(eps)
        self.casting_mode = casting_mode
        init = torch.zeros if casting_mode == "gemma" else torch.ones
        self.weight = nn.Parameter(init(self.hidden_size, device=device, dtype=dtype))

    @property
    def variance_epsilon(self) -> float:
        return self.eps

    @classmethod
    def from_module(cls, module: nn.Module, *, eps: float, casting_mode: str) -> ResnormRMSNorm:
        """A ``ResnormRMSNorm`` that shares ``module.weight`` (the same Parameter object)."""
        weight = module.weight
        norm = cls(weight.shape[-1], eps, casting_mode=casting_mode, device="meta")
        norm.weight = weight
        norm.train(module.training)
        return norm

    def _add_norm(self, x, residual):
        dtype = _sum_dtype(x, residual)
        prenorm = residual is not None
        out_dtype = dtype
        if self.casting_mode == "llama":  # ``weight * hidden.to(dtype)`` has the promoted dtype
            out_dtype = torch.promote_types(self.weight.dtype, dtype)
        out = _functional.add_norm(x, residual=residual, weight=self.weight, kind="rms", eps=self.eps,
                                   prenorm=prenorm, residual_dtype=dtype, out_dtype=out_dtype,
                                   casting_mode=self.casting_mode,
                                   zero_centered_weight=self.casting_mode == "gemma")
        return out if prenorm else (out, None)

    def extra_repr(self) -> str:
        return f"({self.hidden_size},), eps={self.eps}, casting_mode={self.casting_mode!r}"


class ResnormLayerNorm(nn.LayerNorm, _FusedNorm):
    """LayerNorm (Ba et al. 2016) ``y = (s - mean) / sqrt(var + eps) * w + b`` computed by
    ``resnorm.add_norm(kind="layer")``: a drop-in for ``torch.nn.LayerNorm`` over the last dimension
    (GPT-2's ``ln_1`` / ``ln_2`` / ``ln_f``), same parameters and state_dict, fp32 math, output in the
    input's dtype, and a residual add fused in front when it reads a ``ResidualStream``."""

    forward = _FusedNorm.forward

    @classmethod
    def from_module(cls, module: nn.LayerNorm) -> ResnormLayerNorm:
        """A ``ResnormLayerNorm`` that shares ``module``'s weight and bias (the same Parameters)."""
        if len(module.normalized_shape) != 1:
            raise ValueError(f"ResnormLayerNorm normalizes the last dimension only; got normalized_shape "
                             f"{tuple(module.normalized_shape)}")
        norm = cls(module.normalized_shape, module.eps, module.elementwise_affine,
                   bias=module.bias is not None, device="meta")
        norm.weight, norm.bias = module.weight, module.bias
        norm.train(module.training)
        return norm

    def _add_norm(self, x, residual):
        dtype = _sum_dtype(x, residual)
        out = _functional.add_norm(x, residual=residual, weight=self.weight, bias=self.bias, kind="layer",
                                   eps=self.eps, prenorm=residual is not None, residual_dtype=dtype,
                                   out_dtype=dtype)
        return out if residual is not None else (out, None)


# ----------------------------------------------------------------------------------------------
# families


@dataclass(frozen=True)
class _Sublayer:
    """One residual branch of a decoder layer: ``s <- s + dropout(post_norm(module(pre_norm(s))))``.

    ``call`` says how the module is called (``"attention"``: keyword ``hidden_states`` plus every
    keyword argument the layer got; ``"mlp"``: the input only; ``"gpt2_attention"`` /
    ``"gpt2_cross_attention"``: GPT-2's block). ``when``: the branch runs only when that keyword
    argument is not None (GPT-2's cross-attention)."""

    pre_norm: str | None
    module: str
    call: str
    post_norm: str | None = None
    dropout: str | None = None
    when: str | None = None


_PRE_NORM = (
    _Sublayer("input_layernorm", "self_attn", "attention"),
    _Sublayer("post_attention_layernorm", "mlp", "mlp"),
)
_PHI3 = (
    _Sublayer("input_layernorm", "self_attn", "attention", dropout="resid_attn_dropout"),
    _Sublayer("post_attention_layernorm", "mlp", "mlp", dropout="resid_mlp_dropout"),
)
_SANDWICH = (  # Gemma 2 / 3: a norm before and after each sublayer
    _Sublayer("input_layernorm", "self_attn", "attention", post_norm="post_attention_layernorm"),
    _Sublayer("pre_feedforward_layernorm", "mlp", "mlp", post_norm="post_feedforward_layernorm"),
)
_BRANCH_NORM = (  # OLMo 2: the norm on the sublayer's output only
    _Sublayer(None, "self_attn", "attention", post_norm="post_attention_layernorm"),
    _Sublayer(None, "mlp", "mlp", post_norm="post_feedforward_layernorm"),
)
_GPT2 = (
    _Sublayer("ln_1", "attn", "gpt2_attention"),
    _Sublayer("ln_cross_attn", "crossattention", "gpt2_cross_attention", when="encoder_hidden_states"),
    _Sublayer("ln_2", "mlp", "mlp"),
)


@dataclass(frozen=True)
class _Family:
    module: str  # transformers.models.<module>.modeling_<module>
    prefix: str  # class-name prefix: <prefix>RMSNorm, <prefix>DecoderLayer
    casting_mode: str  # "llama" | "gemma" | "fp32" | "layer" (GPT-2's LayerNorm)
    sublayers: tuple[_Sublayer, ...]
    layer_class: str = ""
    norm_class: str = ""
    eps_attr: str = "variance_epsilon"  # where the RMSNorm keeps eps (nn.LayerNorm: .eps)
    final_norm: str = "norm"  # the decoder stack's norm after the last layer

    def resolve(self) -> tuple[type[nn.Module], type[nn.Module]]:
        mod = importlib.import_module(f"transformers.models.{self.module}.modeling_{self.module}")
        layer = getattr(mod, self.layer_class or f"{self.prefix}DecoderLayer")
        norm = nn.LayerNorm if self.casting_mode == "layer" else getattr(mod, self.norm_class
                                                                        or f"{self.prefix}RMSNorm")
        return layer, norm


_FAMILIES: dict[str, _Family] = {
    "llama": _Family("llama", "Llama", "llama", _PRE_NORM),
    "mistral": _Family("mistral", "Mistral", "llama", _PRE_NORM),
    "qwen2": _Family("qwen2", "Qwen2", "llama", _PRE_NORM),
    "qwen3": _Family("qwen3", "Qwen3", "llama", _PRE_NORM),
    "phi3": _Family("phi3", "Phi3", "llama", _PHI3),
    "gemma": _Family("gemma", "Gemma", "gemma", _PRE_NORM, eps_attr="eps"),
    "gemma2": _Family("gemma2", "Gemma2", "gemma", _SANDWICH, eps_attr="eps"),
    "gemma3": _Family("gemma3", "Gemma3", "gemma", _SANDWICH, eps_attr="eps"),
    "gemma3_text": _Family("gemma3", "Gemma3", "gemma", _SANDWICH, eps_attr="eps"),
    "olmo2": _Family("olmo2", "Olmo2", "fp32", _BRANCH_NORM),
    "gpt2": _Family("gpt2", "GPT2", "layer", _GPT2, layer_class="GPT2Block", final_norm="ln_f"),
}

if tuple(sorted(_FAMILIES)) != SUPPORTED_MODEL_TYPES:  # one list, kept in hf_common for the lab
    raise RuntimeError("resnorm.integrations.hf_common.SUPPORTED_MODEL_TYPES does not list the families "
                       f"of resnorm.integrations.transformers: {', '.join(sorted(_FAMILIES))}")


def fused_add_count(model_type: str, num_layers: int) -> int:
    """How many residual adds ``apply_resnorm(fuse_residual=True)`` fuses into a norm in one forward
    of a decoder-only model of ``num_layers`` layers: ``2 * num_layers`` for every family whose
    sublayers are pre-normed (all but OLMo 2), ``1`` for OLMo 2 (only the last add, into the final
    norm). GPT-2 with cross-attention fuses one more add per layer when ``encoder_hidden_states`` is
    given."""
    family = _family(model_type)
    if all(s.pre_norm is None for s in family.sublayers):
        return 1
    return 2 * num_layers


def _family(model_type: str) -> _Family:
    if model_type not in _FAMILIES:
        raise ValueError(
            f"resnorm does not support model_type {model_type!r}; supported model types: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return _FAMILIES[model_type]


# ----------------------------------------------------------------------------------------------
# the fused decoder-layer forward


def _call_sublayer(layer: nn.Module, sub: _Sublayer, x: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    module = getattr(layer, sub.module)
    if sub.call == "mlp":
        return module(x)
    if sub.call == "attention":
        return module(hidden_states=x, **kwargs)[0]
    if sub.call == "gpt2_attention":
        cross = ("encoder_hidden_states", "encoder_attention_mask")
        rest = {k: v for k, v in kwargs.items() if k not in cross}
        rest.setdefault("use_cache", False)
        return module(x, **rest)[0]
    # gpt2_cross_attention
    return module(
        x,
        past_key_values=kwargs.get("past_key_values"),
        attention_mask=kwargs.get("attention_mask"),
        encoder_hidden_states=kwargs["encoder_hidden_states"],
        encoder_attention_mask=kwargs.get("encoder_attention_mask"),
    )[0]


def _fused_layer_forward(self: nn.Module, hidden_states: torch.Tensor | ResidualStream, *args: Any,
                         **kwargs: Any) -> ResidualStream:
    """A decoder layer with every residual add left to the norm that reads the stream next.

    Takes the stream as a tensor (first layer) or a ``ResidualStream`` (the previous layer's output)
    and returns a ``ResidualStream``; the model's loop passes it on unchanged."""
    if args:  # positional arguments after hidden_states, named as in the layer's own forward
        kwargs.update(zip(self._resnorm_arg_names, args, strict=False))
    if self.gradient_checkpointing and self.training and _uses_reentrant_checkpointing(self):
        raise ValueError(
            "apply_resnorm(fuse_residual=True) passes the residual stream between decoder layers, "
            "which reentrant activation checkpointing cannot track; enable checkpointing with "
            "use_reentrant=False (the transformers default) or apply_resnorm(model, fuse_residual=False)"
        )
    stream = hidden_states
    for sub in self._resnorm_sublayers:
        if sub.when is not None and kwargs.get(sub.when) is None:
            continue
        if sub.call == "gpt2_cross_attention" and not hasattr(self, sub.module):
            raise ValueError(
                f"If `encoder_hidden_states` are passed, {self} has to be instantiated with "
                "cross-attention layers by setting `config.add_cross_attention=True`"
            )
        if sub.pre_norm is not None:
            x, residual = getattr(self, sub.pre_norm).normalize_stream(stream)
        else:  # no norm reads this add: do it here, as the unpatched layer does
            residual = materialize(stream)
            x = residual
        out = _call_sublayer(self, sub, x, kwargs)
        if sub.post_norm is not None:
            out = getattr(self, sub.post_norm)(out)
        if sub.dropout is not None:
            out = getattr(self, sub.dropout)(out)
        stream = ResidualStream(out, residual)
    return stream


def _uses_reentrant_checkpointing(layer: nn.Module) -> bool:
    func = getattr(layer, "_gradient_checkpointing_func", None)
    keywords = getattr(func, "keywords", None) or {}
    return bool(keywords.get("use_reentrant", False))


_FUSED_CLASSES: dict[type, type] = {}


def _fused_layer_class(cls: type[nn.Module], sublayers: tuple[_Sublayer, ...]) -> type[nn.Module]:
    """A subclass of the family's decoder layer (same name, so ``_no_split_modules`` and output
    capture still match it) whose forward is ``_fused_layer_forward``. Subclassing keeps
    transformers' activation-checkpointing wrapper around the new forward."""
    if cls not in _FUSED_CLASSES:
        params = list(inspect.signature(cls.forward).parameters.values())[2:]  # after self, hidden_states
        names = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
        _FUSED_CLASSES[cls] = type(cls.__name__, (cls,), {
            "forward": _fused_layer_forward,
            "_resnorm_sublayers": sublayers,
            "_resnorm_arg_names": names,
            "__module__": __name__,
            "__qualname__": cls.__qualname__,
            "__doc__": f"{cls.__name__} whose residual adds are fused into the next norm by resnorm.",
        })
    return _FUSED_CLASSES[cls]


def _materialized_output(out: Any) -> Any:
    """``out`` with every ``ResidualStream`` that ``output_hidden_states`` captured turned into its
    tensor (the value the unpatched model returns)."""
    if isinstance(out, ModelOutput):
        hidden = out.get("hidden_states")
        if hidden is not None:
            out["hidden_states"] = materialize(hidden)
        return out
    if isinstance(out, tuple):
        return tuple(materialize(v) for v in out)
    return out


def _call_materialized(forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return _materialized_output(forward(*args, **kwargs))


def _materializing_forward(owner: nn.Module) -> Callable[..., Any]:
    """The owner's forward followed by ``_materialized_output``, as an instance attribute.

    The forward wrapped is the one the owner has now: a wrapper already set on the instance (a hook,
    e.g. accelerate's), else the class's ``forward`` with the owner bound. A ``functools.partial`` over
    module-level functions and the owner itself (not a bound method, which pickle stores as
    ``getattr(owner, "forward")`` and would restore as the class's unpatched forward): ``copy.deepcopy``
    and ``torch.save(model)`` / ``torch.load`` carry it to the copy. It keeps the wrapped forward's
    signature (without ``self``) for whoever inspects it."""
    previous = vars(owner).get("forward")
    if previous is None:
        original = type(owner).forward
        forward = functools.partial(_call_materialized, original, owner)
        try:
            signature = inspect.signature(original)
            forward.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
        except (TypeError, ValueError):
            pass
    else:
        original = previous
        forward = functools.partial(_call_materialized, previous)
        try:
            forward.__signature__ = inspect.signature(previous)
        except (TypeError, ValueError):
            pass
    forward.__name__, forward.__doc__ = "forward", getattr(original, "__doc__", None)
    forward._resnorm_materializing = True
    return forward


def __getattr__(name: str) -> type[nn.Module]:
    """The fused decoder-layer classes by name (``LlamaDecoderLayer``, ``GPT2Block``, ...), made on
    first use: what ``pickle`` looks up when it loads a fused model saved with ``torch.save(model)``."""
    if not name.startswith("_"):
        for family in _FAMILIES.values():
            if (family.layer_class or f"{family.prefix}DecoderLayer") == name:
                layer_class, _ = family.resolve()
                return _fused_layer_class(layer_class, family.sublayers)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------
# apply_resnorm


def _replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _model_type(model: PreTrainedModel) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model_type, str):
        raise ValueError(f"apply_resnorm needs model.config.model_type; {type(model).__name__} has none")
    return model_type


def apply_resnorm(model: PreTrainedModel, *, fuse_residual: bool = True) -> PreTrainedModel:
    """Swap every normalization module of ``model`` for resnorm's and, with ``fuse_residual``, fuse
    each residual add into the norm that follows it. In place; returns ``model``.

    Args:
        model: an instantiated transformers ``PreTrainedModel`` whose ``config.model_type`` is in
            ``SUPPORTED_MODEL_TYPES`` (any head: ``*ForCausalLM``, the bare ``*Model``, ...).
        fuse_residual: rewrite each decoder layer's forward so that every residual add followed by a
            norm is one ``add_norm(..., prenorm=True)`` call (2L per forward for L pre-norm layers;
            one for OLMo 2, whose adds are not followed by a norm except the last one).

    The ``state_dict`` is unchanged (same names, shapes, and the very same Parameter objects, so an
    optimizer built before the call keeps working) and ``save_pretrained`` writes the model's own
    format. Outputs, gradients, generation and ``output_hidden_states`` match the unpatched model
    (fp32: to rounding; see docs/transformers.md for the casting rules per family). Applying it again
    is a no-op; a fused model cannot be un-fused (load it again instead).

    Raises:
        TypeError: ``model`` is not a ``PreTrainedModel``, or ``fuse_residual`` not a bool.
        ValueError: unsupported ``model_type`` (the message lists ``SUPPORTED_MODEL_TYPES``), a model
            whose layers do not have the family's structure, or ``fuse_residual=False`` on a model
            already fused.
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"apply_resnorm expects a transformers PreTrainedModel; got {type(model).__name__}")
    if not isinstance(fuse_residual, bool):
        raise TypeError(f"fuse_residual must be a bool; got {type(fuse_residual).__name__}")
    family = _family(_model_type(model))
    previous = getattr(model, "_resnorm_fuse_residual", None)
    if previous and not fuse_residual:
        raise ValueError("this model's residual adds are already fused by apply_resnorm(fuse_residual=True); "
                         "load the model again to run it without fusion")
    layer_class, norm_class = family.resolve()
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, layer_class)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no {layer_class.__name__} to patch")
    owners: dict[str, nn.Module] = {}  # the decoder stacks: <owner>.<layers>.<i>
    for name, _ in layers:
        owner_name = name.rpartition(".")[0].rpartition(".")[0]
        owners[owner_name] = model.get_submodule(owner_name) if owner_name else model
    if fuse_residual:  # check everything before changing anything
        norm_types = (norm_class, _FusedNorm)
        for name, layer in layers:
            _check_layer(layer, family, name, norm_types)
            wrapper = vars(layer).get("forward")
            if wrapper is not None and type(layer) is layer_class:  # it would call the unfused forward
                raise ValueError(
                    f"{name} has its forward replaced on the instance (a {type(wrapper).__name__}: a hook "
                    "such as accelerate's device_map dispatch, or a wrapper), which keeps calling the "
                    "unfused forward; call apply_resnorm before adding it, or use "
                    "apply_resnorm(model, fuse_residual=False) (the norms only)")
        for owner_name, owner in owners.items():
            final = getattr(owner, family.final_norm, None)
            if not isinstance(final, norm_types):
                raise ValueError(
                    f"{owner_name or type(model).__name__}.{family.final_norm} is a {type(final).__name__}, "
                    f"not the {norm_class.__name__} that reads the last layer's residual stream")

    # 1. norms (decoder norms, QK-norms, final norm, Gemma 3's multimodal projector norm)
    for name, module in list(model.named_modules()):
        if type(module) is not norm_class:
            continue
        if family.casting_mode == "layer":
            new = ResnormLayerNorm.from_module(module)
        else:
            eps = getattr(module, family.eps_attr)
            new = ResnormRMSNorm.from_module(module, eps=eps, casting_mode=family.casting_mode)
        _replace_module(model, name, new)

    # 2. decoder layers: a subclass whose forward leaves each add to the norm that reads it
    if fuse_residual:
        for _, layer in layers:
            if type(layer) is layer_class:
                layer.__class__ = _fused_layer_class(layer_class, family.sublayers)
        for owner in owners.values():  # hidden states captured from the layers: tensors again
            if not getattr(vars(owner).get("forward"), "_resnorm_materializing", False):
                owner.forward = _materializing_forward(owner)
    model._resnorm_fuse_residual = bool(previous) or fuse_residual
    return model


def _check_layer(layer: nn.Module, family: _Family, name: str, norm_types: tuple[type, ...]) -> None:
    """Fail early, naming the attribute, when a layer is not laid out as the family's forward reads it."""
    for sub in family.sublayers:
        if sub.when is not None and not hasattr(layer, sub.module):
            continue  # an optional branch the model was built without (GPT-2's cross-attention)
        for attr in (sub.module, sub.pre_norm, sub.post_norm, sub.dropout):
            if attr is not None and not hasattr(layer, attr):
                raise ValueError(
                    f"{name} ({type(layer).__name__}) has no {attr!r}: this transformers release "
                    f"({transformers.__version__}) does not lay the layer out as resnorm expects "
                    f"(supported: transformers{TRANSFORMERS_VERSIONS})")
        for attr in (sub.pre_norm, sub.post_norm):
            if attr is not None and not isinstance(getattr(layer, attr), norm_types):
                raise ValueError(f"{name}.{attr} is a {type(getattr(layer, attr)).__name__}, not a norm "
                                 "resnorm can fuse a residual add into")


# ----------------------------------------------------------------------------------------------
# building and probing models (the lab)

SIZE_KEYS = ("vocab_size", "n_layer", "n_head", "n_kv_head", "d_model", "d_ff", "head_dim", "block_size",
             "dropout")


def causal_lm_from_config(
    model_type: str,
    *,
    vocab_size: int,
    n_layer: int = 2,
    n_head: int = 4,
    n_kv_head: int | None = None,
    d_model: int = 64,
    d_ff: int | None = None,
    head_dim: int | None = None,
    block_size: int = 256,
    dropout: float = 0.0,
    attn_implementation: str | None = None,
    **config_kwargs: Any,
) -> PreTrainedModel:
    """A randomly initialized causal LM of family ``model_type``, built from sizes (no download).

    The sizes use the lab's names and are mapped onto each family's config: ``n_layer`` layers,
    ``n_head`` query heads and ``n_kv_head`` key/value heads (default ``n_head``; GPT-2 has no
    grouped-query attention), width ``d_model``, MLP width ``d_ff`` (default ``4 * d_model``),
    ``head_dim`` (default ``d_model // n_head``; Gemma's query scale follows it), context
    ``block_size``, ``dropout`` (every dropout the family has), ``vocab_size`` (from the data). Token
    ids: no BOS/EOS/pad (the data's ids are all ordinary tokens). ``config_kwargs`` pass other
    config fields by their transformers names (an unknown one raises ``ValueError``).
    ``attn_implementation``: None (transformers' default for the family: SDPA where it supports it),
    or e.g. ``"eager"``, which makes the attention modules return their probabilities.
    """
    if model_type == "gemma3":
        model_type = "gemma3_text"  # the causal LM of Gemma 3 is its text model
    _family(model_type)
    for key, value in (("vocab_size", vocab_size), ("n_layer", n_layer), ("n_head", n_head),
                       ("d_model", d_model), ("block_size", block_size)):
        _check_positive_int(key, value)
    for key, value in (("n_kv_head", n_kv_head), ("d_ff", d_ff), ("head_dim", head_dim)):
        if value is not None:
            _check_positive_int(key, value)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a float in [0, 1); got {dropout!r}")
    n_kv_head = n_head if n_kv_head is None else n_kv_head
    if n_head % n_kv_head != 0:
        raise ValueError(f"n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head})")
    if head_dim is None:
        if d_model % n_head != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head}), or give head_dim")
        head_dim = d_model // n_head
    d_ff = 4 * d_model if d_ff is None else d_ff

    config_class = transformers.AutoConfig.for_model(model_type).__class__
    if model_type == "gpt2":
        if n_kv_head != n_head:
            raise ValueError("gpt2 has no grouped-query attention: n_kv_head must equal n_head")
        if head_dim * n_head != d_model:
            raise ValueError("gpt2's head_dim is d_model // n_head")
        sizes = dict(vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=d_model, n_inner=d_ff,
                     n_positions=block_size, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                     bos_token_id=None, eos_token_id=None, pad_token_id=None)
    else:
        sizes = dict(vocab_size=vocab_size, num_hidden_layers=n_layer, num_attention_heads=n_head,
                     num_key_value_heads=n_kv_head, hidden_size=d_model, intermediate_size=d_ff,
                     head_dim=head_dim, max_position_embeddings=block_size, attention_dropout=dropout,
                     bos_token_id=None, eos_token_id=None, pad_token_id=None)
        if model_type == "phi3":
            if head_dim * n_head != d_model:
                raise ValueError("phi3's head_dim is d_model // n_head")
            del sizes["head_dim"]
            sizes.update(resid_pdrop=dropout, embd_pdrop=dropout,
                         original_max_position_embeddings=block_size)
        if model_type in ("gemma2", "gemma3_text"):
            sizes["query_pre_attn_scalar"] = head_dim  # the usual 1/sqrt(head_dim) attention scale
    defaults = config_class()
    unknown = sorted(k for k in config_kwargs if not hasattr(defaults, k))
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} field(s) {', '.join(unknown)}; sizes are "
                         f"{', '.join(SIZE_KEYS)}, other keys must be {config_class.__name__} fields")
    config = config_class(**{**sizes, **config_kwargs})
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int; got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value}")


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The decoder layers of a supported model, in depth order (what per-layer probes hook).

    A forward hook on a layer of a fused model receives a ``ResidualStream``: ``materialize(output)``
    is the hidden state the layer's unpatched forward returns."""
    family = _family(_model_type(model))
    layer_class, _ = family.resolve()
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module):
            if all(isinstance(m, layer_class) for m in module):
                return module
    raise ValueError(f"{type(model).__name__} has no list of {layer_class.__name__}")


def attention_modules(model: PreTrainedModel) -> list[nn.Module]:
    """The self-attention module of each decoder layer, in depth order. Each returns
    ``(output, probabilities)``; ``probabilities`` (batch, heads, queries, keys; rows sum to 1) is a
    tensor when the model runs eager attention (``causal_lm_from_config(...,
    attn_implementation="eager")`` or ``model.set_attn_implementation("eager")``) and None with SDPA."""
    family = _family(_model_type(model))
    name = family.sublayers[0].module
    return [getattr(layer, name) for layer in decoder_layers(model)]


"""Model families by name: the one list of what ``resnorm train MODEL`` and ``resnorm compare --model``
can train.

A :class:`ModelFamily` says, for one name (``residual-mlp``, ``gpt``, ...):

- ``build(config, data) -> nn.Module``: the model for a ``TrainConfig`` and the loaded data (image data
  has ``num_classes``, ``in_features``, ``in_channels``; text data has ``vocab_size``);
- ``task``: ``"image"`` (classification, cross-entropy and accuracy) or ``"text"`` (next-token
  prediction); for images also the input ``layout`` (``"flat"`` for MLPs, ``"conv"`` 32x32 images);
- ``depth_field`` and ``depth_label``: which ``TrainConfig`` field sets the depth and what it counts
  (residual blocks, 6n+2 layers, transformer blocks);
- ``defaults``: the default recipe (``TrainConfig`` fields) with ``recipe_source``, where it comes from;
- ``design_fields(placement, norm)``: the fields a residual/norm design sets (None: no design switch),
  and ``design_label(config)``: the design a saved config used;
- ``designs``: for a family whose designs are not placement x norm pairs, its own named designs
  (``NamedDesign``: a name, the config fields it sets, one line saying what it is), e.g. the Hugging
  Face family's ``hf`` (the model's own code) and ``hf+resnorm``; a config's label is the first whose
  fields it has;
- ``options``: the design-option keys of ``TrainConfig`` (``resnorm.lab.config.OPTION_MODELS``) the
  family takes besides the built-in models that take them;
- ``check(config)``: family-specific validation (raise ``ConfigError``);
- ``available()``: raises ``ConfigError`` when the family cannot run on this machine (a missing
  optional package); a study calls it before it starts, the family's ``build`` fails the same way;
- ``model_types``: None when the family has no sub-types; else the valid ``model_type`` values (an
  empty tuple accepts any value and leaves it to ``check``), e.g. the Hugging Face family's
  ``llama``/``gpt2`` (``resnorm train hf llama ...``, ``resnorm compare --model hf:llama``);
- ``study``: the quick recipe ``resnorm compare --model ALIAS`` uses (None: not in compare; a family
  with model types is compared as ``ALIAS:TYPE``);
- ``make_task(config, device)``: optional, a task of the family's own (e.g. text through a tokenizer)
  in place of the lab's ``ImageTask``/``TextTask`` (``resnorm.lab.tasks``: it must offer the same
  methods: ``train_batch``, ``loss``, ``eval_batches``, ``epoch_at``, ``steps_per_epoch``,
  ``baseline_loss``, ``is_text``, ``has_test``, and ``data`` for ``build``).

Adding a family: ``register(ModelFamily(...))`` from a module listed in ``PLUGINS`` (imported on the
first lookup, so it must import heavy libraries inside ``build`` only; ``lazy_builder("pkg.mod", "fn")``
defers the import of the builder itself). ``resnorm.lab.hf`` registers the Hugging Face family ``hf``
that way. Nothing else in the lab lists model names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from resnorm.lab.designs import DESIGNS, name_for
from resnorm.lab.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from resnorm.lab.config import TrainConfig

__all__ = ["ModelFamily", "NamedDesign", "StudyDefaults", "register", "get", "names", "families",
           "study_aliases", "study_models", "by_study_alias", "parse_study_model", "design_name",
           "lazy_builder", "PLUGINS", "TASKS"]

TASKS = ("image", "text")
# Modules that register more families when imported; a missing one is skipped.
PLUGINS: list[str] = ["resnorm.lab.hf"]


@dataclass(frozen=True)
class StudyDefaults:
    """What ``resnorm compare --model ALIAS`` runs by default, and its quick per-run recipe.

    ``columns``: the summary table's columns (keys of ``resnorm.lab.summary.COLUMNS``; None: the
    default ``SUMMARY_COLUMNS``). ``same_numbers_rtol``: set when the designs compute the same
    function (a speed and memory study): the summary then says how far each design's training losses
    are from the first design's, against this relative tolerance."""

    alias: str
    designs: tuple[str, ...]
    depths: tuple[int, ...]
    data: str
    steps: int
    recipe: Mapping[str, Any]
    note: str = ""
    columns: tuple[str, ...] | None = None
    same_numbers_rtol: float | None = None


@dataclass(frozen=True)
class NamedDesign:
    """A design of a family whose designs are not placement x norm pairs: the config ``fields`` it
    sets, and one line saying what it is."""

    name: str
    fields: Mapping[str, Any]
    summary: str = ""

    def matches(self, config: Mapping[str, Any]) -> bool:
        return all(config.get(k) == v for k, v in self.fields.items())


@dataclass(frozen=True)
class ModelFamily:
    """One trainable model family (see the module docstring for each field)."""

    name: str
    task: str
    build: Callable[[TrainConfig, Any], nn.Module]
    defaults: Mapping[str, Any]
    summary: str
    recipe_source: str = ""
    layout: str = "conv"
    depth_field: str | None = None
    depth_label: str | None = None
    design_fields: Callable[[str, str], dict[str, Any]] | None = None
    design_label: Callable[[Mapping[str, Any]], str] | None = None
    check: Callable[[TrainConfig], None] | None = None
    model_types: tuple[str, ...] | None = None
    study: StudyDefaults | None = None
    placements: tuple[str, ...] | None = field(default=None)  # placements design_fields accepts (None: all)
    make_task: Callable[[TrainConfig, Any], Any] | None = None
    designs: tuple[NamedDesign, ...] | None = None
    options: tuple[str, ...] = ()
    available: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"ModelFamily {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        if self.layout not in ("conv", "flat"):
            raise ValueError(f"ModelFamily {self.name!r}: layout must be 'conv' or 'flat', "
                             f"got {self.layout!r}")

    def depth_of(self, config: Mapping[str, Any]) -> int | None:
        """The depth a (saved) config trains, or None when the family has no depth setting."""
        if self.depth_field is None or config.get(self.depth_field) is None:
            return None
        return int(config[self.depth_field])

    def label(self, config: Mapping[str, Any]) -> str:
        """The name of the design a config uses (a named design when one matches)."""
        if self.design_label is not None:
            return self.design_label(config)
        if self.designs is not None:
            return next((d.name for d in self.designs if d.matches(config)), self.name)
        placement, norm = config.get("placement"), config.get("norm")
        if self.design_fields is None or placement is None or norm is None:
            return self.name
        return name_for(placement, norm)


_FAMILIES: dict[str, ModelFamily] = {}
_plugins_loaded: set[str] = set()


def register(family: ModelFamily, *, replace: bool = False) -> ModelFamily:
    """Add ``family`` (a name already taken is an error unless ``replace``)."""
    if not isinstance(family, ModelFamily):
        raise TypeError(f"register() takes a ModelFamily, got {type(family).__name__}")
    if family.name in _FAMILIES and not replace:
        raise ValueError(f"model family {family.name!r} is already registered")
    alias = family.study.alias if family.study else None
    taken = {f.study.alias: f.name for f in _FAMILIES.values() if f.study and f.name != family.name}
    if alias is not None and alias in taken:
        raise ValueError(f"compare alias {alias!r} of {family.name!r} is already used by {taken[alias]!r}")
    _FAMILIES[family.name] = family
    return family


def _load_plugins() -> None:
    for module in PLUGINS:
        if module in _plugins_loaded:
            continue
        _plugins_loaded.add(module)
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name is None or not module.startswith(err.name):
                raise


def names() -> tuple[str, ...]:
    """Every registered family name, in registration order."""
    _load_plugins()
    return tuple(_FAMILIES)


def families() -> tuple[ModelFamily, ...]:
    _load_plugins()
    return tuple(_FAMILIES.values())


def get(name: str) -> ModelFamily:
    """The family called ``name``; a ``ConfigError`` listing the valid names otherwise."""
    _load_plugins()
    if name not in _FAMILIES:
        raise ConfigError(f"model={name!r}: expected one of {', '.join(_FAMILIES)}",
                          cli=f"unknown model {name!r}; valid models: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


def study_aliases() -> dict[str, str]:
    """``resnorm compare --model`` names -> family names."""
    return {f.study.alias: f.name for f in families() if f.study is not None}


def study_models() -> list[str]:
    """What ``resnorm compare --model`` accepts, for messages: each alias, ``ALIAS:TYPE`` for a family
    with model types."""
    return [f"{f.study.alias}:TYPE" if f.model_types is not None else f.study.alias
            for f in families() if f.study is not None]


def parse_study_model(spec: str) -> tuple[ModelFamily, str | None]:
    """``resnorm compare --model`` -> (family, model type or None): ``ALIAS`` or, for a family with
    model types, ``ALIAS:TYPE`` (checked against ``model_types``; ``ALIAS`` alone: the type of the
    family's defaults, or a ``ConfigError`` when they have none)."""
    aliases = study_aliases()
    alias, sep, model_type = str(spec).partition(":")
    if alias not in aliases:
        raise ConfigError(f"unknown --model {spec!r}; valid models: {', '.join(study_models())}")
    family = _FAMILIES[aliases[alias]]
    if family.model_types is None:
        if sep:
            raise ConfigError(f"--model {spec!r}: {alias} has no model types; give --model {alias}")
        return family, None
    types = family.model_types
    if not sep:
        model_type = family.defaults.get("model_type")
    if not model_type:
        choices = f": TYPE one of {', '.join(types)}" if types else ""
        raise ConfigError(f"--model {alias} needs a model type, --model {alias}:TYPE{choices}")
    if types and model_type not in types:
        raise ConfigError(f"--model {spec!r}: unknown model type {model_type!r} for {alias}; "
                          f"supported: {', '.join(types)}")
    return family, model_type


def by_study_alias(alias: str) -> ModelFamily:
    """The family of a ``resnorm compare --model`` value (``ALIAS`` or ``ALIAS:TYPE``)."""
    return parse_study_model(alias)[0]


def design_name(config: Mapping[str, Any]) -> str:
    """The label of a run's design from its config: a named design when one matches, else
    ``placement:norm`` (resnet-cifar: ``plain``/``residual`` plus its norm)."""
    model = config.get("model")
    _load_plugins()
    if model in _FAMILIES:
        return _FAMILIES[model].label(config)
    placement, norm = config.get("placement"), config.get("norm")
    if placement is None or norm is None:
        return str(model or "run")
    return name_for(placement, norm)


def lazy_builder(module: str, attr: str) -> Callable[..., Any]:
    """A builder that imports ``module.attr`` on its first call (keeps plugins cheap to import)."""

    def build(config: TrainConfig, data: Any) -> nn.Module:
        return getattr(importlib.import_module(module), attr)(config, data)

    build.__qualname__ = f"lazy_builder({module}.{attr})"
    return build


# ----------------------------------------------------------------------------------------------
# the built-in families


def _placement_and_norm(placement: str, norm: str) -> dict[str, Any]:
    return {"placement": placement, "norm": norm}


def _residual_switch(placement: str, norm: str) -> dict[str, Any]:
    """resnet-cifar has one residual block: placement ``none`` switches the skip off (the plain net),
    ``post`` or ``pre`` keep He et al.'s block; the norm is the design's."""
    return {"residual": placement != "none", "norm": norm}


def _resnet_label(config: Mapping[str, Any]) -> str:
    residual = bool(config.get("residual", True))
    norm = config.get("norm")
    placement = "post" if residual else "none"
    for name in _RESNET_DESIGNS:
        d = DESIGNS[name]
        if d.placement == placement and d.norm == norm:
            return name
    return f"{'residual' if residual else 'plain'}:{norm}"


def _check_resnet(config: TrainConfig) -> None:
    if (config.depth - 2) % 6 or config.depth < 8:
        raise ConfigError(f"depth={config.depth}: resnet-cifar needs depth = 6n+2 with n >= 1 "
                          "(8, 14, 20, 32, 44, 56, 110, ...)")


def _check_gpt(config: TrainConfig) -> None:
    if config.d_model % config.n_head:
        raise ConfigError(f"d_model={config.d_model} must be divisible by n_head={config.n_head}")


def _build_residual_mlp(config: TrainConfig, data: Any) -> nn.Module:
    from resnorm import models

    return models.residual_mlp(config.depth, config.width, data.in_features, data.num_classes,
                               norm=config.norm, placement=config.placement, **_stream_options(config))


def _stream_options(config: TrainConfig) -> dict[str, Any]:
    """The placement options every stream model takes (``resnorm.models``)."""
    return dict(fused=config.fused, mixln_rho=config.mixln_rho, streams=config.streams,
                hyper_dynamic=config.hyper_dynamic, sinkhorn_iters=config.sinkhorn_iters)


def _build_seed_mlp(config: TrainConfig, data: Any) -> nn.Module:
    from resnorm import models

    return models.seed_mlp(in_features=data.in_features, hidden=config.width, num_classes=data.num_classes)


def _build_seed_resnet(config: TrainConfig, data: Any) -> nn.Module:
    from resnorm import models

    return models.seed_resnet(num_classes=data.num_classes, in_channels=data.in_channels)


def _build_resnet_cifar(config: TrainConfig, data: Any) -> nn.Module:
    from resnorm import models

    return models.resnet_cifar(config.depth, residual=config.residual, num_classes=data.num_classes,
                               norm=config.norm, in_channels=data.in_channels)


def _build_gpt(config: TrainConfig, data: Any) -> nn.Module:
    from resnorm import models

    gpt_config = models.GPTConfig(vocab_size=data.vocab_size, block_size=config.block_size,
                                  n_layer=config.n_layer, n_head=config.n_head, d_model=config.d_model,
                                  norm=config.norm, placement=config.placement, dropout=config.dropout,
                                  bias=config.bias, init=config.init, qk_norm=config.qk_norm,
                                  value_residual=config.value_residual, **_stream_options(config))
    return models.GPT(gpt_config)


_RESNET_DESIGNS = ("plain", "plain-bn", "residual", "post-bn")

register(ModelFamily(
    name="seed-resnet", task="image", build=_build_seed_resnet, layout="conv",
    summary="the seed ResNet: conv-BN-ReLU, two stride-2 residual blocks, 8x8 max-pool, dense 128, dense 10",
    defaults=dict(data="mnist5k", optimizer="adam", lr=1e-3, batch_size=64, steps=1000, schedule="cosine",
                  norm="batchnorm", placement="post"),
    recipe_source="Adam 1e-3 (the seed text's optimizer), batch 64, cosine",
))
register(ModelFamily(
    name="seed-mlp", task="image", build=_build_seed_mlp, layout="flat",
    summary="the seed MLP: 784-256-256-10 with ReLU, BatchNorm and a residual add",
    defaults=dict(data="mnist5k", width=256, optimizer="adam", lr=1e-3, batch_size=32, epochs=10.0,
                  schedule="constant", norm="batchnorm", placement="seed"),
    recipe_source="the seed text's own setup: Adam 1e-3, batch 32, 10 epochs",
))
register(ModelFamily(
    name="resnet-cifar", task="image", build=_build_resnet_cifar, layout="conv",
    depth_field="depth", depth_label="layers, 6n+2",
    summary="He et al. 2016's CIFAR ResNet (residual=true) or its plain twin (residual=false)",
    defaults=dict(data="mnist5k", depth=20, residual=True, norm="batchnorm", placement="post",
                  optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128, steps=2000,
                  schedule="step", augment=True),
    recipe_source="He et al. 2016, section 4.2: SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128, "
                  "lr /10 at 50% and 75% of training, 4-px crop (+ horizontal flip on CIFAR-10)",
    design_fields=_residual_switch, design_label=_resnet_label, check=_check_resnet,
    placements=("none", "post", "pre"),
    study=StudyDefaults(
        alias="resnet-cifar", designs=_RESNET_DESIGNS, depths=(8, 20), data="mnist5k", steps=60,
        recipe=dict(batch_size=64, optimizer="adamw", lr=2e-3, weight_decay=0.0, schedule="constant",
                    warmup_steps=0, grad_clip=0.0, augment=True),
        note="a quick look, not He et al.'s SGD recipe; raise --steps for conclusions"),
))
register(ModelFamily(
    name="residual-mlp", task="image", build=_build_residual_mlp, layout="flat",
    depth_field="depth", depth_label="residual blocks",
    summary="depth residual blocks of Linear-GELU-Linear on flattened images, any placement x norm",
    defaults=dict(data="mnist5k", depth=8, width=256, norm="layernorm", placement="pre", optimizer="adam",
                  lr=1e-3, batch_size=64, steps=1000, schedule="cosine"),
    recipe_source="Adam 1e-3, batch 64, cosine to 0, 1000 steps",
    design_fields=_placement_and_norm,
    study=StudyDefaults(
        alias="mlp", designs=("plain", "plain-bn", "residual", "post-norm", "pre-norm", "rezero"),
        depths=(4, 16, 48), data="mnist5k", steps=200,
        recipe=dict(width=64, batch_size=128, optimizer="adamw", lr=2e-3, weight_decay=0.0,
                    beta1=0.9, beta2=0.999, schedule="constant", warmup_steps=0, grad_clip=0.0)),
))
register(ModelFamily(
    name="gpt", task="text", build=_build_gpt,
    depth_field="n_layer", depth_label="transformer blocks, n_layer",
    summary="a nanoGPT-style character-level decoder, any placement x norm",
    defaults=dict(data="stdlib", n_layer=4, n_head=4, d_model=128, block_size=64, dropout=0.0, bias=False,
                  norm="layernorm", placement="pre", optimizer="adamw", lr=1e-3, beta1=0.9, beta2=0.99,
                  weight_decay=0.1, batch_size=12, steps=2000, warmup_steps=100, schedule="cosine",
                  min_lr_ratio=0.1, grad_clip=1.0, eval_every=250, eval_batches=20),
    recipe_source="nanoGPT's shakespeare_char config, CPU variant (benchmarks/gpt_shakespeare.py "
                  "reproduces its validation loss)",
    design_fields=_placement_and_norm, check=_check_gpt,
    study=StudyDefaults(
        alias="gpt", designs=("plain", "residual", "post-norm", "pre-norm", "rezero"), depths=(2, 8),
        data="stdlib", steps=150,
        recipe=dict(d_model=64, n_head=4, block_size=64, batch_size=16, optimizer="adamw", lr=2e-3,
                    beta1=0.9, beta2=0.99, weight_decay=0.0, schedule="constant", warmup_steps=0,
                    dropout=0.0, grad_clip=1.0),
        note="a quick look; raise --steps for conclusions"),
))

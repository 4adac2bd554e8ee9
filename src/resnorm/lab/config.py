"""Training configuration: one dataclass, loadable from YAML, overridable by ``key=value`` strings.

``load_config(path, overrides)`` reads a YAML mapping (optional) then applies overrides such as
``lr=3e-4`` or ``epochs=none``; every value is parsed by its field's type. ``config_for(model,
**fields)`` starts from the model family's default recipe (``resnorm.lab.registry``: each family's
``defaults`` and ``recipe_source``), then applies ``fields``:

- ``residual-mlp`` on mnist5k: Adam, lr 1e-3, cosine;
- ``seed-mlp``: Adam, lr 1e-3, batch 32, 10 epochs (the seed text's own setup);
- ``seed-resnet``: Adam, lr 1e-3, batch 64;
- ``resnet-cifar``: SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128, lr /10 at 50% and 75% of
  training, crop augmentation plus horizontal flips on CIFAR-10 (He et al. 2016, section 4.2);
- ``gpt``: pre-norm LayerNorm, AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1, batch 12, block 64,
  d_model 128, 4 layers, 4 heads, no bias, 2000 steps, warm-up 100 then cosine to lr/10, clip 1.0
  (nanoGPT's shakespeare_char config, CPU variant; benchmarks/gpt_shakespeare.py reproduces its val loss).

Every family probes every 10 steps by default (``probe_every=10``; measured overhead in
benchmarks/results/probes-cpu.md).

``resume_config(saved, overrides)`` is the configuration a resumed run continues with: the run's own
saved config, in which only ``MUTABLE_ON_RESUME`` fields (how long, how often to log, where) may change.

Bad keys or values raise ``ConfigError`` (a ``ValueError``) naming the key and the valid keys/choices.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from resnorm.lab import registry
from resnorm.lab.errors import ConfigError
from resnorm.lab.files import atomic_write_text
from resnorm.models import INITS
from resnorm.nn import NORMS, PLACEMENTS  # the nn layer's registry: one list of names

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "bf16", "off")
TEXT_DATASETS = ("stdlib",)
IMAGE_DATASETS = ("mnist5k", "digits")



def __getattr__(name: str) -> Any:
    # names kept for code written before the registry; computed from it, so they include plugins
    if name == "MODELS":
        return registry.names()
    if name == "MODEL_DEFAULTS":
        return {f.name: dict(f.defaults) for f in registry.families()}
    if name == "IMAGE_MODELS":
        return tuple(f.name for f in registry.families() if f.task == "image")
    if name == "MLP_MODELS":
        return tuple(f.name for f in registry.families() if f.task == "image" and f.layout == "flat")
    raise AttributeError(f"module 'resnorm.lab.config' has no attribute {name!r}")


@dataclass
class TrainConfig:
    """Everything that defines a training run (see the module docstring for per-model defaults)."""

    # what to train, on what
    model: str = "residual-mlp"
    data: str = "mnist5k"
    data_root: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0  # the train/val split is fixed across training seeds unless this changes
    augment: bool = False  # random 4-px crop, plus horizontal flip on mirror-symmetric data (image models)
    text_max_chars: int = 1_000_000  # cap on the "stdlib" corpus
    # model shape and design
    model_type: str | None = None  # a family's sub-type (e.g. a Hugging Face model type); unused by built-ins
    depth: int = 8
    width: int = 256
    norm: str = "layernorm"
    placement: str = "pre"
    residual: bool = True
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    block_size: int = 128
    dropout: float = 0.0
    bias: bool = False
    # design options (models/gpt.py and models/residual_mlp.py document them)
    init: str = "gpt2"  # gpt: gpt2 | xavier | deepnet
    qk_norm: bool = False  # gpt: the model's norm on q and k per head
    value_residual: bool = False  # gpt: V <- l1 V + l2 V_1
    fused: bool = True  # False: the textbook form of every block (explicit adds, separate norms)
    mixln_rho: float = 0.25  # mixln: the fraction of post-norm layers
    streams: int = 4  # hyper, mhc: residual streams
    hyper_dynamic: bool = True  # hyper: dynamic (input-dependent) or static connections
    sinkhorn_iters: int = 20  # mhc: Sinkhorn-Knopp iterations
    resnorm: bool = True  # hf: apply_resnorm to the transformers model (false: the model's own code)
    n_kv_head: int | None = None  # hf: key/value heads (grouped-query attention; None: n_head)
    # optimization
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    batch_size: int = 64
    steps: int = 1000
    epochs: float | None = None
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0  # cosine ends at lr * min_lr_ratio
    grad_clip: float = 0.0
    # bookkeeping
    eval_every: int = 100
    eval_batches: int = 20  # gpt: random validation windows per evaluation (images use the whole split)
    log_every: int = 10
    probe_every: int = 10
    spike_window: int = 50
    spike_sigma: float = 3.0
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    compile: bool = False
    threads: int = 0  # CPU intra-op threads for the run (torch.set_num_threads); 0 = leave torch's default
    tensorboard: bool = True

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **fields: Any) -> TrainConfig:
        return from_dict({**self.to_dict(), **fields})

    @property
    def family(self) -> registry.ModelFamily:
        """The model family (``resnorm.lab.registry``) this config trains."""
        return registry.get(self.model)

    @property
    def is_text(self) -> bool:
        return self.family.task == "text"


CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "device": DEVICES,
    "amp": AMP_MODES,
    "norm": NORMS,
    "placement": PLACEMENTS,
    "init": INITS,
}
# design options and the built-in models that take them (a non-default value elsewhere is an error)
_STREAM_MODELS = ("residual-mlp", "gpt")
OPTION_MODELS: dict[str, tuple[str, ...]] = {
    "init": ("gpt",), "qk_norm": ("gpt",), "value_residual": ("gpt",), "fused": _STREAM_MODELS,
    "mixln_rho": _STREAM_MODELS, "streams": _STREAM_MODELS, "hyper_dynamic": _STREAM_MODELS,
    "sinkhorn_iters": _STREAM_MODELS, "resnorm": (), "n_kv_head": (),
}  # a family may take more of them: registry.ModelFamily.options
POSITIVE_INT = ("depth", "width", "n_layer", "n_head", "d_model", "block_size", "batch_size", "steps",
                "text_max_chars", "spike_window", "streams", "sinkhorn_iters")
NON_NEGATIVE_INT = ("warmup_steps", "eval_every", "eval_batches", "log_every", "probe_every",
                    "checkpoint_every", "seed", "split_seed", "threads")
NON_NEGATIVE_FLOAT = ("lr", "weight_decay", "momentum", "grad_clip", "spike_sigma")
# What a resumed run may change: how long it trains, how often it logs, evaluates, probes and saves, and
# where and how fast it runs. Everything else defines what is trained and stays as the run was started.
MUTABLE_ON_RESUME = ("steps", "epochs", "eval_every", "eval_batches", "log_every", "probe_every",
                     "spike_sigma", "checkpoint_every", "data_root", "device", "amp", "compile", "threads",
                     "tensorboard")


# other names accepted for a key: resnorm.integrations.transformers' own argument names (config.yaml
# keeps the key itself)
KEY_ALIASES = {"apply_resnorm": "resnorm", "fuse_residual": "fused"}


def canonical_keys(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``KEY_ALIASES`` replaced by their keys; a key and its alias with different values
    are a ``ConfigError``."""
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in values.items():
        name = KEY_ALIASES.get(key, key)
        if name in out and given[name] != key and out[name] != value:
            raise ConfigError(f"{given[name]}={out[name]!r} and {key}={value!r} set the same key {name!r} "
                              "to different values")
        out[name], given[name] = value, key
    return out


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _type_name(tp: Any) -> str:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return "null" if tp is type(None) else tp.__name__


def validate(config: TrainConfig) -> None:
    """Check every field's type and range, the model/data pairing and the family's own rules; raise
    ``ConfigError``."""
    types_ = _field_types()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not _matches(value, types_[f.name]):
            raise ConfigError(f"{f.name}={value!r}: expected {_type_name(types_[f.name])}")
    family = registry.get(config.model)
    for name, choices in CHOICES.items():
        if getattr(config, name) not in choices:
            raise ConfigError(f"{name}={getattr(config, name)!r}: expected one of {', '.join(choices)}")
    for name in POSITIVE_INT:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}={getattr(config, name)!r}: expected a positive integer")
    for name in NON_NEGATIVE_INT:
        if getattr(config, name) < 0:
            raise ConfigError(f"{name}={getattr(config, name)!r}: expected an integer >= 0")
    for name in NON_NEGATIVE_FLOAT:
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name}={value!r}: expected a finite number >= 0")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name, models in OPTION_MODELS.items():
        value = getattr(config, name)
        if config.model not in models and name not in family.options and value != defaults[name]:
            takers = [*models, *(f.name for f in registry.families() if name in f.options)]
            raise ConfigError(f"{name}={value!r} applies to model {' or '.join(takers)} only; "
                              f"model={config.model!r} has no such option")
    if not 0.0 <= config.mixln_rho <= 1.0:
        raise ConfigError(f"mixln_rho={config.mixln_rho!r}: expected a number in [0, 1]")
    for name in ("beta1", "beta2", "dropout", "val_fraction", "min_lr_ratio"):
        value = getattr(config, name)
        if not 0.0 <= value < 1.0 and not (name == "min_lr_ratio" and value == 1.0):
            raise ConfigError(f"{name}={value!r}: expected a number in [0, 1)")
    if config.epochs is not None and not (math.isfinite(config.epochs) and config.epochs > 0):
        raise ConfigError(f"epochs={config.epochs!r}: expected a positive number or null (use steps)")
    if family.model_types is None and config.model_type is not None:
        raise ConfigError(f"model_type={config.model_type!r}: model={config.model!r} has no model types")
    if family.model_types is not None and config.model_type is None:
        choices = f" (one of {', '.join(family.model_types)})" if family.model_types else ""
        raise ConfigError(f"model={config.model!r} needs a model_type{choices}",
                          cli=f"model {config.model} needs a MODEL_TYPE: resnorm train {config.model} "
                              f"MODEL_TYPE ...{choices}")
    if family.model_types and config.model_type not in family.model_types:
        raise ConfigError(f"model_type={config.model_type!r}: model={config.model!r} needs one of "
                          f"{', '.join(family.model_types)}",
                          cli=f"unknown MODEL_TYPE {config.model_type!r} for model {config.model}; "
                              f"supported: {', '.join(family.model_types)}")
    if family.task == "text" and config.data in IMAGE_DATASETS:
        raise ConfigError(f"data={config.data!r} is an image dataset; {config.model} needs 'stdlib' or a "
                          "text file path")
    if family.task == "image" and config.data in TEXT_DATASETS:
        raise ConfigError(f"data={config.data!r} is a text corpus; model={config.model!r} needs 'mnist5k', "
                          "'digits' or an MNIST/Fashion-MNIST/CIFAR-10 folder")
    if family.check is not None:
        family.check(config)


def _matches(value: Any, tp: Any) -> bool:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NULL = ("none", "null", "~", "")


def parse_value(key: str, text: str) -> Any:
    """Parse an override's string ``text`` by the type of field ``key``."""
    types_ = _field_types()
    if key not in types_:
        raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(field_names())}")
    tp = types_[key]
    options = _options(tp)
    lowered = text.strip().lower()
    if type(None) in options and lowered in _NULL:
        return None
    for option in options:
        if option is bool:
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
        elif option is int:
            try:
                return int(text.replace("_", ""))
            except ValueError:
                try:  # accept 1e3-style integers written as floats
                    as_float = float(text)
                except ValueError:
                    continue
                if as_float.is_integer():
                    return int(as_float)
        elif option is float:
            try:
                return float(text)
            except ValueError:
                continue
        elif option is str:
            return text
    raise ConfigError(f"{key}={text!r}: expected {_type_name(tp)}")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: typed value}`` (later ones win); bad items are ``ConfigError``."""
    values: dict[str, Any] = {}
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value; valid keys: {', '.join(field_names())}")
        key, text = item.split("=", 1)
        key = key.strip().replace("-", "_")
        name = KEY_ALIASES.get(key, key)
        value = parse_value(name, text)
        if name != key and name in values and values[name] != value:
            raise ConfigError(f"{name}={values[name]!r} and {key}={value!r} set the same key {name!r} to "
                              "different values")
        values[name] = value
    return values


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``values`` updated with ``key=value`` strings (later ones win)."""
    return {**values, **parse_overrides(list(overrides))}


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """A ``TrainConfig`` from a mapping; unknown keys are a ``ConfigError`` listing the valid ones."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a mapping of key: value, got {type(values).__name__}")
    values = canonical_keys(values)
    names = field_names()
    unknown = sorted(set(values) - set(names), key=str)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(map(repr, unknown))}; "
                          f"valid keys: {', '.join(names)}")
    coerced = dict(values)
    types_ = _field_types()
    for key, value in values.items():  # YAML reads 1e-3 as a string and 3 as int for a float field
        if isinstance(value, str) and not _matches(value, types_[key]):
            coerced[key] = parse_value(key, value)
        elif isinstance(value, int) and not isinstance(value, bool) and float in _options(types_[key]):
            coerced[key] = float(value)
    return TrainConfig(**coerced)


def _options(tp: Any) -> tuple[Any, ...]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return typing.get_args(tp)
    return (tp,)


def config_for(model: str, **fields: Any) -> TrainConfig:
    """The model family's default recipe (module docstring), then ``fields``."""
    family = registry.get(model)
    return from_dict({**family.defaults, "model": model, **fields})


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # an unhashable key: the base class says what is wrong with it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping with string keys, each once; a ``ConfigError`` naming the
    file when it is missing, not UTF-8 text, not YAML, or not such a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML file (not UTF-8 text)") from None
    try:
        loaded = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"{path}: not valid YAML{where} ({problem})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of key: value, got {type(loaded).__name__}")
    odd = [k for k in loaded if not isinstance(k, str)]
    if odd:
        raise ConfigError(f"{path}: the key {odd[0]!r} is not a setting's name (expected name: value)")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                model: str | None = None) -> TrainConfig:
    """YAML file (optional) then ``key=value`` overrides. The YAML's ``model`` (or an override's) picks the
    family's defaults of ``config_for``; keys given explicitly always win. ``model`` (the command line's
    MODEL) must agree with a ``model`` the file or the overrides give."""
    values = canonical_keys(read_yaml_mapping(path)) if path is not None else {}
    from_file = values.get("model")
    values = apply_overrides(values, list(overrides or []))
    if model is not None:
        given = values.get("model", model)
        if given != model:
            source = f"{path} says" if from_file == given else "the settings say"
            raise ConfigError(f"model={given!r} conflicts with model={model!r}",
                              cli=f"{source} model={given!r} but MODEL is {model!r}; give one of them")
        values["model"] = model
    name = values.get("model", TrainConfig.model)
    if not isinstance(name, str):
        raise ConfigError(f"model={name!r}: expected one of {', '.join(registry.names())}")
    registry.get(name)
    return config_for(name, **{k: v for k, v in values.items() if k != "model"})


def resume_config(saved: TrainConfig, changes: dict[str, Any] | None = None) -> TrainConfig:
    """The config a resumed run continues with: ``saved`` (the run's own) with ``changes`` applied, which
    may only touch ``MUTABLE_ON_RESUME`` fields (or repeat a saved value)."""
    changes = dict(changes or {})
    current = saved.to_dict()
    unknown = sorted(set(changes) - set(current))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(map(repr, unknown))}; "
                          f"valid keys: {', '.join(field_names())}")
    probe = from_dict({**current, **changes})  # parses and validates the values
    fixed = [f"{k}: {current[k]!r} -> {getattr(probe, k)!r}" for k in changes
             if k not in MUTABLE_ON_RESUME and getattr(probe, k) != current[k]]
    if fixed:
        raise ConfigError(
            f"cannot resume with {'; '.join(fixed)}: these settings define what the run trains. A resumed "
            f"run may change only {', '.join(MUTABLE_ON_RESUME)}; start a new run folder to train "
            "something else")
    return probe


def check_resume_compatible(saved: dict[str, Any], config: TrainConfig) -> None:
    """``config`` may continue a run saved with ``saved`` (a config dict) when they differ only in
    ``MUTABLE_ON_RESUME`` fields; a ``ConfigError`` listing the differences otherwise."""
    current = config.to_dict()
    fixed = [f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in current
             if k not in MUTABLE_ON_RESUME and k in saved and saved[k] != current[k]]
    if fixed:
        raise ConfigError(
            f"cannot resume: these settings differ from the run's own ({'; '.join(fixed)}); they define what "
            f"is trained (a resumed run may change only {', '.join(MUTABLE_ON_RESUME)}). Start a new run "
            "folder or pass overwrite=True",
            cli=f"cannot resume: these settings differ from the run's own ({'; '.join(fixed)}); they define "
                f"what is trained (a resumed run may change only {', '.join(MUTABLE_ON_RESUME)}). Start a "
                "new run folder or give --overwrite")


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write ``config`` as YAML to the file ``path`` (atomically, with the umask's permissions)."""
    atomic_write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), path)


def _augmentation(config: TrainConfig) -> str:
    """What augmentation the image data gets: the 4-px crop always, horizontal flips only on CIFAR-10
    (mirror-symmetric); digits (the bundled sets, an MNIST/Fashion-MNIST IDX folder) are never flipped."""
    if not config.augment:
        return "no augmentation"
    from resnorm.data import EMBEDDED_IMAGE_DATASETS, is_idx_folder, resolve_path

    if config.data in EMBEDDED_IMAGE_DATASETS or is_idx_folder(resolve_path(config.data, config.data_root)):
        return "augment: 4-px crop, no flips (digits)"
    return "augment: 4-px crop (+ horizontal flips on CIFAR-10)"


def recipe_summary(config: TrainConfig) -> str:
    """The training recipe of ``config`` in one line (what a study prints before it starts)."""
    c = config
    if c.optimizer == "sgd":
        opt = f"SGD lr {c.lr:g}, momentum {c.momentum:g}"
    else:
        opt = f"{'AdamW' if c.optimizer == 'adamw' else 'Adam'} lr {c.lr:g}, betas ({c.beta1:g}, {c.beta2:g})"
    opt += f", weight decay {c.weight_decay:g}"
    schedule = {"cosine": f"cosine to {c.min_lr_ratio:g}x", "step": "/10 at 50% and 75%",
                "constant": "constant"}[c.schedule]
    parts = [opt, f"{schedule} schedule", f"warm-up {c.warmup_steps}" if c.warmup_steps else "no warm-up",
             f"grad clip {c.grad_clip:g}" if c.grad_clip else "no grad clip", f"batch {c.batch_size}",
             f"{c.epochs:g} epochs" if c.epochs is not None else f"{c.steps} steps"]
    family = registry.get(c.model)
    if family.task == "text":
        parts.append(f"d_model {c.d_model}, {c.n_head} heads, block {c.block_size}, dropout {c.dropout:g}")
    if c.model in OPTION_MODELS["init"]:
        parts.append(f"init {c.init}")
    if c.model_type is not None:
        parts.append(f"model_type {c.model_type}")
    elif family.layout == "flat":
        parts.append(f"width {c.width}")
    if family.task == "image":
        parts.append(_augmentation(c))
    parts.append(f"data {c.data}, seed {c.seed}")
    return "; ".join(parts)


__all__ = [
    "TrainConfig", "ConfigError", "load_config", "config_for", "save_config", "from_dict", "apply_overrides",
    "parse_overrides", "parse_value", "field_names", "validate", "resume_config", "check_resume_compatible",
    "recipe_summary", "read_yaml_mapping", "canonical_keys", "KEY_ALIASES", "MUTABLE_ON_RESUME",
    "OPTIMIZERS", "SCHEDULES", "DEVICES", "AMP_MODES",
]

"""The Hugging Face family ``hf``: the lab on real architectures (``resnorm train hf MODEL_TYPE``).

A run of ``hf`` trains a randomly initialized ``transformers`` causal LM of one supported family
(``model_type``: ``llama``, ``gemma2``, ``gpt2``, ... — ``SUPPORTED_MODEL_TYPES``), built from the
run's sizes with no download (``resnorm.integrations.transformers.causal_lm_from_config``): ``n_layer``
decoder layers, ``n_head`` query heads and ``n_kv_head`` key/value heads (default ``n_head``),
width ``d_model``, MLP width ``4 * d_model``, context ``block_size``, every dropout of the family at
``dropout``, the vocabulary of the data (characters, as for ``gpt``), eager attention (so that the
probes read each layer's attention probabilities).

``resnorm=true`` (the default: this is resnorm's lab) patches the model with ``apply_resnorm``: every
norm becomes resnorm's, and with ``fused=true`` (default) every residual add a norm reads next is fused
into it; ``resnorm=false`` trains the model's own ``transformers`` code, the same numbers up to
rounding (so comparing the two is about speed and memory: ``resnorm compare --model hf:llama``).

The model is wrapped (``resnorm.lab.hf_model.HFCausalLM``) so that the trainer sees what it sees in
every family: ``forward(idx) -> logits`` and ``blocks`` (the decoder layers; the probes materialize a
fused layer's ``ResidualStream``).

This module registers the family and imports neither torch nor ``transformers``: the builder is
imported on the first build, and it needs the ``transformers`` extra.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import TYPE_CHECKING

from resnorm.integrations.hf_common import SUPPORTED_MODEL_TYPES as MODEL_TYPES
from resnorm.lab.errors import ConfigError
from resnorm.lab.registry import ModelFamily, NamedDesign, StudyDefaults, lazy_builder, register

if TYPE_CHECKING:
    from resnorm.lab.config import TrainConfig

__all__ = ["MODEL_TYPES", "DESIGNS", "EXTRA", "check_available"]

EXTRA = 'pip install "resnorm[transformers]"'

DESIGNS = (
    NamedDesign("hf", {"resnorm": False}, "the model's own transformers code (resnorm=false)"),
    NamedDesign("hf+resnorm", {"resnorm": True, "fused": True},
                "apply_resnorm: resnorm's norms, every residual add fused into the norm after it"),
    NamedDesign("hf+resnorm-unfused", {"resnorm": True, "fused": False},
                "apply_resnorm(fuse_residual=False): resnorm's norms, the adds left as they are"),
)

# general keys that other families read and hf cannot honour (the model type decides them)
_NOT_HF = ("norm", "placement", "bias")


def check_available() -> None:
    """``ConfigError`` naming the extra when ``transformers`` is not installed."""
    if importlib.util.find_spec("transformers") is None:
        raise ConfigError(f"model hf needs the transformers package, which is not installed: {EXTRA}")


def _check(config: TrainConfig) -> None:
    from resnorm.lab.config import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for key in _NOT_HF:
        if getattr(config, key) != defaults[key]:
            raise ConfigError(f"{key}={getattr(config, key)!r} does not apply to model hf: its norms, their "
                              f"places and its biases are those of model_type={config.model_type!r}; "
                              "resnorm=false trains the model's own code")
    if config.d_model % config.n_head:
        raise ConfigError(f"d_model={config.d_model} must be divisible by n_head={config.n_head}")
    if config.n_kv_head is not None:
        if config.n_kv_head < 1 or config.n_head % config.n_kv_head:
            raise ConfigError(f"n_kv_head={config.n_kv_head!r}: expected a positive divisor of "
                              f"n_head={config.n_head}")
        if config.model_type == "gpt2" and config.n_kv_head != config.n_head:
            raise ConfigError("n_kv_head: gpt2 has no grouped-query attention (leave n_kv_head unset)")


register(ModelFamily(
    name="hf", task="text", build=lazy_builder("resnorm.lab.hf_model", "build_hf"),
    model_types=MODEL_TYPES, depth_field="n_layer", depth_label="decoder layers, n_layer",
    summary="a Hugging Face causal LM (llama, gemma2, gpt2, ...) from sizes, with resnorm (resnorm=false: "
            "without)",
    defaults=dict(model_type="llama", data="stdlib", n_layer=4, n_head=4, d_model=128, block_size=64,
                  dropout=0.0, optimizer="adamw", lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.1,
                  batch_size=12, steps=2000, warmup_steps=100, schedule="cosine", min_lr_ratio=0.1,
                  grad_clip=1.0, eval_every=250, eval_batches=20),
    recipe_source="the gpt family's recipe (nanoGPT's shakespeare_char config, CPU variant), so that an "
                  "hf run and a gpt run of the same size compare",
    designs=DESIGNS, options=("resnorm", "fused", "n_kv_head"), check=_check, available=check_available,
    study=StudyDefaults(
        alias="hf", designs=("hf", "hf+resnorm"), depths=(2, 4), data="stdlib", steps=100,
        recipe=dict(d_model=64, n_head=4, block_size=64, batch_size=16, optimizer="adamw", lr=2e-3,
                    beta1=0.9, beta2=0.99, weight_decay=0.0, schedule="constant", warmup_steps=0,
                    dropout=0.0, grad_clip=1.0),
        note="the designs compute the same numbers: a speed and memory study. On a CPU add_norm runs "
             "its PyTorch path (the fused kernels need a GPU); raise --steps for steadier times",
        columns=("design", "depth", "verdict", "train_loss", "val_loss", "step_time_s", "peak_memory_mib",
                 "steps", "wall_s"),
        same_numbers_rtol=1e-5),
))

"""The named studies by name (``resnorm study NAME``): ``STUDIES``, ``names()``, ``get(name)``.

Each study is a ``resnorm.lab.studies.base.Study`` subclass in its own module, imported on first use.
"""

from __future__ import annotations

import importlib

from resnorm.lab.errors import ConfigError
from resnorm.lab.studies.base import Study

__all__ = ["STUDIES", "names", "get"]

# name -> (module, class); imported on first use
STUDIES: dict[str, tuple[str, str]] = {
    "he2016": ("resnorm.lab.studies.he2016", "He2016"),
    "xiong2020": ("resnorm.lab.studies.xiong2020", "Xiong2020"),
    "deepnet2022": ("resnorm.lab.studies.deepnet2022", "DeepNet2022"),
    "mhc2026": ("resnorm.lab.studies.mhc2026", "MHC2026"),
    "default-compare": ("resnorm.lab.studies.default_compare", "DefaultCompare"),
}


def names() -> tuple[str, ...]:
    return tuple(STUDIES)


def get(name: str) -> Study:
    """The study called ``name``; a ``ConfigError`` listing the valid names otherwise."""
    if name not in STUDIES:
        raise ConfigError(f"unknown study {name!r}; valid studies: {', '.join(STUDIES)}")
    module, cls = STUDIES[name]
    return getattr(importlib.import_module(module), cls)()

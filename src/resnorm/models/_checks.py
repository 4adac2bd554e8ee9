"""Argument checks shared by the model constructors."""

from __future__ import annotations

import numbers


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; TypeError / ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value}")
    return int(value)

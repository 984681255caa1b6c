"""Checks for settings where they enter (configs, the command line): one line that says what is wrong.

A NaN or infinite learning rate or alpha trains to NaN weights without a word, and a NaN even passes ``x > 0``;
so every number a config takes is checked here, once, for the range it means."""

from __future__ import annotations

import math


def positive_number(name: str, value, meaning: str = "") -> float:
    """``value`` if it is a finite number above zero, else a ValueError naming ``name`` and what it means."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number above 0{meaning}, got {value!r}")
    return value


def whole_number(name: str, value, minimum: int = 1) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return value


def fraction(name: str, value) -> float:
    """``value`` if it is a finite number in [0, 1), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return value

"""Field checks for the model's frozen config dataclasses (device, crossbar, circuit,
converters). Each raises ValueError("<Class>.<field> must be <what is accepted>; got <value>")
and stores the normalized value (TOML gives ints for round numbers)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def real(obj: Any, name: str, *, allow_inf: bool = False) -> float:
    """The field as a float; bools and NaN refused, inf only with ``allow_inf``."""
    value = getattr(obj, name)
    where = f"{type(obj).__name__}.{name}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where} must be a number; got {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        accepted = "a number or inf" if allow_inf else "finite"
        raise ValueError(f"{where} must be {accepted}; got {getattr(obj, name)!r}")
    object.__setattr__(obj, name, value)
    return value


def positive(obj: Any, name: str, *, allow_inf: bool = False) -> float:
    value = real(obj, name, allow_inf=allow_inf)
    if value <= 0.0:
        raise ValueError(f"{type(obj).__name__}.{name} must be > 0; got {value!r}")
    return value


def non_negative(obj: Any, name: str) -> float:
    value = real(obj, name)
    if value < 0.0:
        raise ValueError(f"{type(obj).__name__}.{name} must be >= 0; got {value!r}")
    return value


def below_one(obj: Any, name: str) -> float:
    value = real(obj, name)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{type(obj).__name__}.{name} must be in [0, 1); got {value!r}")
    return value


def probability(obj: Any, name: str) -> float:
    value = real(obj, name)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{type(obj).__name__}.{name} must be in [0, 1]; got {value!r}")
    return value


def integer(obj: Any, name: str, minimum: int) -> int:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{type(obj).__name__}.{name} must be an integer >= {minimum}; got {value!r}")
    object.__setattr__(obj, name, int(value))
    return int(value)


def boolean(obj: Any, name: str) -> bool:
    value = getattr(obj, name)
    if not isinstance(value, bool):
        raise ValueError(f"{type(obj).__name__}.{name} must be true or false; got {value!r}")
    return value

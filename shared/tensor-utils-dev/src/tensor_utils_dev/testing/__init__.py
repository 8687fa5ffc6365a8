"""Test helpers: tolerances, float64-reference comparison, NaN poisoning, hypothesis strategies.

``strategies`` and ``profiles`` need hypothesis (``tensor-utils[testing]``); import them directly.
"""

from .poison import poison_allocations
from .tolerances import (
    TOLERANCES,
    Tolerance,
    assert_close,
    assert_matches_float64,
    nan_like,
    poisoned_empty,
    tolerance,
    ulp,
)

__all__ = [
    "TOLERANCES",
    "Tolerance",
    "assert_close",
    "assert_matches_float64",
    "nan_like",
    "poison_allocations",
    "poisoned_empty",
    "tolerance",
    "ulp",
]

"""Checks of values that callers of the Python API hand over, shared by every module that
takes them."""
from __future__ import annotations

from numbers import Integral, Real
from typing import Any


def is_whole_number(value: Any) -> bool:
    """Whether ``value`` is an integer (Python's or numpy's) and not a bool: ``True`` would
    otherwise pass as 1 where a count, a rate or a channel is asked for."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real_number(value: Any) -> bool:
    """Whether ``value`` is a real number (an int, a float or a numpy number) and not a
    bool."""
    return isinstance(value, Real) and not isinstance(value, bool)

"""Argument checks shared by the whole package (keras-free).

Each check returns the value (normalised: ``int`` for NumPy integers) or
raises a `ValueError` that names the argument, says what is allowed and
shows what was received, in Keras' own style::

    `growth_rate` (k) must be an integer >= 1, e.g. 12 or 32. Received: growth_rate=0

Booleans are rejected where numbers are expected: ``True`` is an `int` in
Python, but ``growth_rate=True`` is always a mistake.

Example:

>>> from keras_densenet.core import checks
>>> checks.integer("epochs", 3)
3
>>> checks.integer("epochs", 0)
Traceback (most recent call last):
...
ValueError: `epochs` must be an integer >= 1. Received: epochs=0
"""

from __future__ import annotations

import numbers
from typing import Iterable, Optional


def _fail(name: str, about: str, allowed: str, value, hint: str = "") -> ValueError:
    hint = f", {hint}" if hint else ""
    return ValueError(f"`{name}`{about} must be {allowed}{hint}. Received: {name}={value!r}")


def is_integer(value) -> bool:
    """Whether `value` is an integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """Whether `value` is a real number (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(
    name: str,
    value,
    *,
    minimum: int = 1,
    maximum: Optional[int] = None,
    about: str = "",
    hint: str = "",
) -> int:
    """`value` as an int in ``[minimum, maximum]``.

    Args:
        name: the argument's name, for the message.
        value: what was passed.
        minimum: smallest allowed value.
        maximum: largest allowed value (``None``: no limit).
        about: text after the name, e.g. ``" (k)"``.
        hint: text after the rule, e.g. ``"e.g. 12 or 32"``.
    """
    if not is_integer(value) or value < minimum or (maximum is not None and value > maximum):
        allowed = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
        raise _fail(name, about, allowed, value, hint)
    return int(value)


def number(
    name: str,
    value,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
    about: str = "",
    hint: str = "",
) -> float:
    """`value` as a float within the bounds (open or closed at each end).

    Example:

    >>> number("compression", 1.5, low=0, high=1, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: `compression` must be a number in (0, 1]. Received: compression=1.5
    """
    ok = is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            allowed = f"a number {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            allowed = f"a number {'<' if high_open else '<='} {high:g}"
        else:
            allowed = "a number"
        raise _fail(name, about, allowed, value, hint)
    return float(value)


def positive(name: str, value, *, about: str = "", hint: str = "") -> float:
    """`value` as a float > 0."""
    if not (is_number(value) and value > 0):
        raise _fail(name, about, "a positive number", value, hint)
    return float(value)


def boolean(name: str, value) -> bool:
    """`value` itself, which must be ``True`` or ``False`` (not 0, 1 or "yes")."""
    if not isinstance(value, bool):
        raise _fail(name, "", "True or False", value)
    return value


def one_of(name: str, value, choices: Iterable, *, about: str = ""):
    """`value`, which must be one of `choices` (listed in the message).

    Example:

    >>> one_of("pooling", "mean", (None, "avg", "max"))
    Traceback (most recent call last):
    ...
    ValueError: `pooling` must be one of None, 'avg', 'max'. Received: pooling='mean'
    """
    choices = tuple(choices)
    if value not in choices:
        raise _fail(name, about, "one of " + ", ".join(repr(c) for c in choices), value)
    return value

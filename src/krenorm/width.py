"""The width N of a network, including the infinite-width limit, as one type.

A width is a ``float``: a finite positive number of hidden units (FC) or channels (CNN/LCN), or
``math.inf`` (``INFINITE_WIDTH``) for the infinite-width (NNGP) limit, where α = P/N = 0 and the
order parameters sit at their prior values (docs/math/theory.md §3). No flag, no string, no dummy
width: code asks ``is_infinite(width)``.

JSON cannot carry ``inf``; tables and stores write the string ``"inf"`` (``width_to_json``) and
read it back with ``width_from_json``, so a width survives a round trip exactly.
"""

from __future__ import annotations

import math

#: The infinite-width limit N → ∞.
INFINITE_WIDTH: float = math.inf


def is_infinite(width: float) -> bool:
    """True for the infinite-width limit."""
    return math.isinf(width) and width > 0


def check_width(width: object, *, name: str = "width", allow_infinite: bool = True) -> float:
    """A width as a float: finite and positive, or ``math.inf`` when ``allow_infinite``.

    Raises ValueError naming the argument and the fix otherwise (booleans, strings, NaN,
    non-positive numbers)."""
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        raise ValueError(f"{name} must be a positive number (or math.inf for infinite width), "
                         f"got {width!r}.")
    value = float(width)
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {width!r}.")
    if math.isinf(value) and not allow_infinite:
        raise ValueError(f"{name} must be finite here (a sampled network has a finite number "
                         f"of units), got {width!r}.")
    return value


def alpha(n_train: int, width: float) -> float:
    """α = P/N, the load of the proportional limit (0 at infinite width)."""
    return 0.0 if is_infinite(width) else n_train / width


def width_to_json(width: float) -> float | str:
    """A width as a JSON value: the number, or the string "inf" for infinite width."""
    return "inf" if is_infinite(width) else float(width)


def width_from_json(value: float | int | str) -> float:
    """Inverse of `width_to_json`."""
    if value == "inf":
        return INFINITE_WIDTH
    return check_width(value)


def width_label(width: float) -> str:
    """A short label for tables and figures: "∞" or the number in %g form."""
    return "∞" if is_infinite(width) else f"{width:g}"

"""Boundary checks shared by the public entry points; each raises a ValueError saying what to
change.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Refuse NaN or infinite entries."""
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite entries; clean the input first.")


def check_positive(name: str, value: float) -> float:
    """Refuse non-positive or non-finite scalars (T, λ0, λ1, N ...)."""
    if value is None or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}.")
    return float(value)


def check_images(name: str, x: torch.Tensor) -> torch.Tensor:
    """Images must be (P, c, H, W) and finite."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 4:
        raise ValueError(
            f"{name} must have shape (P, c, H, W), got {tuple(x.shape)}; "
            "add a channel axis with x[:, None] for grayscale images."
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty.")
    check_finite(name, x)
    return x


def check_vectors(name: str, x: torch.Tensor) -> torch.Tensor:
    """Vector inputs must be (P, D) (images are flattened by the caller) and finite."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (P, D), got {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty.")
    check_finite(name, x)
    return x


def _whole_number(value: object) -> int | None:
    """An int, or a numpy/torch integer scalar (numpy grids in GridSearchCV), as an int; None for
    anything else — bool included, so mask=True is refused rather than read as 1."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, numbers.Integral):  # numpy.int64 and friends register here
        return int(value)
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        return int(value)
    return None


def as_pair(name: str, value: int | tuple[int, int], minimum: int = 1) -> tuple[int, int]:
    """Normalise an int-or-pair hyper-parameter (mask, stride, padding) to a pair of ints.

    Numpy and torch integer scalars count as ints; booleans and floats are refused."""
    single = _whole_number(value)
    if single is not None:
        pair: tuple = (single, single)
    elif isinstance(value, (tuple, list)) or type(value).__name__ == "ndarray":
        pair = tuple(_whole_number(v) for v in value)  # type: ignore[union-attr]
    else:
        pair = ()
    if len(pair) != 2 or any(v is None for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints such as 3 or (3, 3), got "
                         f"{value!r}.")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}.")
    return pair


def check_targets(name: str, y: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Targets must be a finite tensor of shape (P,) or (P, D) with P = n_samples."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(y).__name__}.")
    check_finite(name, y)
    if y.ndim not in (1, 2) or y.shape[0] != n_samples:
        raise ValueError(f"{name}: targets must have shape ({n_samples},) or ({n_samples}, D), "
                         f"got {tuple(y.shape)}.")
    return y


@contextmanager
def one_line_value_errors() -> Iterator[None]:
    """Shorten multi-line ValueErrors (scikit-learn's validation dumps the array after "Complex
    data not supported" and adds a paragraph on imputers after "Input X contains NaN") to their
    first line plus what to do; one-line messages pass through unchanged."""
    try:
        yield
    except ValueError as error:
        lines = str(error).strip().splitlines()
        if len(lines) <= 1:
            raise
        # scikit-learn's own advice lines are kept (it checks for "Reshape your data").
        advice = [line.strip() for line in lines[1:] if line.strip().startswith("Reshape")]
        if advice:
            raise type(error)(" ".join([lines[0].strip(), *advice])) from error
        first = lines[0].rstrip(".")
        if "NaN" in first or "infinity" in first:
            first += "; remove or impute those entries first (e.g. SimpleImputer in a Pipeline)."
        elif "Complex" in first:
            first += "; pass real-valued X (e.g. np.real(X) or np.abs(X))."
        else:
            first += "."
        raise type(error)(first) from error

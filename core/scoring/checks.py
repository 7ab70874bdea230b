"""Checks of the per-row arrays the scoring building blocks take (calls, calibration,
baselines): each returns a flat numpy array or raises ValueError saying what is wrong."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nn.contract import ACTIONS


def nonempty(name: str, n: int) -> None:
    if n == 0:
        raise ValueError(f"{name} is empty: there are no rows to evaluate")


def actions(values: Sequence[str] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=object).reshape(-1)
    nonempty("actions", len(array))
    bad = sorted({str(a) for a in array if a not in ACTIONS})
    if bad:
        raise ValueError(f"actions must be among {', '.join(ACTIONS)}, got {', '.join(bad)}")
    return array


def floats(name: str, values: Any, n: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(array) != n:
        raise ValueError(f"{name} has {len(array)} values for {n} rows")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite numbers")
    return array


def confidences(values: Any, n: int) -> np.ndarray:
    array = floats("confidences", values, n)
    if np.any((array < 0) | (array > 1)):
        raise ValueError("confidences must be within [0, 1]")
    return array


def correct(values: Any) -> np.ndarray:
    array = np.asarray(values).reshape(-1)
    nonempty("correct", len(array))
    if not np.all(np.isin(array, (0, 1))):  # bools, 0/1 ints and 0.0/1.0 floats pass
        raise ValueError("correct must be booleans (or 0/1)")
    return array.astype(bool)


def positive(name: str, values: Any, n: int) -> np.ndarray:
    array = floats(name, values, n)
    if np.any(array <= 0):
        raise ValueError(f"{name} must be > 0")
    return array


def count(name: str, value: Any) -> int:
    """An integer >= 1 (a window, a number of bins or resamples); bools are refused."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)

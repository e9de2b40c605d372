"""Typed reads of single DataFrame cells: pandas types a row's field as any scalar."""

from __future__ import annotations

import math
from datetime import date
from typing import SupportsFloat

import numpy as np
import pandas as pd

__all__ = ["number", "optional_number", "timestamp"]


def number(value: object) -> float:
    """A numeric cell as a float; anything else (a missing cell too) is a TypeError.

    >>> number(np.float32(0.5)), number(3)
    (0.5, 3.0)
    """
    if not isinstance(value, SupportsFloat):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def optional_number(value: object) -> float | None:
    """A numeric cell as a float, or None where it is missing (NULL reads back as None or NaN).

    >>> optional_number(float("nan")) is None, optional_number(None), optional_number(2)
    (True, None, 2.0)
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    result = number(value)
    return None if math.isnan(result) else result


def timestamp(value: object) -> pd.Timestamp:
    """A date or time cell (a ``period``) as a Timestamp.

    >>> timestamp(np.datetime64("2024-01-01")).date().isoformat()
    '2024-01-01'
    """
    if not isinstance(value, date | str | np.datetime64):
        raise TypeError(f"expected a date or time, got {value!r}")
    return pd.Timestamp(value)

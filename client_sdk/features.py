"""Diary -> model inputs for next-day mood prediction (the one place features are defined).

A diary is first reduced to a ``DailySeries``: one value per calendar day (the entry's
own local day, ``entry.time.date()``) of mean mood, sleep, steps and the number of
distinct activities, NaN where nothing was logged. For a target day ``t`` the features
are, for each of the ``window`` days before ``t`` (oldest first):

- ``mood``: (mood - 3) / 2, in -1..1;
- ``sleep``: (hours - 7.5) / 2.5, clipped to -3..3;
- ``steps``: steps / 10,000, clipped to 0..5;
- ``activities``: distinct activities / 5, clipped to 0..2;
- ``missing``: 1.0 when no mood was logged that day, else 0.0;

then the target day's weekday one-hot (Monday first) and the person's mean mood so far
(normalized as mood). A missing value is filled with the person's own mean of that
variable over the days *before t* (a neutral default when there are none: mood 3, sleep
7.5 h, zero steps and activities), so no feature ever depends on day ``t`` or later.
``y`` is the raw mean mood (1..5) of day ``t``.

>>> FEATURE_DIM, feature_names()[:2], feature_names()[-1]
(43, ['mood_lag7', 'mood_lag6'], 'person_mean_mood')
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt

from client_sdk.entry import Entry
from client_sdk.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_WINDOW",
    "FEATURE_DIM",
    "DailySeries",
    "daily_series",
    "feature_dim",
    "feature_names",
    "latest_features",
    "make_examples",
]

DEFAULT_WINDOW: Final = 7
_PER_DAY: Final = ("mood", "sleep", "steps", "activities", "missing")
_DEFAULTS: Final = {"mood": 3.0, "sleep": 7.5, "steps": 0.0, "activities": 0.0}

FloatArray = npt.NDArray[np.float64]


def feature_dim(window: int = DEFAULT_WINDOW) -> int:
    """Length of one feature vector: five per past day, seven weekdays, one mean."""
    return len(_PER_DAY) * window + 7 + 1


FEATURE_DIM: Final = feature_dim(DEFAULT_WINDOW)


def feature_names(window: int = DEFAULT_WINDOW) -> list[str]:
    """Column names of the feature matrix, in order."""
    lags = [f"{name}_lag{lag}" for name in _PER_DAY for lag in range(window, 0, -1)]
    weekdays = [f"weekday_{day}" for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")]
    return [*lags, *weekdays, "person_mean_mood"]


@dataclass(frozen=True, slots=True)
class DailySeries:
    """One person's diary as daily arrays from ``start``; NaN marks a day with no value.

    ``activities`` is the count of distinct activities, NaN on days with no entry.
    """

    start: date
    mood: FloatArray
    sleep_hours: FloatArray
    steps: FloatArray
    activities: FloatArray

    def __post_init__(self) -> None:
        lengths = {len(a) for a in (self.mood, self.sleep_hours, self.steps, self.activities)}
        if len(lengths) != 1:
            raise InvalidArgumentError("DailySeries arrays must have the same length")

    def __len__(self) -> int:
        return len(self.mood)

    @property
    def logged(self) -> npt.NDArray[np.bool_]:
        """True on days with at least one mood entry."""
        return ~np.isnan(self.mood)

    def day(self, index: int) -> date:
        """The calendar day at ``index``."""
        return self.start + timedelta(days=index)


def daily_series(entries: Sequence[Entry]) -> DailySeries:
    """Aggregate entries per local day: mean mood and sleep, max steps, distinct activities.

    The series runs from the first to the last day with an entry; an empty diary gives
    an empty series.
    """
    by_day: dict[date, list[Entry]] = defaultdict(list)
    for entry in entries:
        by_day[entry.time.date()].append(entry)
    if not by_day:
        empty = np.empty(0, dtype=np.float64)
        return DailySeries(date(1970, 1, 1), empty, empty, empty, empty)
    start = min(by_day)
    length = (max(by_day) - start).days + 1
    mood, sleep, steps, activities = (np.full(length, np.nan) for _ in range(4))
    for day, day_entries in by_day.items():
        i = (day - start).days
        mood[i] = np.mean([e.mood for e in day_entries])
        sleeps = [e.sleep_hours for e in day_entries if e.sleep_hours is not None]
        if sleeps:
            sleep[i] = np.mean(sleeps)
        counts = [e.steps for e in day_entries if e.steps is not None]
        if counts:  # step counts are daily totals: several entries repeat, not add
            steps[i] = max(counts)
        activities[i] = len({a.casefold() for e in day_entries for a in e.activities})
    return DailySeries(start, mood, sleep, steps, activities)


def _as_series(data: Sequence[Entry] | DailySeries) -> DailySeries:
    return data if isinstance(data, DailySeries) else daily_series(data)


def _means_before(values: FloatArray) -> FloatArray:
    """Element t (0..len) is the mean of the non-NaN values before t, NaN if none."""
    known = ~np.isnan(values)
    sums = np.concatenate(([0.0], np.cumsum(np.where(known, values, 0.0))))
    counts = np.concatenate(([0], np.cumsum(known)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _windows(
    values: FloatArray, targets: npt.NDArray[np.int64], window: int, default: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(raw windows, NaN-filled windows, fill value) for each target index."""
    padded = np.concatenate((np.full(window, np.nan), values.astype(np.float64)))
    # Row k holds days targets[k]-window .. targets[k]-1 (padded index t .. t+window-1).
    raw = np.lib.stride_tricks.sliding_window_view(padded, window)[targets]
    fill = _means_before(values)[targets]
    fill = np.where(np.isnan(fill), default, fill)
    return raw, np.where(np.isnan(raw), fill[:, None], raw), fill


def _features_at(
    series: DailySeries, targets: npt.NDArray[np.int64], window: int
) -> npt.NDArray[np.float32]:
    """Feature rows for target indices (0..len(series)), using days before each target."""
    mood_raw, mood, mood_fill = _windows(series.mood, targets, window, _DEFAULTS["mood"])
    blocks = [_normalize("mood", mood)]
    for name, values in (
        ("sleep", series.sleep_hours),
        ("steps", series.steps),
        ("activities", series.activities),
    ):
        blocks.append(_normalize(name, _windows(values, targets, window, _DEFAULTS[name])[1]))
    blocks.append(np.isnan(mood_raw).astype(np.float64))
    onehot = np.zeros((len(targets), 7))
    onehot[np.arange(len(targets)), (series.start.weekday() + targets) % 7] = 1.0
    blocks.extend((onehot, _normalize("mood", mood_fill)[:, None]))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def _normalize(name: str, values: FloatArray) -> FloatArray:
    if name == "mood":
        return (values - 3.0) / 2.0
    if name == "sleep":
        return np.clip((values - 7.5) / 2.5, -3.0, 3.0)
    if name == "steps":
        return np.clip(values / 10_000.0, 0.0, 5.0)
    return np.clip(values / 5.0, 0.0, 2.0)


def make_examples(
    data: Sequence[Entry] | DailySeries,
    *,
    window: int = DEFAULT_WINDOW,
    min_observed: int = 1,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Training pairs: ``X`` (n, feature_dim) float32 and ``y`` (n,) next-day mean mood.

    One example per logged day that has at least ``min_observed`` logged days among the
    ``window`` days before it.
    """
    if window < 1 or not 0 <= min_observed <= window:
        raise InvalidArgumentError("need window >= 1 and 0 <= min_observed <= window")
    series = _as_series(data)
    logged = series.logged
    counts = np.concatenate(([0], np.cumsum(logged)))
    index = np.arange(len(series))
    in_window = counts[index] - counts[np.maximum(index - window, 0)]
    targets = index[logged & (in_window >= min_observed) & (index >= 1)]
    if len(targets) == 0:
        return np.zeros((0, feature_dim(window)), np.float32), np.zeros(0, np.float32)
    return _features_at(series, targets, window), series.mood[targets].astype(np.float32)


def latest_features(
    data: Sequence[Entry] | DailySeries,
    *,
    window: int = DEFAULT_WINDOW,
    day: date | None = None,
) -> npt.NDArray[np.float32]:
    """The feature vector for predicting ``day``'s mood (default: the day after the last
    logged day), from the diary's days before it. Shape ``(feature_dim(window),)``.
    """
    if window < 1:
        raise InvalidArgumentError("window must be >= 1")
    series = _as_series(data)
    if len(series) == 0:
        if day is None:
            raise InvalidArgumentError("an empty diary needs an explicit day to predict")
        empty = np.empty(0)
        series = DailySeries(day, empty, empty, empty, empty)
    target = len(series) if day is None else (day - series.start).days
    if target < 0:
        raise InvalidArgumentError(f"{day} is before the diary's first day {series.start}")
    if target > len(series):  # days between the last entry and `day` are missing
        gap = np.full(target - len(series), np.nan)
        series = DailySeries(
            series.start,
            np.concatenate((series.mood, gap)),
            np.concatenate((series.sleep_hours, gap)),
            np.concatenate((series.steps, gap)),
            np.concatenate((series.activities, gap)),
        )
    row: npt.NDArray[np.float32] = _features_at(series, np.array([target], dtype=np.int64), window)[
        0
    ]
    return row

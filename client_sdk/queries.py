"""The federated queries: what each device sends for a week, its bounds and released cells.

For each query and ISO week a consenting device sends ONE vector computed from its own
diary, clamped to per-slot bounds and L2-clipped (through :mod:`privacy`) to the query's
``sensitivity``. The server sums the vectors of eligible devices (bounding them again,
since it never trusts a device), adds Gaussian noise of std ``sigma * sensitivity`` and
divides each cell's noisy value sum by its noisy count. Both sides read the specs from
here (the device must not import the server). The cohort grid is data: a deployment
names its own age bands and regions (:func:`standard_queries`), the defaults below.

Every query has L2 sensitivity sqrt(2): moods enter as ``(mood - 3) / 2`` in [-1, 1]
(the public centre 3 and scale 2 are added back on release), shares are in [0, 1], and
each device's count slots add up to at most 1. A day's mood is the mean of its entries
(:func:`~client_sdk.features.daily_series`); its level is that mean rounded half up.

=====================  ===================================================  ===========
query                  vector (per device, per week)                        L2 bound
=====================  ===================================================  ===========
``mood-distribution``  share of logged days at level 1..5 (sums to 1), then  sqrt(2)
                       a count slot 1                                       (6 slots)
``mood-by-cohort``     per cohort (age band x region): ((mean mood-3)/2,    sqrt(2)
                       1) in the device's own cohort, zeros elsewhere       (2 per cell)
``low-mood-share``     share of logged days at level <= 2, then count 1     sqrt(2)
``mood-by-sleep``      per sleep bin b: (w_b * (mean mood_b - 3)/2, w_b),   sqrt(2)
                       w_b = share of the week's (sleep, mood) days in b    (2 per bin)
=====================  ===================================================  ===========

A device with nothing logged that week sends zeros (it adds nothing, not even to the
counts). ``mood-by-sleep`` pairs a day's mood with the sleep of the night before it
(``Entry.sleep_hours``), i.e. next-day mood per sleep-duration bin; its weights make each
device count at most once across the bins.

>>> queries = standard_queries()
>>> [(q.name, q.dim, round(q.sensitivity, 4)) for q in queries][:2]
[('mood-distribution', 6, 1.4142), ('mood-by-cohort', 32, 1.4142)]
>>> import numpy as np
>>> mood = np.array([[5.0, 4.0, np.nan, 4.0, np.nan, np.nan, 2.0]])
>>> contribution = queries[0].contributions(mood=mood).round(2)
>>> contribution.tolist()
[[0.0, 0.25, 0.0, 0.5, 0.25, 1.0]]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from client_sdk.errors import InvalidArgumentError
from privacy import clip_factors

__all__ = [
    "DEFAULT_AGE_BANDS",
    "DEFAULT_REGIONS",
    "LOW_MOOD_MAX",
    "QUERY_NAMES",
    "SLEEP_BINS",
    "Cell",
    "Query",
    "analytics_clip_norm",
    "cohort_query",
    "iso_week_start",
    "queries_from_config",
    "queries_to_config",
    "standard_queries",
]

DEFAULT_AGE_BANDS: Final = ("18-29", "30-44", "45-64", "65+")
"""The default cohort grid's age bands (a deployment may name its own)."""
DEFAULT_REGIONS: Final = ("north", "south", "east", "west")
"""The default cohort grid's regions (a deployment may name its own)."""
LOW_MOOD_MAX: Final = 2
"""A day is a low-mood day when its level (rounded daily mean) is at most this."""

SLEEP_BINS: Final = (
    ("<6 h", 0.0, 6.0),
    ("6-7 h", 6.0, 7.0),
    ("7-8 h", 7.0, 8.0),
    ("8-9 h", 8.0, 9.0),
    (">=9 h", 9.0, math.inf),
)
"""(label, lower hours inclusive, upper hours exclusive) of the sleep-duration bins."""

QUERY_NAMES: Final = ("mood-distribution", "mood-by-cohort", "low-mood-share", "mood-by-sleep")

_SQRT2: Final = math.sqrt(2.0)
_MOOD_CENTRE: Final = 3.0
_MOOD_HALF_RANGE: Final = 2.0
_DAYS: Final = 7

Statistic = Literal["share", "mean"]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Cell:
    """One released figure: its labels and the slots holding its value sum and count."""

    labels: tuple[tuple[str, str], ...]
    value_slot: int
    count_slot: int

    @property
    def label(self) -> str:
        """The labels' values joined, e.g. ``"18-29 / north"``."""
        return " / ".join(value for _, value in self.labels)


@dataclass(frozen=True, slots=True)
class Query:
    """A federated query: vector layout, per-slot bounds, cells and L2 sensitivity.

    A released cell's value is ``value_offset + value_scale * noisy_sum / noisy_count``
    over its ``value_slot`` and ``count_slot``. ``sensitivity`` bounds the L2 norm of one
    device's vector after :meth:`bound`, so it is what the Gaussian noise is scaled to.
    """

    name: str
    title: str
    statistic: Statistic
    unit: str
    slots: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    cells: tuple[Cell, ...]
    sensitivity: float
    value_offset: float = 0.0
    value_scale: float = 1.0
    cohorts: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not len(self.slots) == len(self.lower) == len(self.upper):
            raise InvalidArgumentError(f"query {self.name}: slots and bounds differ in length")
        if not math.isfinite(self.sensitivity) or self.sensitivity <= 0:
            raise InvalidArgumentError(f"query {self.name}: sensitivity must be positive")

    @property
    def dim(self) -> int:
        """Length of one contribution vector."""
        return len(self.slots)

    def bound(self, vectors: npt.ArrayLike) -> FloatArray:
        """Bound contribution rows: non-finite rows become zeros, each slot is clamped to its
        bounds, then each row is L2-clipped to ``sensitivity`` (:func:`privacy.clip_factors`).

        Run by the device before sending and again by the server on what it receives.

        >>> q = standard_queries()[2]
        >>> q.bound([[9.0, 9.0], [np.nan, 1.0]]).round(6).tolist()
        [[1.0, 1.0], [0.0, 0.0]]
        """
        matrix = np.array(vectors, dtype=np.float64, ndmin=2)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise InvalidArgumentError(
                f"query {self.name} takes vectors of length {self.dim}, got shape {matrix.shape}"
            )
        finite = np.isfinite(matrix).all(axis=1, keepdims=True)
        matrix = np.where(finite, matrix, 0.0)
        matrix = np.clip(matrix, np.asarray(self.lower), np.asarray(self.upper))
        factors = clip_factors(np.linalg.norm(matrix, axis=1), max_norm=self.sensitivity)
        bounded: FloatArray = matrix * factors[:, None]
        return bounded

    def contributions(
        self,
        *,
        mood: npt.ArrayLike,
        sleep: npt.ArrayLike | None = None,
        cohort: npt.ArrayLike | None = None,
    ) -> FloatArray:
        """Bounded contribution rows of several devices for one week, vectorized.

        ``mood`` and ``sleep`` are (devices, 7) daily means, NaN where nothing was
        logged; ``cohort`` is each device's index into :attr:`cohorts` (-1: unknown).
        One row per device; the per-device path (:func:`device_contributions`) is this
        with one row, so simulations and real devices run the same code.
        """
        days = np.array(mood, dtype=np.float64, ndmin=2)
        if days.ndim != 2 or days.shape[1] != _DAYS:
            raise InvalidArgumentError(f"mood must have shape (devices, 7), got {days.shape}")
        nights = (
            np.full_like(days, np.nan)
            if sleep is None
            else np.array(sleep, dtype=np.float64, ndmin=2)
        )
        if nights.shape != days.shape:
            raise InvalidArgumentError("sleep must have the same shape as mood")
        days = np.where((days >= 1) & (days <= 5), days, np.nan)
        if self.name == "mood-distribution":
            raw = _distribution(days)
        elif self.name == "mood-by-cohort":
            indices = np.full(len(days), -1) if cohort is None else np.asarray(cohort)
            raw = _by_cohort(days, indices.astype(np.int64), len(self.cohorts))
        elif self.name == "low-mood-share":
            raw = _low_share(days)
        elif self.name == "mood-by-sleep":
            raw = _by_sleep(days, nights)
        else:
            raise InvalidArgumentError(f"no device computation for query {self.name!r}")
        return self.bound(raw)

    def cohort_index(self, cohort: tuple[str, str] | None) -> int:
        """The index of (age band, region) in :attr:`cohorts`, -1 if absent or None."""
        if cohort is None:
            return -1
        try:
            return self.cohorts.index((str(cohort[0]), str(cohort[1])))
        except ValueError:
            return -1


def _levels(days: FloatArray) -> FloatArray:
    return np.floor(days + 0.5)  # round half up; NaN stays NaN


def _logged(days: FloatArray) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    logged = ~np.isnan(days)
    return logged, logged.sum(axis=1).astype(np.float64)


def _distribution(days: FloatArray) -> FloatArray:
    _, n = _logged(days)
    levels = _levels(days)
    counts = np.stack([(levels == level).sum(axis=1) for level in range(1, 6)], axis=1)
    any_day = n > 0
    shares = counts / np.maximum(n, 1.0)[:, None]
    out: FloatArray = np.concatenate([shares, any_day[:, None].astype(np.float64)], axis=1)
    return out


def _centred(mean: FloatArray) -> FloatArray:
    centred: FloatArray = np.clip((mean - _MOOD_CENTRE) / _MOOD_HALF_RANGE, -1.0, 1.0)
    return centred


def _by_cohort(days: FloatArray, cohort: npt.NDArray[np.int64], n_cohorts: int) -> FloatArray:
    logged, n = _logged(days)
    mean = np.where(logged, days, 0.0).sum(axis=1) / np.maximum(n, 1.0)
    out = np.zeros((len(days), 2 * n_cohorts))
    rows = np.flatnonzero((n > 0) & (cohort >= 0) & (cohort < n_cohorts))
    out[rows, 2 * cohort[rows]] = _centred(mean[rows])
    out[rows, 2 * cohort[rows] + 1] = 1.0
    return out


def _low_share(days: FloatArray) -> FloatArray:
    _, n = _logged(days)
    low = (_levels(days) <= LOW_MOOD_MAX).sum(axis=1)
    return np.stack([low / np.maximum(n, 1.0), (n > 0).astype(np.float64)], axis=1)


def _by_sleep(days: FloatArray, nights: FloatArray) -> FloatArray:
    paired = ~np.isnan(days) & ~np.isnan(nights)
    n = paired.sum(axis=1).astype(np.float64)
    out = np.zeros((len(days), 2 * len(SLEEP_BINS)))
    for b, (_, low, high) in enumerate(SLEEP_BINS):
        in_bin = paired & (nights >= low) & (nights < high)
        count = in_bin.sum(axis=1).astype(np.float64)
        mean = np.where(in_bin, days, 0.0).sum(axis=1) / np.maximum(count, 1.0)
        weight = count / np.maximum(n, 1.0)
        out[:, 2 * b] = np.where(count > 0, weight * _centred(mean), 0.0)
        out[:, 2 * b + 1] = weight
    return out


# -- the specs -------------------------------------------------------------------------


def _share_query(name: str, title: str, levels: Sequence[tuple[str, str]]) -> Query:
    slots = (*(f"share:{value}" for _, value in levels), "count")
    return Query(
        name=name,
        title=title,
        statistic="share",
        unit="share of days",
        slots=slots,
        lower=(0.0,) * len(slots),
        upper=(1.0,) * len(slots),
        cells=tuple(
            Cell(labels=(label,), value_slot=i, count_slot=len(levels))
            for i, label in enumerate(levels)
        ),
        sensitivity=_SQRT2,
    )


def _mean_cells(labels: Sequence[tuple[tuple[str, str], ...]]) -> tuple[Cell, ...]:
    return tuple(
        Cell(labels=cell, value_slot=2 * i, count_slot=2 * i + 1) for i, cell in enumerate(labels)
    )


def _mean_slots(labels: Sequence[str]) -> tuple[str, ...]:
    return tuple(slot for label in labels for slot in (f"mean:{label}", f"count:{label}"))


def cohort_query(
    age_bands: Sequence[str] = DEFAULT_AGE_BANDS, regions: Sequence[str] = DEFAULT_REGIONS
) -> Query:
    """``mood-by-cohort`` over the grid ``age_bands`` x ``regions`` (two slots per cohort)."""
    if not age_bands or not regions:
        raise InvalidArgumentError("a cohort grid needs at least one age band and one region")
    if len(set(age_bands)) != len(age_bands) or len(set(regions)) != len(regions):
        raise InvalidArgumentError("age bands and regions must be unique")
    cohorts = tuple((str(a), str(r)) for a in age_bands for r in regions)
    labels = [(("age_band", a), ("region", r)) for a, r in cohorts]
    n = len(cohorts)
    return Query(
        name="mood-by-cohort",
        title="Mean mood by cohort",
        statistic="mean",
        unit="mood (1-5)",
        slots=_mean_slots([f"{a}/{r}" for a, r in cohorts]),
        lower=(-1.0, 0.0) * n,
        upper=(1.0, 1.0) * n,
        cells=_mean_cells(labels),
        sensitivity=_SQRT2,
        value_offset=_MOOD_CENTRE,
        value_scale=_MOOD_HALF_RANGE,
        cohorts=cohorts,
    )


def standard_queries(
    *,
    age_bands: Sequence[str] = DEFAULT_AGE_BANDS,
    regions: Sequence[str] = DEFAULT_REGIONS,
) -> tuple[Query, ...]:
    """The four weekly queries, in :data:`QUERY_NAMES` order."""
    levels = [("level", str(level)) for level in range(1, 6)]
    n_bins = len(SLEEP_BINS)
    sleep = Query(
        name="mood-by-sleep",
        title="Mean next-day mood by sleep duration",
        statistic="mean",
        unit="mood (1-5)",
        slots=_mean_slots([label for label, _, _ in SLEEP_BINS]),
        lower=(-1.0, 0.0) * n_bins,
        upper=(1.0, 1.0) * n_bins,
        cells=_mean_cells([(("sleep_bin", label),) for label, _, _ in SLEEP_BINS]),
        sensitivity=_SQRT2,
        value_offset=_MOOD_CENTRE,
        value_scale=_MOOD_HALF_RANGE,
    )
    return (
        _share_query("mood-distribution", "Weekly distribution of mood levels", levels),
        cohort_query(age_bands, regions),
        _share_query("low-mood-share", "Share of low-mood days (mood <= 2)", [("level", "<=2")]),
        sleep,
    )


def analytics_clip_norm(queries: Sequence[Query]) -> float:
    """The L2 bound of one device's vectors for ``queries`` put end to end: the clipping
    norm of the single vector a device sends into a secure sum.

    >>> round(analytics_clip_norm(standard_queries()), 6)
    2.828427
    """
    return math.sqrt(sum(query.sensitivity**2 for query in queries))


def queries_to_config(queries: Sequence[Query]) -> dict[str, str]:
    """String settings (e.g. a Flower ConfigRecord) from which a device rebuilds ``queries``.

    >>> config = queries_to_config(standard_queries(regions=("a", "b")))
    >>> [q.name for q in queries_from_config(config)] == list(QUERY_NAMES)
    True
    """
    cohort = next((q for q in queries if q.cohorts), None)
    grid = cohort.cohorts if cohort is not None else ()
    return {
        "analytics-queries": ",".join(q.name for q in queries),
        "age-bands": json.dumps(list(dict.fromkeys(a for a, _ in grid)) or DEFAULT_AGE_BANDS),
        "regions": json.dumps(list(dict.fromkeys(r for _, r in grid)) or DEFAULT_REGIONS),
    }


def queries_from_config(config: Mapping[str, object]) -> tuple[Query, ...]:
    """The queries named in ``config`` (see :func:`queries_to_config`), in its order."""
    try:
        names = str(config["analytics-queries"]).split(",")
        age_bands = json.loads(str(config.get("age-bands", "null"))) or DEFAULT_AGE_BANDS
        regions = json.loads(str(config.get("regions", "null"))) or DEFAULT_REGIONS
    except (KeyError, ValueError) as error:
        raise InvalidArgumentError(f"bad analytics config: {error}") from None
    by_name = {q.name: q for q in standard_queries(age_bands=age_bands, regions=regions)}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise InvalidArgumentError(f"unknown analytics queries: {', '.join(unknown)}")
    return tuple(by_name[name] for name in names)


# -- on one device ---------------------------------------------------------------------


def iso_week_start(day: date) -> date:
    """The Monday of ``day``'s ISO week: how a period is named.

    >>> iso_week_start(date(2026, 1, 4))
    datetime.date(2025, 12, 29)
    """
    return day - timedelta(days=day.weekday())

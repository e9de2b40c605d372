"""Federated analytics on the device: this device's bounded contribution for one week.

For each query (:mod:`client_sdk.queries`) and ISO week a consenting device sends ONE
vector computed from its own diary, bounded by :meth:`~client_sdk.queries.Query.bound`.
It contributes nothing unless its own verified ledger record for
:data:`~client_sdk.protocol.ANALYTICS_PURPOSE` is an active grant.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from typing import Final

import numpy as np
import numpy.typing as npt

from client_sdk.consent_client import Decision
from client_sdk.entry import Entry
from client_sdk.errors import InvalidArgumentError
from client_sdk.features import DailySeries, daily_series
from client_sdk.protocol import ANALYTICS_PURPOSE
from client_sdk.queries import Query

__all__ = ["device_contributions", "week_arrays"]

log = logging.getLogger(__name__)

_DAYS: Final = 7
FloatArray = npt.NDArray[np.float64]


def week_arrays(
    data: Sequence[Entry] | DailySeries, *, week: date
) -> tuple[FloatArray, FloatArray]:
    """The diary's daily mean mood and sleep for the 7 days from Monday ``week``, NaN-filled."""
    if week.weekday() != 0:
        raise InvalidArgumentError(f"a week is named by its Monday; {week} is not one")
    series = data if isinstance(data, DailySeries) else daily_series(data)
    mood, sleep = np.full(_DAYS, np.nan), np.full(_DAYS, np.nan)
    offset = (week - series.start).days
    for i in range(_DAYS):
        j = offset + i
        if 0 <= j < len(series):
            mood[i], sleep[i] = series.mood[j], series.sleep_hours[j]
    return mood, sleep


def device_contributions(
    data: Sequence[Entry] | DailySeries,
    *,
    week: date,
    queries: Sequence[Query],
    decision: Decision | None,
    cohort: tuple[str, str] | None = None,
) -> dict[str, FloatArray]:
    """This device's one bounded vector per query for ``week``; empty without consent.

    ``decision`` is the device's own latest verified record for :data:`ANALYTICS_PURPOSE`
    (``device.consent.decision(ANALYTICS_PURPOSE)``): unless it is an active grant the
    device contributes nothing, whatever the server asked. ``cohort`` is the device's own
    (age band, region); without one its ``mood-by-cohort`` vector is zeros.
    """
    if decision is not None and decision.purpose != ANALYTICS_PURPOSE:
        raise InvalidArgumentError(
            f"analytics needs the {ANALYTICS_PURPOSE!r} decision, got {decision.purpose!r}"
        )
    if decision is None or not decision.active:
        log.info("Not contributing to analytics: consent for %s is off", ANALYTICS_PURPOSE)
        return {}
    mood, sleep = week_arrays(data, week=week)
    return {
        query.name: query.contributions(
            mood=mood[None, :], sleep=sleep[None, :], cohort=[query.cohort_index(cohort)]
        )[0]
        for query in queries
    }

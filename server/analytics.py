"""Federated analytics on the server: bound, sum, noise, threshold, charge, release.

One analytics round releases several queries (:mod:`client_sdk.analytics`) for one ISO
week over every device eligible for ``population-analytics`` at the round's start:

1. Charge every eligible device the round's privacy cost through
   :meth:`privacy.Accountant.charge` (``PrivacyEvent.analytics_release`` with the
   noise multiplier and ``count`` = number of queries), all or nothing, in the same
   per-user budget as training. Over budget: :class:`privacy.BudgetExceededError`
   and nothing is released or written.
2. Per query, drop every contribution from a key that is not eligible, bound the rest
   again (``Query.bound``: finite, clamped, L2-clipped; never trust a device), sum.
3. Add Gaussian noise of std ``sigma * sensitivity`` to every slot of the sum
   (:func:`privacy.add_gaussian_noise`).
4. Release a cell only when its noisy count reaches the threshold (below), as the
   noisy value sum over the noisy count, with the std of that ratio for error bars.

Suppression threshold. With noise std ``s`` on a count slot and each honest device
adding at most 1 to it (after server-side clamping), a cell with fewer than ``k`` true
contributors has a true count of at most ``k - 1``, so with

    T = (k - 1) + s * Phi^-1(1 - beta)

it passes (``noisy count >= T``) with probability at most ``beta`` (the Gaussian upper
tail, ``P(Z >= z_{1-beta}) = beta``). This is the noisy-threshold rule of DP partition
selection (Korolova, Kenthapadi, Mishra & Ntoulas 2009, "Releasing search queries and
clicks privately", WWW; Wilson et al. 2020, "Differentially private SQL with bounded
user contribution", PoPETs 2020(2)); ``k = 11`` follows the US CMS cell-size
suppression policy (no cell of 1 to 10 people is published). The threshold only
post-processes DP outputs, so it costs no privacy.

Value and std. A cell's value is ``offset + scale * S' / N'`` (noisy sum over noisy
count; offset and scale undo the device's centring, e.g. mood = 3 + 2 * ratio). Its std
is the delta-method approximation ``scale * s * sqrt(1 + r^2) / N'`` with ``r = S'/N'``
(noise on both sum and count), also post-processing; reliable when N' >> s, which the
threshold ensures. The population mean mood is derived from the distribution as
``3 + sum_l (l - 3) S'_l / N'`` (std ``s * sqrt(10 + (m - 3)^2) / N'``), stored as a
``derived`` cell at no extra cost.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from statistics import NormalDist
from typing import Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from client_sdk.analytics import ANALYTICS_PURPOSE, Query
from privacy import (
    Accountant,
    PrivacyEvent,
    add_gaussian_noise,
    calibrate_gaussian_sigma,
    gaussian_epsilon,
    history_epsilon,
    noise_for_budget,
)
from server.analytics_releases import (
    AnalyticsRelease,
    CellRelease,
    QueryRelease,
    create_tables,
    record_analytics_round,
)
from server.releases import ReleaseStore

__all__ = [
    "DEFAULT_FALSE_RELEASE_BOUND",
    "DEFAULT_MIN_CONTRIBUTORS",
    "AnalyticsRound",
    "noise_multiplier_for",
    "noisy_release",
    "release_analytics",
    "release_threshold",
    "sum_contributions",
]

log = logging.getLogger(__name__)

DEFAULT_MIN_CONTRIBUTORS: Final = 11
"""k: a cell with fewer true contributors is released with probability at most beta."""
DEFAULT_FALSE_RELEASE_BOUND: Final = 1e-3
"""beta: the bound on releasing a cell of fewer than k true contributors."""


def release_threshold(
    *, noise_std: float, min_contributors: int, false_release_bound: float
) -> float:
    """The noisy-count threshold ``T = (k - 1) + s * Phi^-1(1 - beta)`` (module docstring).

    >>> round(release_threshold(noise_std=10.0, min_contributors=11, false_release_bound=1e-3), 2)
    40.9
    """
    if not math.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be a non-negative finite number, got {noise_std!r}")
    if min_contributors < 1:
        raise ValueError(f"min_contributors must be at least 1, got {min_contributors!r}")
    if not 0 < false_release_bound < 0.5:
        raise ValueError(f"false_release_bound must be in (0, 0.5), got {false_release_bound!r}")
    z = NormalDist().inv_cdf(1.0 - false_release_bound)
    return (min_contributors - 1) + noise_std * z


def noise_multiplier_for(
    *, epsilon: float, delta: float, releases: int = 1, method: str = "rdp"
) -> float:
    """The noise multiplier that keeps ``releases`` Gaussian releases within (epsilon, delta).

    One release: dp-accounting's exact analytic Gaussian (:func:`privacy.calibrate_gaussian_sigma`
    at sensitivity 1); several: :func:`privacy.noise_for_budget` at sampling rate 1 (each
    analytics release covers every eligible user), on the safe side.

    >>> round(noise_multiplier_for(epsilon=1.0, delta=1e-5), 3)
    3.731
    """
    if releases == 1:
        return calibrate_gaussian_sigma(epsilon=epsilon, delta=delta, sensitivity=1.0)
    if method not in ("rdp", "pld"):
        raise ValueError(f"method must be 'rdp' or 'pld', got {method!r}")
    return noise_for_budget(
        sampling_rate=1.0,
        rounds=releases,
        epsilon=epsilon,
        delta=delta,
        method="rdp" if method == "rdp" else "pld",
    )


def sum_contributions(
    query: Query,
    contributions: Mapping[str, npt.ArrayLike],
    *,
    eligible: Collection[str],
) -> npt.NDArray[np.float64]:
    """The sum of eligible devices' vectors for ``query``, each bounded again here.

    A vector from a key not in ``eligible`` is dropped (the device had no active
    analytics consent at the round's start); a vector of the wrong shape counts as
    zeros, as does one with a NaN or inf entry.
    """
    allowed = set(eligible)
    rows, dropped, malformed = [], 0, 0
    for key, vector in contributions.items():
        if key not in allowed:
            dropped += 1
            continue
        array = np.asarray(vector, dtype=np.float64)
        if array.shape != (query.dim,):
            malformed += 1
            continue
        rows.append(array)
    if dropped:
        log.warning("Dropped %d %s contribution(s) from devices not eligible", dropped, query.name)
    if malformed:
        log.warning("Ignored %d malformed %s contribution(s)", malformed, query.name)
    if not rows:
        return np.zeros(query.dim)
    total: npt.NDArray[np.float64] = query.bound(np.stack(rows)).sum(axis=0)
    return total


def _ratio_cell(
    query: Query,
    *,
    cell: str,
    labels: dict[str, str],
    noisy_sum: float,
    noisy_count: float,
    noise_std: float,
    threshold: float,
) -> CellRelease:
    if not noisy_count >= threshold or noisy_count <= 0:
        return CellRelease(cell, labels, None, None, None, None, suppressed=True)
    ratio = noisy_sum / noisy_count
    low = 0.0 if query.statistic == "share" else -1.0
    ratio = min(max(ratio, low), 1.0)
    value = query.value_offset + query.value_scale * ratio
    std = query.value_scale * noise_std * math.sqrt(1.0 + ratio**2) / noisy_count
    return CellRelease(cell, labels, value, std, noisy_sum, noisy_count, suppressed=False)


def noisy_release(
    query: Query,
    total: npt.ArrayLike,
    *,
    noise_multiplier: float,
    threshold: float,
    rng: np.random.Generator | None = None,
) -> tuple[CellRelease, ...]:
    """Noise the summed vector (std ``noise_multiplier * sensitivity``) and make its cells.

    Cells whose noisy count is below ``threshold`` are suppressed: no value, std or count.
    """
    noise_std = noise_multiplier * query.sensitivity
    noisy = np.asarray(
        add_gaussian_noise(
            np.asarray(total, dtype=np.float64),
            sensitivity=query.sensitivity,
            noise_multiplier=noise_multiplier,
            rng=rng,
        )
    )
    cells = [
        _ratio_cell(
            query,
            cell=spec.label,
            labels=dict(spec.labels),
            noisy_sum=float(noisy[spec.value_slot]),
            noisy_count=float(noisy[spec.count_slot]),
            noise_std=noise_std,
            threshold=threshold,
        )
        for spec in query.cells
    ]
    if query.name == "mood-distribution":
        cells.append(_distribution_mean(cells, noise_std=noise_std))
    return tuple(cells)


def _distribution_mean(cells: Sequence[CellRelease], *, noise_std: float) -> CellRelease:
    labels = {"level": "mean"}
    if any(cell.suppressed for cell in cells):
        return CellRelease("mean", labels, None, None, None, None, suppressed=True, derived=True)
    count = cells[0].noisy_count
    assert count is not None
    centred = sum((level - 3) * (cell.noisy_sum or 0.0) for level, cell in enumerate(cells, 1))
    offset = min(max(centred / count, -2.0), 2.0)
    std = noise_std * math.sqrt(10.0 + offset**2) / count
    return CellRelease(
        "mean", labels, 3.0 + offset, std, None, count, suppressed=False, derived=True
    )


@dataclass(frozen=True, slots=True)
class AnalyticsRound:
    """What one analytics round released (also written to the release store)."""

    period: date
    round_id: str
    release_ids: tuple[int, ...]
    releases: tuple[QueryRelease, ...]
    n_eligible: int
    epsilon_after: float


def _previous_analytics(store: ReleaseStore) -> Counter[tuple[float, float]]:
    """(q, sigma) -> count of every analytics figure already in the store."""
    create_tables(store.engine)
    table = AnalyticsRelease.__table__  # type: ignore[attr-defined]
    with store.engine.connect() as connection:
        sigmas = connection.scalars(select(table.c.noise_multiplier))
        return Counter((1.0, float(sigma)) for sigma in sigmas)


def release_analytics(
    contributions: Mapping[str, Mapping[str, npt.ArrayLike]],
    *,
    eligible: Collection[str],
    queries: Sequence[Query],
    period: date,
    noise_multiplier: float,
    accountant: Accountant,
    store: ReleaseStore,
    min_contributors: int = DEFAULT_MIN_CONTRIBUTORS,
    false_release_bound: float = DEFAULT_FALSE_RELEASE_BOUND,
    rng: np.random.Generator | None = None,
) -> AnalyticsRound:
    """Run one analytics round for ``period`` (the Monday of an ISO week) and publish it.

    ``contributions`` maps a device key to its vectors by query name (what each device
    answered); ``eligible`` is every device key whose latest ledger record for
    ``population-analytics`` was an active grant at the round's start. Every eligible
    key is charged, whether or not it answered (the charge must not depend on data);
    any answer from another key is dropped. Raises :class:`privacy.BudgetExceededError`
    (nothing charged, nothing written) when the round would take a user past the
    budget, and :class:`privacy.PrivacyError` if this round was already charged.
    ``rng`` defaults to a fresh OS-seeded generator; pass one only in tests and demos.
    """
    if not queries:
        raise ValueError("an analytics round needs at least one query")
    if len({q.name for q in queries}) != len(queries):
        raise ValueError("each query may be released once per round")
    if period.weekday() != 0:
        raise ValueError(f"a period is named by its ISO week's Monday; {period} is not one")
    keys = sorted(set(eligible))
    round_id = f"{period.isoformat()}/{'+'.join(q.name for q in queries)}"
    event = PrivacyEvent.analytics_release(noise_multiplier=noise_multiplier, count=len(queries))
    accountant.charge(keys, event, purpose=ANALYTICS_PURPOSE, release_id=round_id)

    delta = accountant.delta
    method = accountant.method
    history = _previous_analytics(store)
    history[(1.0, float(noise_multiplier))] += len(queries)
    purpose_epsilon = history_epsilon(history, delta=delta, method=method)
    round_epsilon = history_epsilon(
        {(1.0, float(noise_multiplier)): len(queries)}, delta=delta, method=method
    )
    own_epsilon = gaussian_epsilon(noise_multiplier=noise_multiplier, delta=delta)
    released = []
    for query in queries:
        noise_std = noise_multiplier * query.sensitivity
        threshold = release_threshold(
            noise_std=noise_std,
            min_contributors=min_contributors,
            false_release_bound=false_release_bound,
        )
        by_device = {
            key: vectors[query.name]
            for key, vectors in contributions.items()
            if query.name in vectors
        }
        total = sum_contributions(query, by_device, eligible=keys)
        cells = noisy_release(
            query, total, noise_multiplier=noise_multiplier, threshold=threshold, rng=rng
        )
        released.append(
            QueryRelease(
                query=query.name,
                title=query.title,
                statistic=query.statistic,
                unit=query.unit,
                period=period,
                round_id=round_id,
                noise_multiplier=float(noise_multiplier),
                sensitivity=query.sensitivity,
                noise_std=noise_std,
                threshold=threshold,
                min_contributors=min_contributors,
                false_release_bound=false_release_bound,
                epsilon=own_epsilon,
                delta=delta,
                round_epsilon=round_epsilon,
                purpose_epsilon=purpose_epsilon,
                epsilon_budget=accountant.epsilon_budget,
                n_eligible=len(keys),
                cells=cells,
            )
        )
    epsilon_after = accountant.max_epsilon()
    ids = record_analytics_round(
        store, released, epsilon_after=epsilon_after, purpose=ANALYTICS_PURPOSE
    )
    suppressed = sum(cell.suppressed for r in released for cell in r.cells)
    log.info(
        "Released analytics for %s: %d queries, %d eligible, %d cell(s) suppressed, eps %.3g",
        period,
        len(released),
        len(keys),
        suppressed,
        epsilon_after,
    )
    return AnalyticsRound(
        period=period,
        round_id=round_id,
        release_ids=tuple(ids),
        releases=tuple(released),
        n_eligible=len(keys),
        epsilon_after=epsilon_after,
    )

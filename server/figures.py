"""From the summed contributions of an analytics round to the figures it releases.

Per query, :func:`sum_contributions` drops every vector from a key that was not eligible,
bounds the rest again (``Query.bound``: finite, clamped, L2-clipped; never trust a
device) and sums them. Once noised (:mod:`server.analytics`), :func:`release_cells`
turns the noisy sum into cells: a cell is released only when its noisy count reaches the
threshold (:func:`privacy.release_threshold`), as the noisy value sum over the noisy
count, with the std of that ratio for error bars. Everything after the noise is
post-processing and costs no privacy.

Value and std. A cell's value is ``offset + scale * S' / N'`` (noisy sum over noisy
count; offset and scale undo the device's centring, e.g. mood = 3 + 2 * ratio). Its std
is the delta-method approximation ``scale * s * sqrt(1 + r^2) / N'`` with ``r = S'/N'``
(noise std ``s`` on both sum and count); reliable when N' >> s, which the threshold
ensures. The population mean mood is derived from the distribution as
``3 + sum_l (l - 3) S'_l / N'`` (std ``s * sqrt(10 + (m - 3)^2) / N'``), stored as a
``derived`` cell at no extra cost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from client_sdk.queries import Query
from server.releases import CellRelease

__all__ = ["release_cells", "sum_contributions"]

log = logging.getLogger(__name__)


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


def release_cells(
    query: Query, noisy: npt.ArrayLike, *, noise_std: float, threshold: float
) -> tuple[CellRelease, ...]:
    """The cells of ``query`` from its noisy summed vector (noise std ``noise_std`` on every
    slot). Cells whose noisy count is below ``threshold`` are suppressed: no value, std or
    count.
    """
    values = np.asarray(noisy, dtype=np.float64)
    cells = [
        _ratio_cell(
            query,
            cell=spec.label,
            labels=dict(spec.labels),
            noisy_sum=float(values[spec.value_slot]),
            noisy_count=float(values[spec.count_slot]),
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

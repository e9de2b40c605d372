"""Second, independent computations: Renyi divergences summed over the integer support.

Nothing here shares code with the privacy package: the Skellam pmf comes from
scipy.stats.skellam (checked against the Bessel form e^-mu I_|k|(mu)) and divergences
are plain sums over the support.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats  # type: ignore[import-untyped]  # scipy ships no stubs here

_FLOOR = -700.0  # log-pmf below this is treated as outside the support (mass < 1e-304)


def skellam_log_pmf(points: np.ndarray, variance: float) -> np.ndarray:
    """log P[Sk(variance) = k]: Poisson(variance/2) - Poisson(variance/2)."""
    log_pmf = stats.skellam.logpmf(points, variance / 2, variance / 2)
    bessel = np.log(special.ive(np.abs(points), variance))
    usable = (log_pmf > _FLOOR) & (bessel > _FLOOR)
    assert np.allclose(log_pmf[usable], bessel[usable], rtol=1e-9, atol=1e-9)
    usable_log_pmf: np.ndarray = np.where(log_pmf > _FLOOR, log_pmf, -np.inf)
    return usable_log_pmf


def renyi(order: float, log_p: np.ndarray, log_q: np.ndarray) -> float:
    """D_order(P || Q) = log(sum p^a q^(1-a)) / (a - 1), over points where both have mass."""
    both = np.isfinite(log_p) & np.isfinite(log_q)
    return float(special.logsumexp(order * log_p[both] + (1 - order) * log_q[both]) / (order - 1))


def mixture(q: float, log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """log of (1 - q) P + q Q."""
    log_m: np.ndarray = np.logaddexp(np.log1p(-q) + log_p, np.log(q) + log_q)
    return log_m


def shifted_pair(
    shift: tuple[int, ...], variance: float, reach: int = 120
) -> tuple[np.ndarray, ...]:
    """log P and log Q on a grid: P is Sk(variance) in each coordinate, Q is P shifted."""
    points = np.arange(-reach, reach + 1)
    log_p = np.zeros(())
    log_q = np.zeros(())
    for z in shift:
        log_p = np.add.outer(log_p, skellam_log_pmf(points, variance))
        log_q = np.add.outer(log_q, skellam_log_pmf(points - z, variance))
    return log_p.ravel(), log_q.ravel()

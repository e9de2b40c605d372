"""Independent reference formulas the tests compare the privacy package against."""

from __future__ import annotations

import math

from scipy.optimize import brentq
from scipy.stats import norm


def analytic_gaussian_epsilon(sigma: float, delta: float) -> float:
    """Balle & Wang 2018, Theorem 8: the exact epsilon of one Gaussian release.

    delta(eps) = Phi(1/(2 sigma) - eps sigma) - e^eps Phi(-1/(2 sigma) - eps sigma),
    solved for eps at sensitivity 1.
    """

    def delta_at(epsilon: float) -> float:
        return norm.cdf(1 / (2 * sigma) - epsilon * sigma) - math.exp(epsilon) * norm.cdf(
            -1 / (2 * sigma) - epsilon * sigma
        )

    return brentq(lambda epsilon: delta_at(epsilon) - delta, 0.0, 500.0, xtol=1e-12)

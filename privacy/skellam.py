"""The symmetric Skellam distribution: integer noise that adds up across devices.

Sk(mu) is the difference of two independent Poisson(mu/2) draws: mean 0, variance mu.
Independent Skellam draws add exactly, Sk(mu_1) + Sk(mu_2) = Sk(mu_1 + mu_2), so devices
that each add Sk(mu / t) leave at least Sk(mu) in any sum over t or more of them. This
module samples it, bounds the Renyi DP of adding it to an integer vector, and bounds its
tails (for the no-wrap guarantee of the modular encoding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from privacy.mechanisms import secure_rng

__all__ = ["MAX_POISSON_MEAN", "skellam_noise", "skellam_rdp", "skellam_tail_bound"]

MAX_POISSON_MEAN: Final = 2.0**50
"""Largest Poisson mean drawn (variance 2^51 per device): far below numpy's limit of about
9.2e18, and small enough that every draw and every sum stays exact in float64 and int64."""


def _check_variance(variance: float) -> None:
    if not math.isfinite(variance) or variance < 0:
        raise ValueError(f"variance must be a non-negative finite number, got {variance!r}")


def skellam_noise(
    shape: int | Sequence[int], *, variance: float, rng: np.random.Generator | None = None
) -> npt.NDArray[np.int64]:
    """Int64 draws from Sk(variance): Poisson(variance/2) - Poisson(variance/2).

    ``rng`` defaults to :func:`privacy.mechanisms.secure_rng` (a fresh generator seeded
    with 128 bits from the OS's CSPRNG); pass a seeded generator only in tests.
    numpy's Poisson sampler (PTRS rejection for means of 10 or more) works in floating
    point, so the draws follow Sk(variance) up to floating-point error, as in
    distributed_dp's use of TensorFlow's sampler; the draws themselves never leave the
    device unmasked.

    >>> draws = skellam_noise(100_000, variance=50.0, rng=np.random.default_rng(0))
    >>> draws.dtype, bool(abs(draws.var() / 50.0 - 1) < 0.02)
    (dtype('int64'), True)
    """
    _check_variance(variance)
    if variance / 2 > MAX_POISSON_MEAN:
        raise ValueError(
            f"variance {variance:g} exceeds the sampler's limit {2 * MAX_POISSON_MEAN:g}"
        )
    generator = rng if rng is not None else secure_rng()
    lam = variance / 2
    up = generator.poisson(lam, size=shape).astype(np.int64)
    down = generator.poisson(lam, size=shape).astype(np.int64)
    noise: npt.NDArray[np.int64] = up - down
    return noise


def skellam_rdp(
    order: float, *, variance: float, l1_sensitivity: float, l2_sensitivity: float
) -> float:
    """An upper bound on the Renyi divergence of order ``order`` of the Skellam mechanism.

    The mechanism adds independent Sk(variance) noise to each coordinate of an integer
    vector; two neighbouring inputs differ by an integer vector of L1 norm at most
    ``l1_sensitivity`` and L2 norm at most ``l2_sensitivity``. The bound is Agarwal,
    Kairouz, Liu 2021 ("The Skellam Mechanism for Differentially Private Federated
    Learning", NeurIPS), their RDP theorem for the multi-dimensional Skellam mechanism,
    exactly as google-research distributed_dp's ``accounting_utils._skellam_rdp``
    evaluates it (there with sensitivities and variance in unscaled units, here on the
    integer lattice, which is the same after substituting scale * sensitivity and
    scale^2 * variance)::

        a D2^2 / (2 mu) + min(((2a - 1) D2^2 + 6 D1) / (4 mu^2), 3 D1 / (2 mu))

    The first term is the Gaussian mechanism's RDP at the same variance; the second is
    the price of discreteness, which vanishes as mu grows. The bound is symmetric in the
    sign of the difference, so it bounds both directions of the divergence. Callers use
    it at integer orders; :mod:`privacy.subsampled_rdp` fills fractional orders.

    >>> round(skellam_rdp(2, variance=100.0, l1_sensitivity=1.0, l2_sensitivity=1.0), 6)
    0.010225
    """
    _check_variance(variance)
    if not order > 1:
        raise ValueError(f"order must be greater than 1, got {order!r}")
    for name, value in (("l1_sensitivity", l1_sensitivity), ("l2_sensitivity", l2_sensitivity)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    if variance == 0:
        return math.inf if l2_sensitivity > 0 else 0.0
    mu, d1, d2 = variance, l1_sensitivity, l2_sensitivity
    gaussian = order * d2 * d2 / (2 * mu)
    discrete = min(((2 * order - 1) * d2 * d2 + 6 * d1) / (4 * mu * mu), 3 * d1 / (2 * mu))
    return gaussian + discrete


def skellam_tail_bound(threshold: float, *, variance: float) -> float:
    """An upper bound on P[X >= threshold] for X ~ Sk(variance) (equally P[X <= -threshold]).

    The Chernoff bound: X has moment generating function exp(variance (cosh s - 1)), and
    the minimum over s of exp(variance (cosh s - 1) - s a), at sinh s = a / variance, is
    exp(sqrt(variance^2 + a^2) - variance - a asinh(a / variance)).

    >>> round(skellam_tail_bound(40.0, variance=100.0), 6)  # four standard deviations
    0.000371
    """
    _check_variance(variance)
    if threshold <= 0:
        return 1.0
    if variance == 0:
        return 0.0
    a = float(threshold)
    exponent = math.hypot(variance, a) - variance - a * math.asinh(a / variance)
    return min(1.0, math.exp(exponent))

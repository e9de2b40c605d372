"""Renyi-DP curves at fixed orders: compose by adding them, convert once to (epsilon, delta).

An RDP curve holds a mechanism's Renyi divergence at each order of :data:`RDP_ORDERS`.
Composition adds curves, so an accountant can keep one running curve and add each
event's curve as it happens instead of replaying its whole history; epsilon is then a
single RDP -> (epsilon, delta) conversion (Balle et al. 2020, "Hypothesis testing
interpretations and Renyi differential privacy", Prop. 12, as dp-accounting applies it).
Every number comes from Google's dp-accounting ``RdpAccountant`` at these orders, so a
running sum built here equals, bit for bit, that accountant composing the same events in
the same order. Neighbouring datasets differ by adding or removing one user (or record).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final, TypeAlias

import dp_accounting
import numpy as np
import numpy.typing as npt
from dp_accounting.rdp import rdp_privacy_accountant

__all__ = [
    "RDP_ORDERS",
    "RdpCurve",
    "check_curve",
    "event_rdp",
    "rdp_epsilon",
    "sampled_gaussian_event",
    "sampled_gaussian_rdp",
    "zero_rdp",
]

RDP_ORDERS: Final[tuple[float, ...]] = tuple(
    float(order) for order in rdp_privacy_accountant.DEFAULT_RDP_ORDERS
)
"""The fixed RDP orders: dp-accounting's defaults (1.1 to 10.9 by 0.1, 11 to 63, 128 to 1024),
the same orders the server's RDP accounting uses."""

RdpCurve: TypeAlias = npt.NDArray[np.float64]
"""One Renyi divergence per order of :data:`RDP_ORDERS`; ``inf`` where an order is unusable."""

_STEP_CACHE = 4096  # distinct (q, sigma) kept; each curve is 156 floats


def check_mechanism(sampling_rate: float, noise_multiplier: float) -> None:
    """Refuse a sampling rate outside (0, 1] or a noise multiplier that is not positive."""
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    if not math.isfinite(noise_multiplier) or noise_multiplier <= 0:
        raise ValueError(
            f"noise_multiplier must be a positive finite number, got {noise_multiplier!r}"
        )


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")


def zero_rdp() -> RdpCurve:
    """The curve of doing nothing: the start of every running sum.

    >>> zero_rdp().shape == (len(RDP_ORDERS),)
    True
    """
    return np.zeros(len(RDP_ORDERS), dtype=np.float64)


def check_curve(values: object) -> RdpCurve:
    """``values`` as an RDP curve, or ValueError: one number per order, none NaN or negative.

    >>> check_curve([0.0] * len(RDP_ORDERS)).sum()
    np.float64(0.0)
    """
    curve = np.array(values, dtype=np.float64)
    if curve.shape != (len(RDP_ORDERS),):
        raise ValueError(
            f"an RDP curve has {len(RDP_ORDERS)} values (one per order), got shape {curve.shape}"
        )
    if np.isnan(curve).any() or (curve < 0).any():
        raise ValueError("an RDP curve has no NaN and no negative values")
    return curve


def event_rdp(event: dp_accounting.DpEvent) -> RdpCurve:
    """The RDP curve of any event dp-accounting's ``RdpAccountant`` can compose.

    This is the extension point for other mechanisms: for example a discrete Gaussian
    or Skellam mechanism described by its zCDP bound (``dp_accounting.ZCDpEvent``).
    Raises ``dp_accounting.UnsupportedEventError`` for events RDP cannot account.

    >>> curve = event_rdp(dp_accounting.ZCDpEvent(rho=0.5))
    >>> float(curve[RDP_ORDERS.index(2.0)])
    1.0
    """
    accountant = rdp_privacy_accountant.RdpAccountant(orders=RDP_ORDERS)
    accountant.compose(event)
    curve: RdpCurve = accountant.rdp
    return curve


def sampled_gaussian_event(sampling_rate: float, noise_multiplier: float) -> dp_accounting.DpEvent:
    """The dp-accounting event of one Gaussian step on a Poisson sample of rate q.

    At q = 1 (no sampling) this is the plain Gaussian mechanism.

    >>> sampled_gaussian_event(1.0, 2.0)
    GaussianDpEvent(noise_multiplier=2.0)
    """
    check_mechanism(sampling_rate, noise_multiplier)
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate == 1:
        return gaussian
    return dp_accounting.PoissonSampledDpEvent(sampling_rate, gaussian)


@lru_cache(maxsize=_STEP_CACHE)
def _step_rdp(sampling_rate: float, noise_multiplier: float) -> RdpCurve:
    # The costly part (25-65 ms, mostly the series of the fractional orders): once per
    # distinct (q, sigma) in this process. Read-only, so no caller can corrupt the cache.
    curve = event_rdp(sampled_gaussian_event(sampling_rate, noise_multiplier))
    curve.setflags(write=False)
    return curve


def sampled_gaussian_rdp(
    *, sampling_rate: float, noise_multiplier: float, count: int = 1
) -> RdpCurve:
    """The RDP curve of ``count`` Poisson-subsampled Gaussian steps (q, sigma).

    The one-step curve is computed once per distinct (q, sigma) and cached; ``count``
    steps are ``count`` times it, exactly as ``RdpAccountant`` multiplies a
    ``SelfComposedDpEvent``. The result is a fresh array the caller may modify.

    >>> curve = sampled_gaussian_rdp(sampling_rate=1.0, noise_multiplier=2.0, count=3)
    >>> float(curve[RDP_ORDERS.index(2.0)])  # 3 * alpha / (2 sigma^2)
    0.75
    """
    _check_count(count)
    check_mechanism(sampling_rate, noise_multiplier)
    curve: RdpCurve = count * _step_rdp(float(sampling_rate), float(noise_multiplier))
    return curve


def rdp_epsilon(curve: RdpCurve, *, delta: float) -> float:
    """Epsilon at ``delta`` of a (composed) curve: dp-accounting's ``compute_epsilon``.

    >>> round(rdp_epsilon(sampled_gaussian_rdp(
    ...     sampling_rate=0.01, noise_multiplier=1.0, count=500), delta=1e-5), 2)
    1.65
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    epsilon, _order = rdp_privacy_accountant.compute_epsilon(RDP_ORDERS, check_curve(curve), delta)
    return float(epsilon)

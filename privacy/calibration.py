"""Noise calibration: the least noise that keeps a planned set of releases within a budget."""

from __future__ import annotations

from privacy.accounting import (
    Counts,
    Method,
    SampledGaussian,
    canonical_history,
    history_epsilon,
    noise_for_budget,
)
from privacy.mechanisms import calibrate_gaussian_sigma

__all__ = ["noise_multiplier_for"]


def noise_multiplier_for(
    *,
    epsilon: float,
    delta: float,
    releases: int = 1,
    method: Method = "rdp",
    after: Counts | None = None,
) -> float:
    """The noise multiplier that keeps ``releases`` Gaussian releases within (epsilon, delta).

    Each release adds Gaussian noise of std ``sigma * sensitivity`` to a sum over every
    eligible user (sampling rate 1, as analytics releases are). One release:
    dp-accounting's exact analytic Gaussian (Balle & Wang 2018,
    :func:`privacy.calibrate_gaussian_sigma` at sensitivity 1), whatever ``method``;
    note that an RDP accountant then charges that release a little more than
    ``epsilon`` (1.09 for epsilon 1 at delta 1e-5), while PLD charges it exactly.
    Several: :func:`privacy.noise_for_budget` at sampling rate 1 with ``method``, on the
    safe side (that accountant's epsilon of the releases is at most ``epsilon``).

    ``after`` is a history (mechanism key or (q, sigma) -> count, Gaussian or Skellam)
    the releases come on top of (e.g. the training rounds a user will also be charged):
    then the noise is the least (within 1e-6 relative) for which
    :func:`privacy.history_epsilon` of the whole history stays within ``epsilon``, found
    by bisection (epsilon falls as the noise grows).

    >>> round(noise_multiplier_for(epsilon=1.0, delta=1e-5), 3)
    3.731
    >>> round(noise_multiplier_for(epsilon=4.0, delta=1e-5, releases=52), 2)
    8.35
    """
    if isinstance(releases, bool) or not isinstance(releases, int) or releases < 1:
        raise ValueError(f"releases must be a positive integer, got {releases!r}")
    if method not in ("rdp", "pld"):
        raise ValueError(f"method must be 'rdp' or 'pld', got {method!r}")
    if after:
        return _noise_on_top(after, epsilon=epsilon, delta=delta, releases=releases, method=method)
    if releases == 1:
        return calibrate_gaussian_sigma(epsilon=epsilon, delta=delta, sensitivity=1.0)
    return noise_for_budget(
        sampling_rate=1.0, rounds=releases, epsilon=epsilon, delta=delta, method=method
    )


def _noise_on_top(
    prior: Counts,
    *,
    epsilon: float,
    delta: float,
    releases: int,
    method: Method,
) -> float:
    base = dict(canonical_history(prior))

    def total(sigma: float) -> float:
        history = dict(base)
        key = SampledGaussian(1.0, sigma)
        history[key] = history.get(key, 0) + releases
        return history_epsilon(history, delta=delta, method=method)

    if history_epsilon(prior, delta=delta, method=method) >= epsilon:
        raise ValueError(f"the prior history alone spends epsilon={epsilon:g} or more")
    low, high = 0.0, 1.0
    while total(high) > epsilon:
        low, high = high, high * 2
    while high - low > 1e-6 * high:
        middle = (low + high) / 2
        low, high = (low, middle) if total(middle) <= epsilon else (middle, high)
    return high

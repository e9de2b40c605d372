"""User-level accounting of DP-FedAvg: Poisson-subsampled Gaussians composed over rounds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NamedTuple, TypeAlias

import dp_accounting
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from privacy.rdp import (
    RdpCurve,
    rdp_epsilon,
    sampled_gaussian_event,
    sampled_gaussian_rdp,
    zero_rdp,
)

__all__ = [
    "PLD_VALUE_DISCRETIZATION",
    "Counts",
    "EventKind",
    "History",
    "Method",
    "PrivacyEvent",
    "SampledGaussian",
    "canonical_history",
    "dp_event_for",
    "epsilon_for",
    "history_epsilon",
    "noise_for_budget",
]

Method: TypeAlias = Literal["rdp", "pld"]
"""How compositions are converted to (epsilon, delta): Renyi DP or privacy loss distributions.

RDP is fast and a little loose; PLD is tighter (10-60% lower epsilon on our test grid)
and slower. Both are valid upper bounds, computed by Google's dp-accounting.
"""

EventKind: TypeAlias = Literal["training", "analytics"]

PLD_VALUE_DISCRETIZATION = 1e-3
"""Privacy-loss grid of the PLD accountant. dp-accounting's PLDs are pessimistic, so a
coarser grid only loosens the bound (by about 1e-3 in epsilon at 500 rounds) while
making each computation about ten times faster than the library default of 1e-4."""


class SampledGaussian(NamedTuple):
    """One application of the Gaussian mechanism to a Poisson sample of the users.

    ``sampling_rate`` is q, the probability that a user is in the sample (1 for an
    analytics release over every consenting user); ``noise_multiplier`` is sigma, the
    noise std divided by the L2 sensitivity. A user's history maps these to counts.
    """

    sampling_rate: float
    noise_multiplier: float


Counts: TypeAlias = Mapping[SampledGaussian, int] | Mapping[tuple[float, float], int]
"""A user's history as counts per (q, sigma), keyed by :class:`SampledGaussian` or plain pairs."""

History: TypeAlias = tuple[tuple[float, float, int], ...]
"""The canonical, hashable form of a history: sorted (q, sigma, count), counts > 0."""


def _check_mechanism(sampling_rate: float, noise_multiplier: float) -> None:
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    if not math.isfinite(noise_multiplier) or noise_multiplier <= 0:
        raise ValueError(
            f"noise_multiplier must be a positive finite number, got {noise_multiplier!r}"
        )


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def _check_method(method: str) -> None:
    if method not in ("rdp", "pld"):
        raise ValueError(f"method must be 'rdp' or 'pld', got {method!r}")


@dataclass(frozen=True, slots=True)
class PrivacyEvent:
    """What one round or release costs each user it is charged to.

    A training round samples each eligible user with probability ``sampling_rate``
    and adds noise ``noise_multiplier`` * C to the sum of clipped updates; an
    analytics release adds Gaussian noise to a sum over every consenting user, so its
    sampling rate is 1. ``count`` composes the same mechanism several times (one
    release of several noisy statistics of the same contributions).

    >>> PrivacyEvent.training_round(sampling_rate=0.01, noise_multiplier=1.0).mechanism
    SampledGaussian(sampling_rate=0.01, noise_multiplier=1.0)
    """

    kind: EventKind
    sampling_rate: float
    noise_multiplier: float
    count: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("training", "analytics"):
            raise ValueError(f"kind must be 'training' or 'analytics', got {self.kind!r}")
        _check_mechanism(self.sampling_rate, self.noise_multiplier)
        if self.kind == "analytics" and self.sampling_rate != 1:
            raise ValueError("an analytics release is not subsampled: its sampling_rate is 1")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"count must be a positive integer, got {self.count!r}")

    @classmethod
    def training_round(cls, *, sampling_rate: float, noise_multiplier: float) -> PrivacyEvent:
        """One DP-FedAvg round with Poisson sampling rate q and noise multiplier sigma."""
        return cls("training", float(sampling_rate), float(noise_multiplier))

    @classmethod
    def analytics_release(cls, *, noise_multiplier: float, count: int = 1) -> PrivacyEvent:
        """``count`` Gaussian releases over all consenting users' bounded contributions."""
        return cls("analytics", 1.0, float(noise_multiplier), count)

    @property
    def mechanism(self) -> SampledGaussian:
        """The (q, sigma) key under which this event is counted in a history."""
        return SampledGaussian(self.sampling_rate, self.noise_multiplier)


def canonical_history(history: Counts) -> History:
    """Sorted (q, sigma, count) triples without zero counts: equal histories, equal keys.

    >>> canonical_history({(1.0, 5.0): 2, (0.01, 1.0): 500, (0.1, 1.0): 0})
    ((0.01, 1.0, 500), (1.0, 5.0, 2))
    """
    triples = []
    for (sampling_rate, noise_multiplier), count in history.items():
        if isinstance(count, bool) or int(count) != count or count < 0:
            raise ValueError(f"counts must be non-negative integers, got {count!r}")
        if count:
            _check_mechanism(sampling_rate, noise_multiplier)
            triples.append((float(sampling_rate), float(noise_multiplier), int(count)))
    return tuple(sorted(triples))


def dp_event_for(history: Counts) -> dp_accounting.DpEvent:
    """The dp-accounting event of a history: identical events self-composed, then composed.

    Grouping by (q, sigma) keeps the work proportional to the number of distinct
    mechanisms, not the number of rounds: 10,000 rounds cost one SelfComposedDpEvent.

    >>> dp_event_for({(0.01, 1.0): 3})
    ComposedDpEvent(events=[SelfComposedDpEvent(event=PoissonSampledDpEvent(\
sampling_probability=0.01, event=GaussianDpEvent(noise_multiplier=1.0)), count=3)])
    """
    return dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(sampled_gaussian_event(q, sigma), count)
            for q, sigma, count in canonical_history(history)
        ]
    )


def _fresh_accountant(method: Method) -> dp_accounting.PrivacyAccountant:
    # Add-or-remove-one neighbours: a user's whole data is present or absent, which is
    # the relation under which Poisson subsampling amplifies privacy.
    if method == "rdp":
        return RdpAccountant()
    return PLDAccountant(value_discretization_interval=PLD_VALUE_DISCRETIZATION)


def _history_rdp(history: History) -> RdpCurve:
    # The same sum, in the same order, as RdpAccountant composing dp_event_for(history);
    # but each (q, sigma)'s one-step curve is computed once per process, not per history.
    curve = zero_rdp()
    for q, sigma, count in history:
        curve += sampled_gaussian_rdp(sampling_rate=q, noise_multiplier=sigma, count=count)
    return curve


@lru_cache(maxsize=1 << 16)
def _epsilon_of(history: History, delta: float, method: Method) -> float:
    if not history:
        return 0.0
    if method == "rdp":
        return rdp_epsilon(_history_rdp(history), delta=delta)
    event = dp_event_for({(q, sigma): count for q, sigma, count in history})
    return float(_fresh_accountant(method).compose(event).get_epsilon(delta))


def history_epsilon(history: Counts, *, delta: float, method: Method = "rdp") -> float:
    """Epsilon at ``delta`` of a user's whole history of (q, sigma) -> count.

    Results are memoized by the canonical history, so users (or rounds) with the same
    history share one computation. Pass ``collections.Counter(events)`` to count a
    list of (q, sigma) pairs.

    >>> round(history_epsilon({(0.01, 1.0): 500, (1.0, 20.0): 4}, delta=1e-5), 2)
    1.69
    """
    _check_delta(delta)
    _check_method(method)
    return _epsilon_of(canonical_history(history), float(delta), method)


def epsilon_for(
    *,
    sampling_rate: float,
    noise_multiplier: float,
    rounds: int,
    delta: float,
    method: Method = "rdp",
) -> float:
    """Epsilon of ``rounds`` rounds of DP-FedAvg at sampling rate q and noise sigma.

    Accounts for amplification by Poisson sampling, which Flower's own accounted mode
    does not: at q=0.01, sigma=1, 500 rounds this is about 1.65 (RDP) against about
    355 for the same rounds without sampling.

    >>> round(epsilon_for(sampling_rate=0.01, noise_multiplier=1.0, rounds=500, delta=1e-5), 2)
    1.65
    """
    return history_epsilon({(sampling_rate, noise_multiplier): rounds}, delta=delta, method=method)


def noise_for_budget(
    *,
    sampling_rate: float,
    rounds: int,
    epsilon: float,
    delta: float,
    method: Method = "rdp",
    tolerance: float = 1e-4,
) -> float:
    """The smallest noise multiplier (within ``tolerance``) that keeps ``rounds`` rounds
    at sampling rate q within (epsilon, delta).

    Uses ``dp_accounting.calibrate_dp_mechanism``, which returns a value on the safe
    side: ``epsilon_for`` at the result is never above ``epsilon``.

    >>> sigma = noise_for_budget(sampling_rate=0.01, rounds=500, epsilon=1.65, delta=1e-5)
    >>> round(sigma, 2)
    1.0
    """
    _check_delta(delta)
    _check_method(method)
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    _check_mechanism(sampling_rate, 1.0)

    def epsilon_at(sigma: float) -> float:
        return _epsilon_of(((float(sampling_rate), sigma, rounds),), float(delta), method)

    # Bracket the answer ourselves: an unbounded epsilon at sigma -> 0 would derail
    # the library's own search. Epsilon falls as sigma grows.
    upper = 1.0
    while epsilon_at(upper) > epsilon:
        upper *= 2
    lower = upper / 2
    while epsilon_at(lower) <= epsilon:
        lower /= 2
        if lower < 1e-3:
            return lower
    return float(
        dp_accounting.calibrate_dp_mechanism(
            lambda: _fresh_accountant(method),
            lambda sigma: dp_accounting.SelfComposedDpEvent(
                sampled_gaussian_event(sampling_rate, sigma), rounds
            ),
            epsilon,
            delta,
            bracket_interval=dp_accounting.ExplicitBracketInterval(lower, upper),
            tol=tolerance,
        )
    )

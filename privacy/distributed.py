"""Distributed DP under secure aggregation: each device adds its share of Skellam noise.

A round sums at most n devices' vectors, each clipped to L2 norm C, inside secure
aggregation, and aborts with fewer than t survivors. Every device encodes its vector as

    scale by gamma -> conditional randomized rounding (:mod:`privacy.quantization`)
    -> add Sk(mu) noise with mu = (sigma gamma C)^2 / t (:mod:`privacy.skellam`)
    -> residues modulo 2^k (uint64 values below 2^k)

and the server maps the modular sum back to signed integers and divides by gamma, adding
no noise of its own. Because Skellam draws add exactly, any s >= t survivors leave
Sk(s mu) in the sum: at s = t that is the central Gaussian mechanism's variance
(sigma C)^2, in original units, with sigma the noise multiplier.

Parameters (:class:`DistributedSkellam`). k defaults to 32. gamma is the largest scale at
which the sum provably does not wrap except with probability ``max_wrap_probability``
(default 1e-9 per round). The bound: a rounded coordinate is at most
b = min(ceil(gamma C), floor(sqrt(max_square))) in absolute value, so the signal in any
coordinate of the sum is at most n b whatever the vectors are; the noise there is
Sk(s mu) with s <= n; so the sum leaves [-2^(k-1), 2^(k-1)) only if the noise exceeds
m = 2^(k-1) - 1 - n b, and a union bound over d coordinates and both tails gives

    P[wrap] <= 2 d P[Sk(n mu) >= m + 1] <= 2 d exp(sqrt(V^2 + a^2) - V - a asinh(a / V)),

with V = n mu and a = m + 1 (Chernoff, :func:`privacy.skellam.skellam_tail_bound`).
Wrapping is post-processing of the noised sum: it costs accuracy, never privacy. gamma is
also capped so a device's Poisson means stay below 2^50. At 32 bits and up to 1,000
devices gamma is in the millions, so rounding moves a coordinate by under 1e-6 C and
inflates the sensitivity by under 1e-6: no random rotation is needed at our sizes.

Accounting. Neighbouring datasets differ in one user's data: their rounded vector is
present, or replaced by zeros (an empty or spent diary still sends its noise share, so
the noise in the sum is the same on both sides). The integer sensitivities are the
rounding bounds (L2 ``l2_sensitivity``, L1 ``l1_sensitivity``), the noise is at least
Sk(t mu), and the RDP is Agarwal et al.'s Skellam bound (:func:`privacy.skellam.skellam_rdp`)
amplified by Poisson sampling (:mod:`privacy.subsampled_rdp`). The curve is at
dp-accounting's default orders, so a per-user accountant adds it to Gaussian curves and
converts with ``dp_accounting.rdp.rdp_privacy_accountant.compute_epsilon``.

What the guarantee assumes. (1) At least t devices' noise shares are unknown to the
observer: a server colluding with c devices of a round learns their shares, so calibrate
with ``min_survivors = t - c`` to tolerate c colluders. (2) Amplification by sampling
holds against an observer who cannot tell whether the user was sampled; a server that
picks the cohort can, so against it charge ``sampling_rate=1`` for each round the user
took part in, unless devices sample themselves in secret (every eligible device sends a
noise share, and a zero vector when not sampled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

from privacy.mechanisms import secure_rng
from privacy.quantization import (
    DEFAULT_BETA,
    MAX_BITS,
    MIN_BITS,
    conditional_round,
    from_modular,
    lattice_bounds,
    to_modular,
)
from privacy.rdp import RDP_ORDERS, rdp_epsilon
from privacy.skellam import MAX_POISSON_MEAN, skellam_noise, skellam_rdp, skellam_tail_bound
from privacy.subsampled_rdp import symmetric_subsampled_rdp

__all__ = [
    "DEFAULT_BITS",
    "DEFAULT_MAX_WRAP_PROBABILITY",
    "RDP_ORDERS",
    "DistributedSkellam",
    "skellam_event_rdp",
    "skellam_noise_for_budget",
    "wrap_bound",
]

DEFAULT_BITS: Final = 32
DEFAULT_MAX_WRAP_PROBABILITY: Final = 1e-9

NORM_SLACK: Final = 1e-9
"""Relative slack on the clipping norm: a vector clipped to C in floating point may come
out a few ulps longer; the rounding bounds are computed for C (1 + NORM_SLACK)."""

_SCALE_STEPS = 80  # bisection steps on log(gamma): relative precision below 1e-20


def _check_count(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _coordinate_bound(scaled_norm: float, dimension: int, beta: float) -> int:
    # |z_i| <= ceil(gamma C) from rounding, and |z_i| <= ||z||_2 <= sqrt(max_square).
    bounds = lattice_bounds(l2_norm=scaled_norm, dimension=dimension, beta=beta)
    return min(math.ceil(scaled_norm), math.isqrt(bounds.max_square))


def wrap_bound(
    *,
    scale: float,
    clip_norm: float,
    dimension: int,
    max_devices: int,
    min_survivors: int,
    noise_multiplier: float,
    bits: int,
    beta: float,
) -> float:
    """The module docstring's bound on P[some coordinate of the sum wraps] at scale gamma.

    Nondecreasing in gamma; :class:`DistributedSkellam` picks the largest gamma at which
    it is at most ``max_wrap_probability``.

    >>> wrap_bound(scale=1000.0, clip_norm=1.0, dimension=4, max_devices=10,
    ...            min_survivors=5, noise_multiplier=1.0, bits=16, beta=0.0) < 1e-6
    True
    """
    for name, value in (("scale", scale), ("clip_norm", clip_norm), ("sigma", noise_multiplier)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    _check_count("min_survivors", min_survivors, 1)
    _check_count("max_devices", max_devices, min_survivors)
    _check_count("bits", bits, MIN_BITS)
    scaled_norm = scale * clip_norm * (1 + NORM_SLACK)
    coordinate = _coordinate_bound(scaled_norm, dimension, beta)
    margin = (1 << (bits - 1)) - 1 - max_devices * coordinate
    if margin < 0:
        return 1.0
    device_variance = (noise_multiplier * scale * clip_norm) ** 2 / min_survivors
    tail = skellam_tail_bound(margin + 1, variance=max_devices * device_variance)
    return min(1.0, 2 * dimension * tail)


@dataclass(frozen=True, slots=True)
class DistributedSkellam:
    """One round's distributed Skellam mechanism: inputs, derived encoding, accounting.

    Inputs: ``clip_norm`` C, ``dimension`` d, ``max_devices`` n (the most vectors in one
    sum), ``min_survivors`` t (the secure-aggregation threshold), ``noise_multiplier``
    sigma, ``bits`` k, rounding ``beta``, ``max_wrap_probability``. Derived (see the
    module docstring): ``scale`` gamma, ``device_variance`` mu (integer units),
    ``max_square``/``l2_sensitivity``/``l1_sensitivity`` (the rounding bounds),
    ``max_coordinate`` b (the largest rounded coordinate, so n b bounds the signal), and
    ``wrap_probability`` (the proven bound, at most ``max_wrap_probability``).
    Construction validates every input and derives the rest, so a device that builds it
    from its own policy needs no number from the server but n, t, d and k.

    >>> mech = DistributedSkellam(clip_norm=1.0, dimension=1441, max_devices=50,
    ...                           min_survivors=35, noise_multiplier=1.0)
    >>> f"{mech.scale:.4g} {mech.device_variance:.4g} {mech.wrap_probability:.2g}"
    '3.636e+07 3.778e+13 1e-09'
    >>> round(mech.noise_std(35), 6), round(mech.noise_std(50), 6)
    (1.0, 1.195229)
    """

    clip_norm: float
    dimension: int
    max_devices: int
    min_survivors: int
    noise_multiplier: float
    bits: int = DEFAULT_BITS
    beta: float = DEFAULT_BETA
    max_wrap_probability: float = DEFAULT_MAX_WRAP_PROBABILITY
    scale: float = field(init=False)
    device_variance: float = field(init=False)
    max_square: int = field(init=False)
    max_coordinate: int = field(init=False)
    l2_sensitivity: float = field(init=False)
    l1_sensitivity: float = field(init=False)
    wrap_probability: float = field(init=False)

    def __post_init__(self) -> None:
        if not math.isfinite(self.clip_norm) or self.clip_norm <= 0:
            raise ValueError(f"clip_norm must be a positive finite number, got {self.clip_norm!r}")
        _check_count("dimension", self.dimension, 1)
        _check_count("max_devices", self.max_devices, 1)
        _check_count("min_survivors", self.min_survivors, 1)
        if self.min_survivors > self.max_devices:
            raise ValueError(
                f"min_survivors ({self.min_survivors}) exceeds max_devices ({self.max_devices})"
            )
        if not math.isfinite(self.noise_multiplier) or self.noise_multiplier <= 0:
            raise ValueError(
                f"noise_multiplier must be a positive finite number, got {self.noise_multiplier!r}"
            )
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise ValueError(f"bits must be an integer, got {self.bits!r}")
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {self.bits}")
        if not 0 <= self.beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {self.beta!r}")
        if not 0 < self.max_wrap_probability < 1:
            raise ValueError(
                f"max_wrap_probability must be in (0, 1), got {self.max_wrap_probability!r}"
            )
        scale = self._largest_safe_scale()
        bounds = lattice_bounds(
            l2_norm=scale * self.clip_norm * (1 + NORM_SLACK),
            dimension=self.dimension,
            beta=self.beta,
        )
        derived = {
            "scale": scale,
            "device_variance": (self.noise_multiplier * scale * self.clip_norm) ** 2
            / self.min_survivors,
            "max_square": bounds.max_square,
            "max_coordinate": _coordinate_bound(
                scale * self.clip_norm * (1 + NORM_SLACK), self.dimension, self.beta
            ),
            "l2_sensitivity": bounds.l2,
            "l1_sensitivity": bounds.l1,
            "wrap_probability": self._wrap_at(scale),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def _wrap_at(self, scale: float) -> float:
        return wrap_bound(
            scale=scale,
            clip_norm=self.clip_norm,
            dimension=self.dimension,
            max_devices=self.max_devices,
            min_survivors=self.min_survivors,
            noise_multiplier=self.noise_multiplier,
            bits=self.bits,
            beta=self.beta,
        )

    def _largest_safe_scale(self) -> float:
        # The wrap bound grows with gamma (larger signal, larger noise), so bisect log(gamma).
        cap = (
            (1 - 1e-9)
            * math.sqrt(2 * MAX_POISSON_MEAN * self.min_survivors)
            / (self.noise_multiplier * self.clip_norm)
        )
        target = self.max_wrap_probability
        low = min(cap, 1 / self.clip_norm)
        while self._wrap_at(low) > target:
            low /= 2
            if low * self.clip_norm < 1e-6:
                raise ValueError(
                    f"no scale keeps the sum of {self.max_devices} vectors within {self.bits} "
                    f"bits with wrap probability <= {target:g}: use more bits or fewer devices"
                )
        if self._wrap_at(cap) <= target:
            return cap
        high = cap
        for _ in range(_SCALE_STEPS):
            middle = math.sqrt(low * high)
            if middle in (low, high):
                break
            if self._wrap_at(middle) <= target:
                low = middle
            else:
                high = middle
        return low

    @property
    def central_variance(self) -> float:
        """Variance of the integer noise in a sum over t survivors: (sigma gamma C)^2."""
        return self.min_survivors * self.device_variance

    def encode(
        self, values: npt.ArrayLike, *, rng: np.random.Generator | None = None
    ) -> npt.NDArray[np.uint64]:
        """A device's input to secure aggregation: its clipped vector, rounded, noised, mod 2^k.

        ``values`` is a length-d float vector of L2 norm at most C (clip it first; a zero
        vector is the contribution of an empty or spent diary). One generator serves the
        rounding and the noise; it defaults to :func:`privacy.mechanisms.secure_rng`, a
        fresh numpy PCG64 seeded with 128 bits from the OS's CSPRNG for each call: no
        generator state is shared between rounds, and the draws are never seen unmasked
        (only their sum over devices is). Pass a seeded generator only in tests.
        """
        vector = np.asarray(values, dtype=np.float64)
        if vector.shape != (self.dimension,):
            raise ValueError(f"expected a vector of shape ({self.dimension},), got {vector.shape}")
        if not np.isfinite(vector).all():
            raise ValueError("the vector holds NaN or infinite values")
        norm = float(np.linalg.norm(vector))
        if norm > self.clip_norm * (1 + NORM_SLACK):
            raise ValueError(
                f"the vector's L2 norm {norm:g} exceeds the clipping norm {self.clip_norm:g}: "
                "clip it first"
            )
        generator = rng if rng is not None else secure_rng()
        rounded = conditional_round(vector * self.scale, max_square=self.max_square, rng=generator)
        noise = skellam_noise(self.dimension, variance=self.device_variance, rng=generator)
        return to_modular(rounded + noise, bits=self.bits)

    def decode(self, total: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The noised sum in original units, from the modular sum of the survivors' inputs."""
        residues = np.asarray(total)
        if residues.shape != (self.dimension,):
            raise ValueError(f"expected a sum of shape ({self.dimension},), got {residues.shape}")
        signed = from_modular(residues, bits=self.bits)
        decoded: npt.NDArray[np.float64] = signed.astype(np.float64) / self.scale
        return decoded

    def _check_survivors(self, survivors: int) -> None:
        _check_count("survivors", survivors, 1)
        if not self.min_survivors <= survivors <= self.max_devices:
            raise ValueError(
                f"survivors must be in [{self.min_survivors}, {self.max_devices}] (a round with "
                f"fewer than t={self.min_survivors} releases nothing), got {survivors}"
            )

    def noise_std(self, survivors: int) -> float:
        """Std of the DP noise in each coordinate of the decoded sum: sigma C sqrt(s / t).

        For error bars and the analytics suppression threshold. Rounding adds at most
        :meth:`rounding_error_bound` on top.
        """
        self._check_survivors(survivors)
        return math.sqrt(survivors * self.device_variance) / self.scale

    def rounding_error_bound(self, survivors: int) -> float:
        """A bound on the rounding error of each coordinate of the decoded sum: s / gamma.

        Each device moves each coordinate by less than one lattice step.
        """
        self._check_survivors(survivors)
        return survivors / self.scale

    def rdp(
        self, *, sampling_rate: float, orders: tuple[float, ...] = RDP_ORDERS
    ) -> npt.NDArray[np.float64]:
        """RDP curve at ``orders`` of one round at Poisson sampling rate q (1: no sampling)."""
        return skellam_event_rdp(
            sampling_rate=sampling_rate,
            variance=self.central_variance,
            l1_sensitivity=self.l1_sensitivity,
            l2_sensitivity=self.l2_sensitivity,
            orders=orders,
        )

    def epsilon(self, *, sampling_rate: float, rounds: int, delta: float) -> float:
        """Epsilon at ``delta`` of ``rounds`` rounds at sampling rate q, through RDP."""
        _check_count("rounds", rounds, 1)
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        return rdp_epsilon(rounds * self.rdp(sampling_rate=sampling_rate), delta=delta)


@lru_cache(maxsize=4096)
def _event_rdp(
    sampling_rate: float,
    variance: float,
    l1_sensitivity: float,
    l2_sensitivity: float,
    orders: tuple[float, ...],
) -> npt.NDArray[np.float64]:
    def base(order: int) -> float:
        return skellam_rdp(
            order, variance=variance, l1_sensitivity=l1_sensitivity, l2_sensitivity=l2_sensitivity
        )

    curve = symmetric_subsampled_rdp(base, sampling_rate=sampling_rate, orders=orders)
    curve.setflags(write=False)  # shared by the cache: nobody may change it
    return curve


def skellam_event_rdp(
    *,
    sampling_rate: float,
    variance: float,
    l1_sensitivity: float,
    l2_sensitivity: float,
    orders: tuple[float, ...] = RDP_ORDERS,
) -> npt.NDArray[np.float64]:
    """RDP curve of one Poisson-sampled Skellam release on the integer lattice.

    ``variance`` is the integer noise variance guaranteed in the sum (t mu); the
    sensitivities are integer-lattice norms. Cached per distinct argument tuple; the
    result is a fresh array the caller may modify.

    >>> curve = skellam_event_rdp(sampling_rate=1.0, variance=1e12,
    ...                           l1_sensitivity=3.8e7, l2_sensitivity=1e6)
    >>> round(float(curve[RDP_ORDERS.index(2.0)]), 6)  # the Gaussian's alpha / (2 sigma^2)
    1.0
    """
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    curve = _event_rdp(
        float(sampling_rate),
        float(variance),
        float(l1_sensitivity),
        float(l2_sensitivity),
        tuple(float(order) for order in orders),
    )
    return curve.copy()


def skellam_noise_for_budget(
    *,
    epsilon: float,
    delta: float,
    sampling_rate: float,
    rounds: int,
    clip_norm: float,
    dimension: int,
    max_devices: int,
    min_survivors: int,
    bits: int = DEFAULT_BITS,
    beta: float = DEFAULT_BETA,
    max_wrap_probability: float = DEFAULT_MAX_WRAP_PROBABILITY,
    tolerance: float = 1e-4,
) -> float:
    """A noise multiplier sigma that keeps ``rounds`` rounds at rate q within (epsilon, delta).

    Bisects log(sigma) (each candidate re-derives gamma and the rounding bounds) until
    the bracket is narrower than ``tolerance`` relative, and returns its upper end, at
    which the epsilon is never above the target.

    >>> sigma = skellam_noise_for_budget(epsilon=1.7, delta=1e-5, sampling_rate=0.01,
    ...     rounds=500, clip_norm=1.0, dimension=1441, max_devices=1000, min_survivors=700)
    >>> round(sigma, 2)
    0.99
    """
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    _check_count("rounds", rounds, 1)
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance!r}")

    def epsilon_at(sigma: float) -> float:
        mechanism = DistributedSkellam(
            clip_norm=clip_norm,
            dimension=dimension,
            max_devices=max_devices,
            min_survivors=min_survivors,
            noise_multiplier=sigma,
            bits=bits,
            beta=beta,
            max_wrap_probability=max_wrap_probability,
        )
        return mechanism.epsilon(sampling_rate=sampling_rate, rounds=rounds, delta=delta)

    high = 1.0
    while epsilon_at(high) > epsilon:
        high *= 2
        if high > 1e6:
            raise ValueError(f"no noise multiplier up to 1e6 reaches epsilon {epsilon:g}")
    low = high / 2
    while epsilon_at(low) <= epsilon:
        high, low = low, low / 2
        if low < 1e-3:
            return high
    while high / low > 1 + tolerance:
        middle = math.sqrt(low * high)
        if epsilon_at(middle) <= epsilon:
            high = middle
        else:
            low = middle
    return high

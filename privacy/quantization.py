"""Fixed-point integers for secure aggregation: conditional randomized rounding and Z_{2^k}.

A device scales its clipped vector by gamma, rounds it to the integer lattice, adds its
integer noise and sends the result modulo 2^k; the server's modular sum is mapped back to
signed integers. The privacy analysis of the integer mechanism needs a bound on the norm
of the *rounded* vector, which plain stochastic rounding inflates by up to sqrt(d). So
rounding is conditional (Kairouz, Liu, Steinke 2021, "The Distributed Discrete Gaussian
Mechanism for Federated Learning with Secure Aggregation", ICML, Sec. 4.1): round each
coordinate up with probability equal to its fractional part, and draw again while the
squared L2 norm exceeds a threshold that one draw passes with probability at least
1 - beta. The threshold is the one of google-research ``distributed_dp``
(``accounting_utils.rounded_l2_norm_bound``): for a vector of norm at most c in dimension
d, min(c + sqrt(d), sqrt(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2))). Rejection
makes the bound hold for every output, not just with high probability.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from privacy.errors import PrivacyError

__all__ = [
    "DEFAULT_BETA",
    "MAX_BITS",
    "MIN_BITS",
    "LatticeBounds",
    "conditional_round",
    "from_modular",
    "lattice_bounds",
    "to_modular",
]

DEFAULT_BETA: Final = math.exp(-0.5)
"""distributed_dp's default: one rounding draw passes the norm check with probability at
least 1 - e^-0.5 (about 0.39), so a device draws at most about 2.5 times on average."""

MIN_BITS: Final = 8
MAX_BITS: Final = 53
"""Largest modulus exponent: signed sums below 2^52 convert to float64 exactly on decoding."""

_MAX_TRIES: Final = 1000  # 0.61^1000 < 1e-200: exhausting it means a bug, not bad luck


class LatticeBounds(NamedTuple):
    """What conditional rounding guarantees for every rounded vector z.

    ``max_square`` bounds sum(z_i^2) exactly (an integer, compared exactly);
    ``l2`` >= sqrt(max_square) bounds ||z||_2 and ``l1`` bounds ||z||_1, using
    |z_i| <= z_i^2 for integers and Cauchy-Schwarz: min(max_square, sqrt(d) * l2).
    """

    max_square: int
    l2: float
    l1: float


def lattice_bounds(*, l2_norm: float, dimension: int, beta: float = DEFAULT_BETA) -> LatticeBounds:
    """Norm bounds of the rounded vector, for inputs (already scaled) of L2 norm <= ``l2_norm``.

    ``beta`` in [0, 1): 0 is plain stochastic rounding with the deterministic bound
    c + sqrt(d) (no draw is ever rejected); larger beta gives a tighter bound and more
    redraws.

    >>> bounds = lattice_bounds(l2_norm=1000.0, dimension=1441)
    >>> bounds.max_square, round(bounds.l2, 3), round(bounds.l1, 1)
    (1001379, 1000.689, 37986.7)
    """
    if not math.isfinite(l2_norm) or l2_norm <= 0:
        raise ValueError(f"l2_norm must be a positive finite number, got {l2_norm!r}")
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        raise ValueError(f"dimension must be a positive integer, got {dimension!r}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    root_d = math.sqrt(dimension)
    threshold = l2_norm + root_d
    if beta > 0:
        concentrated = math.sqrt(
            l2_norm**2 + dimension / 4 + math.sqrt(2 * math.log(1 / beta)) * (l2_norm + root_d / 2)
        )
        threshold = min(threshold, concentrated)
    # Everything below errs upwards, so the published bounds hold for every accepted z.
    max_square = math.floor(threshold * threshold * (1 + 1e-15))
    l2 = math.nextafter(math.sqrt(max_square), math.inf)
    l1 = min(float(max_square), math.nextafter(root_d * l2, math.inf))
    return LatticeBounds(max_square, l2, l1)


def conditional_round(
    values: npt.ArrayLike, *, max_square: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Round each coordinate to floor or ceil, unbiased, redrawing while sum(z^2) > max_square.

    Each coordinate rounds up with probability equal to its fractional part, so one draw
    is unbiased and its error is below 1 per coordinate; the rejection step adds a small
    bias towards shorter vectors (utility, not privacy). ``max_square`` should come from
    :func:`lattice_bounds` for the caller's norm bound, which one draw meets with
    probability at least 1 - beta. The input is not modified.

    >>> z = conditional_round([0.5, -2.25, 3.0], max_square=20, rng=np.random.default_rng(1))
    >>> z.dtype, int(z[2]), int(z @ z) <= 20
    (dtype('int64'), 3, True)
    """
    scaled = np.asarray(values, dtype=np.float64)
    if scaled.ndim != 1 or scaled.size == 0:
        raise ValueError(f"expected a non-empty 1-D vector, got shape {scaled.shape}")
    if not np.isfinite(scaled).all():
        raise ValueError("the vector holds NaN or infinite values")
    if np.abs(scaled).max() >= 2.0**62:
        raise ValueError("the scaled vector does not fit in 64-bit integers")
    if isinstance(max_square, bool) or not isinstance(max_square, int) or max_square < 0:
        raise ValueError(f"max_square must be a non-negative integer, got {max_square!r}")
    floor = np.floor(scaled)
    fraction = scaled - floor
    base = floor.astype(np.int64)
    for _ in range(_MAX_TRIES):
        rounded = base + (rng.random(scaled.size) < fraction)
        # Exact integer arithmetic: int64 squares could overflow for large coordinates.
        if sum(v * v for v in rounded.tolist()) <= max_square:
            return rounded
    raise PrivacyError(
        f"no rounding met the norm bound in {_MAX_TRIES} draws: the input exceeds the norm "
        "the bound was computed for"
    )


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")


def to_modular(values: npt.ArrayLike, *, bits: int) -> npt.NDArray[np.uint64]:
    """Integers as their residues modulo 2^bits, in uint64 (each value < 2^bits).

    >>> to_modular([-1, 0, 5], bits=8).tolist()
    [255, 0, 5]
    """
    _check_bits(bits)
    integers = np.asarray(values)
    if not np.issubdtype(integers.dtype, np.integer):
        raise ValueError(f"expected integers, got dtype {integers.dtype}")
    residues: npt.NDArray[np.uint64] = np.mod(integers.astype(np.int64), 1 << bits).astype(
        np.uint64
    )
    return residues


def from_modular(values: npt.ArrayLike, *, bits: int) -> npt.NDArray[np.int64]:
    """Residues modulo 2^bits as the signed integers in [-2^(bits-1), 2^(bits-1)) they stand for.

    A sum whose true value lies outside that range has wrapped and decodes wrongly;
    the encoder's parameters make that improbable (see :mod:`privacy.distributed`).

    >>> from_modular(np.array([255, 0, 5, 128], dtype=np.uint64), bits=8).tolist()
    [-1, 0, 5, -128]
    """
    _check_bits(bits)
    residues = np.asarray(values)
    if not np.issubdtype(residues.dtype, np.integer):
        raise ValueError(f"expected integers, got dtype {residues.dtype}")
    if residues.size and (residues.min() < 0 or residues.max() >= (1 << bits)):
        raise ValueError(f"residues modulo 2^{bits} lie in [0, 2^{bits})")
    signed = residues.astype(np.int64)
    wrapped: npt.NDArray[np.int64] = np.where(
        signed >= 1 << (bits - 1), signed - (1 << bits), signed
    )
    return wrapped

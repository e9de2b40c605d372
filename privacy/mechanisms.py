"""The Gaussian mechanism: noise sampling and single-release calibration."""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

import dp_accounting
import numpy as np

from privacy._arrays import is_tensor, torch_module
from privacy.clipping import Array

if TYPE_CHECKING:
    import torch

__all__ = [
    "add_gaussian_noise",
    "calibrate_gaussian_sigma",
    "gaussian_epsilon",
    "gaussian_noise",
    "secure_rng",
]


def secure_rng() -> np.random.Generator:
    """A fresh numpy generator seeded with 128 bits from the OS's CSPRNG (``secrets``).

    This is the default source of every noise draw here, made anew for each call.
    The choice, explicitly: numpy's PCG64 is fast and statistically sound but it is
    *not* a cryptographically secure generator; its state can in principle be
    recovered from enough of its output. Seeding each call from ``secrets`` means
    no state is shared between releases, so what one release might reveal about the
    generator says nothing about the next one's noise. A deployment that wants a
    CSPRNG for the draws themselves passes its own ``rng``: any
    ``numpy.random.Generator`` over a cryptographic bit generator (for example
    ``randomgen``'s ``ChaCha`` or ``AESCounter``). Note that sampling a continuous
    Gaussian in floating point has a known side channel in the low-order bits
    (Mironov 2012); the full fix is a discrete Gaussian sampler, out of scope here.

    >>> secure_rng().normal(size=3).shape
    (3,)
    """
    return np.random.Generator(np.random.PCG64(secrets.randbits(128)))


def _check_std(std: float) -> None:
    if not math.isfinite(std) or std < 0:
        raise ValueError(f"the noise std must be a non-negative finite number, got {std!r}")


def gaussian_noise(
    shape: int | Sequence[int], *, std: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Float64 draws from N(0, std^2) of the given shape.

    ``rng`` defaults to :func:`secure_rng` (fresh, OS-seeded, per call); pass a
    seeded generator only in tests.

    >>> gaussian_noise((2, 3), std=1.0).shape
    (2, 3)
    """
    _check_std(std)
    generator = rng if rng is not None else secure_rng()
    return generator.normal(loc=0.0, scale=std, size=shape)


def _noised(value: Array, std: float, rng: np.random.Generator) -> Array:
    if is_tensor(value):
        torch = torch_module()
        dtype = value.dtype if value.is_floating_point() else torch.float64
        noise = value.new_tensor(rng.normal(0.0, std, size=tuple(value.shape)), dtype=dtype)
        return value.detach().to(dtype) + noise
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    return (array + rng.normal(0.0, std, size=array.shape)).astype(array.dtype, copy=False)


@overload
def add_gaussian_noise(
    values: np.ndarray,
    *,
    sensitivity: float,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
) -> np.ndarray: ...
@overload
def add_gaussian_noise(
    values: torch.Tensor,
    *,
    sensitivity: float,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
) -> torch.Tensor: ...
@overload
def add_gaussian_noise(
    values: Sequence[Array],
    *,
    sensitivity: float,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
) -> list[Array]: ...
def add_gaussian_noise(
    values: Array | Sequence[Array],
    *,
    sensitivity: float,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
) -> Array | list[Array]:
    """Add N(0, (noise_multiplier * sensitivity)^2) noise to every entry of ``values``.

    ``values`` is one array or tensor, or a sequence of them (a model update); the
    result has the same structure, kinds and floating dtypes. ``sensitivity`` is the
    L2 sensitivity of ``values`` (the clipping norm C for a sum of clipped updates,
    the contribution bound for analytics), so the std is sigma * C as in DP-FedAvg.
    One generator (default :func:`secure_rng`) serves the whole call.

    >>> noisy = add_gaussian_noise(np.zeros(4), sensitivity=1.0, noise_multiplier=1.0)
    >>> noisy.shape, noisy.dtype
    ((4,), dtype('float64'))
    """
    if not math.isfinite(sensitivity) or sensitivity < 0:
        raise ValueError(f"sensitivity must be a non-negative finite number, got {sensitivity!r}")
    std = sensitivity * noise_multiplier
    _check_std(std)
    generator = rng if rng is not None else secure_rng()
    if isinstance(values, np.ndarray) or is_tensor(values):
        return _noised(values, std, generator)
    return [_noised(value, std, generator) for value in values]


def calibrate_gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float) -> float:
    """The smallest noise std giving (epsilon, delta)-DP for one Gaussian release.

    Uses dp-accounting's exact analytic Gaussian mechanism (Balle & Wang 2018), which
    is tight for every epsilon, unlike the textbook sqrt(2 ln(1.25/delta))/epsilon
    that only holds for epsilon < 1 and wastes noise. For a release repeated over
    rounds or subsampled, use :mod:`privacy.accounting` instead.

    >>> round(calibrate_gaussian_sigma(epsilon=1.0, delta=1e-5, sensitivity=2.0), 3)
    7.461
    """
    if not math.isfinite(sensitivity) or sensitivity <= 0:
        raise ValueError(f"sensitivity must be a positive finite number, got {sensitivity!r}")
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return sensitivity * float(dp_accounting.get_sigma_gaussian(epsilon, delta))


def gaussian_epsilon(*, noise_multiplier: float, delta: float) -> float:
    """The exact epsilon at ``delta`` of one Gaussian release with this noise multiplier.

    The inverse of :func:`calibrate_gaussian_sigma` (at sensitivity 1), through
    dp-accounting's analytic Gaussian mechanism (Balle & Wang 2018).

    >>> round(gaussian_epsilon(noise_multiplier=3.7306, delta=1e-5), 3)
    1.0
    """
    if not math.isfinite(noise_multiplier) or noise_multiplier <= 0:
        raise ValueError(
            f"noise_multiplier must be a positive finite number, got {noise_multiplier!r}"
        )
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return float(dp_accounting.get_epsilon_gaussian(noise_multiplier, delta))

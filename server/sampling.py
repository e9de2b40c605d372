"""Poisson sampling of a round's devices, the step the privacy amplification rests on.

Each eligible device is included independently with probability q, so the sample size
itself is random and no one learns from it who was picked. The accountant's
amplification by subsampling assumes exactly this and assumes the sample stays secret,
so by default each round's draw comes from a generator freshly seeded from the OS's
CSPRNG (``privacy.secure_rng``); a fixed seed is for tests only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from privacy import secure_rng

__all__ = ["poisson_sample", "round_rng"]

T = TypeVar("T")


def round_rng(seed: int | None, round_number: int, *, stream: int = 0) -> np.random.Generator:
    """The generator for one round: CSPRNG-seeded when ``seed`` is None.

    ``stream`` separates independent uses within a round (sampling, server noise).

    >>> a = round_rng(1, 3).random()
    >>> a == round_rng(1, 3).random(), a == round_rng(1, 4).random()
    (True, False)
    """
    if seed is None:
        return secure_rng()
    return np.random.default_rng([seed, round_number, stream])


def poisson_sample(candidates: Sequence[T], *, rate: float, rng: np.random.Generator) -> list[T]:
    """Each candidate independently with probability ``rate`` (order kept).

    >>> poisson_sample(["a", "b", "c"], rate=1.0, rng=round_rng(0, 1))
    ['a', 'b', 'c']
    >>> poisson_sample(["a", "b", "c"], rate=0.0, rng=round_rng(0, 1))
    []
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"a sampling rate is in [0, 1], got {rate!r}")
    draws = rng.random(len(candidates))
    return [candidate for candidate, draw in zip(candidates, draws, strict=True) if draw < rate]

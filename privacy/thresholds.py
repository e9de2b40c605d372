"""Release thresholds: when a noisy count is large enough to publish its cell.

With noise std ``s`` on a count and each honest device adding at most 1 to it (after
server-side clamping), a cell with fewer than ``k`` true contributors has a true count
of at most ``k - 1``, so with

    T = (k - 1) + s * Phi^-1(1 - beta)

it passes (``noisy count >= T``) with probability at most ``beta`` (the Gaussian upper
tail, ``P(Z >= z_{1-beta}) = beta``). This is the noisy-threshold rule of DP partition
selection (Korolova, Kenthapadi, Mishra & Ntoulas 2009, "Releasing search queries and
clicks privately", WWW; Wilson et al. 2020, "Differentially private SQL with bounded
user contribution", PoPETs 2020(2)); ``k = 11`` follows the US CMS cell-size
suppression policy (no cell of 1 to 10 people is published). The threshold only
post-processes DP outputs, so it costs no privacy.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Final

__all__ = ["DEFAULT_FALSE_RELEASE_BOUND", "DEFAULT_MIN_CONTRIBUTORS", "release_threshold"]

DEFAULT_MIN_CONTRIBUTORS: Final = 11
"""k: a cell with fewer true contributors is released with probability at most beta."""
DEFAULT_FALSE_RELEASE_BOUND: Final = 1e-3
"""beta: the bound on releasing a cell of fewer than k true contributors."""


def release_threshold(
    *,
    noise_std: float,
    min_contributors: int = DEFAULT_MIN_CONTRIBUTORS,
    false_release_bound: float = DEFAULT_FALSE_RELEASE_BOUND,
) -> float:
    """The noisy-count threshold ``T = (k - 1) + s * Phi^-1(1 - beta)`` (module docstring).

    ``noise_std`` is s, the std of the Gaussian noise on the count; ``min_contributors``
    is k; ``false_release_bound`` is beta. A cell is released when its noisy count is at
    least T. The noise must be positive: without it a cell of exactly k - 1 would reach
    T every time.

    >>> round(release_threshold(noise_std=10.0, min_contributors=11, false_release_bound=1e-3), 2)
    40.9
    >>> round(release_threshold(noise_std=2.0), 2)  # the defaults: k = 11, beta = 1e-3
    16.18
    """
    if not math.isfinite(noise_std) or noise_std <= 0:
        raise ValueError(f"noise_std must be a positive finite number, got {noise_std!r}")
    if isinstance(min_contributors, bool) or not isinstance(min_contributors, int):
        raise ValueError(f"min_contributors must be an integer, got {min_contributors!r}")
    if min_contributors < 1:
        raise ValueError(f"min_contributors must be at least 1, got {min_contributors!r}")
    if not 0 < false_release_bound < 0.5:
        raise ValueError(f"false_release_bound must be in (0, 0.5), got {false_release_bound!r}")
    z = NormalDist().inv_cdf(1.0 - false_release_bound)
    return (min_contributors - 1) + noise_std * z

"""Renyi DP of a Poisson-subsampled mechanism with symmetric noise, at fixed orders.

dp-accounting's ``RdpAccountant`` knows the subsampled Gaussian only. This module gives
the subsampled curve of any additive mechanism whose noise distribution is symmetric
(Gaussian, Laplace, discrete Gaussian, Skellam) from its unsampled RDP bound eps(l) at
integer orders, so it composes with the Gaussian curves by adding vectors.

Setting. Each user enters a release with probability q; for a fixed sample of the other
users the output has law P without the user and M = (1 - q) P + q Q with them, where Q is
P shifted by the user's contribution z. (The other users' inclusion and everyone's
rounding make both sides mixtures over such pairs; exp((a - 1) D_a) is jointly convex,
so the worst fixed pair bounds them.) Renyi DP needs both D_a(M || P) and D_a(P || M).

1. Removal, integer a >= 2. With r = Q/P, E_P[(M/P)^a] = E_P[(1 - q + q r)^a] expands
   binomially into sum_l C(a, l) (1 - q)^(a-l) q^l E_P[r^l], and E_P[r^l] =
   exp((l - 1) D_l(Q || P)) <= exp((l - 1) eps(l)). So (a - 1) D_a(M || P) is at most

       log[(1 - q)^(a-1) (1 + (a - 1) q) + sum_{l=2..a} C(a, l) (1 - q)^(a-l) q^l e^((l-1) eps(l))],

   the expression of Zhu & Wang 2019 ("Poisson Subsampled Renyi Differential Privacy",
   ICML; their general lower bound, exact for the Gaussian, as dp-accounting computes it).

2. Addition. If a bijection T of the outputs maps P to Q and Q to P (for additive noise
   with a symmetric law, T(y) = z - y), then D_a(P || M) <= D_a(M || P) for every real
   a > 1 and q in [0, 1]. Proof: symmetry gives E_P[g(r)] = E_P[r g(1/r)] for all g >= 0,
   so with A = 1 - q + q r and B = 1 - q + q / r,
   E_P[(M/P)^a] = E_P[(A^a + r B^a) / 2] and E_M[(P/M)^a] = E_P[A^(1-a)] =
   E_P[(A^(1-a) + r B^(1-a)) / 2]; it suffices that f(A) + r f(B) >= 0 pointwise, where
   f(x) = x^a - x^(1-a). Let G(h) = f(1 + h) / h, the slope of the chord of f from 1 to
   1 + h. With u = q (r - 1), A = 1 + u and B = 1 - u / r. For r > 1 put s = u / r and for
   r < 1 put s = -u; in both cases s lies in (0, q) and the claim reads
   G(qs / (q - s)) >= G(-s). Now f''(x) = a (a - 1) (x^(a-2) - x^(-a-1)) >= 0 for x >= 1,
   so G is nondecreasing on (0, inf), and qs / (q - s) >= s / (1 - s); finally
   G(s / (1 - s)) = G(-s) since (1 - s) f(1 / (1 - s)) + f(1 - s) = 0. QED. (This is the
   generalisation, to any symmetric pair, of what Mironov, Talwar and Zhang 2019 show for
   the sampled Gaussian; the general bound of Zhu & Wang 2019 that distributed_dp ports,
   ``accounting_utils._compute_rdp_subsampled``, pays a factor 3 on the l >= 3 terms
   instead, which costs 15-35% in epsilon at noise multipliers near 1.)

3. Fractional orders. a -> log E[(M/P)^a] is a cumulant generating function, so
   (a - 1) D_a is convex in a and zero at a = 1: between integers k < a < k + 1,
   (a - 1) D_a <= (k + 1 - a) (k - 1) D_k + (a - k) k D_{k+1}, and D_a <= D_2 for a < 2.
   By 2 the same value bounds D_a(P || M).

4. Joint convexity also gives D_a(M || P) <= D_a(Q || P): the curve never exceeds eps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["symmetric_subsampled_rdp"]


def _log_binomials(top: int) -> npt.NDArray[np.float64]:
    log_factorial: npt.NDArray[np.float64] = np.array(
        [math.lgamma(k + 1) for k in range(top + 1)], dtype=np.float64
    )
    return log_factorial


def _integer_order(
    order: int, q: float, eps: npt.NDArray[np.float64], log_factorial: npt.NDArray[np.float64]
) -> float:
    # Part 1 in log space: log of the bracket, divided by (order - 1).
    ell = np.arange(2, order + 1)
    log_choose = log_factorial[order] - log_factorial[ell] - log_factorial[order - ell]
    terms = log_choose + (order - ell) * math.log1p(-q) + ell * math.log(q) + (ell - 1) * eps[ell]
    head = (order - 1) * math.log1p(-q) + math.log1p((order - 1) * q)
    total = float(np.logaddexp.reduce(np.append(terms, head)))
    return total / (order - 1)


def symmetric_subsampled_rdp(
    base_rdp: Callable[[int], float], *, sampling_rate: float, orders: Sequence[float]
) -> npt.NDArray[np.float64]:
    """The RDP curve, at ``orders``, of a symmetric mechanism under Poisson sampling rate q.

    ``base_rdp(l)`` must bound D_l(Q || P) over all neighbouring pairs at every integer
    l >= 2, and each pair must be symmetric (see the module docstring for the conditions
    and the proof). At q = 1 the curve is ``base_rdp`` at integer orders, interpolated at
    fractional ones. Orders must exceed 1; fractional orders use the integers around them.

    >>> curve = symmetric_subsampled_rdp(lambda a: a / 2.0, sampling_rate=0.01, orders=[2, 8])
    >>> [round(float(v), 6) for v in curve]  # the sampled Gaussian at sigma = 1
    [0.000172, 0.000894]
    """
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    alphas = np.asarray(orders, dtype=np.float64)
    if alphas.ndim != 1 or alphas.size == 0 or not (np.isfinite(alphas) & (alphas > 1)).all():
        raise ValueError("orders must be a non-empty sequence of finite numbers above 1")
    top = max(2, math.ceil(float(alphas.max())))
    eps = np.full(top + 1, np.nan)
    for ell in range(2, top + 1):
        eps[ell] = base_rdp(ell)
    if np.isnan(eps[2:]).any() or (eps[2:] < 0).any():
        raise ValueError("base_rdp must return non-negative numbers (inf allowed)")
    needed = sorted({k for a in alphas for k in (math.floor(a), math.ceil(a)) if k >= 2})
    integer_rdp = {1: 0.0}
    log_factorial = _log_binomials(top)
    for k in needed:
        bound = float(eps[k])
        if sampling_rate < 1 and math.isfinite(bound):
            bound = min(bound, _integer_order(k, sampling_rate, eps, log_factorial))
        integer_rdp[k] = bound
    curve = np.empty(alphas.size, dtype=np.float64)
    for i, alpha in enumerate(alphas.tolist()):
        low = max(1, math.floor(alpha))
        if low == alpha:
            curve[i] = integer_rdp[low]
            continue
        high = low + 1
        weight = high - alpha
        cgf = weight * (low - 1) * integer_rdp[low] + (1 - weight) * (high - 1) * integer_rdp[high]
        curve[i] = cgf / (alpha - 1)
    return curve

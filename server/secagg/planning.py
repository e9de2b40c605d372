"""How the server picks a round's graph, threshold and survivor floor (Bell et al. 2020, §3-4).

Assumptions the choice is made for: at most a fraction ``delta`` of the sampled devices
drop out during the round, and at most a fraction ``gamma`` are controlled by someone
colluding with the server; both sets are fixed before the server draws the ring.

Complete graph (``d = n - 1``), used up to ``max_complete`` devices: with
``D = floor(delta * n)``, ``t = max(floor(d / 2) + 1, d - D)`` and
``min_survivors = t + 1``. Every survivor then has at least ``t`` surviving neighbours,
so up to ``D`` dropouts never stop the round; no failure probability is involved.

Harary graph ``H(n, d)`` over a random ring, above that: the smallest even ``d`` for
which some strict-majority ``t`` passes both bounds below, with the largest such ``t``
(more shares needed means more colluders needed). A node's neighbours are a uniformly
random ``d``-subset of the others, so with ``C = floor(gamma * n)``:

- correctness: ``n * P[Hyp(n - 1, D, d) > d - t] <= 2**-correctness_bits`` (every node
  keeps ``t`` surviving neighbours, so every needed secret can be rebuilt);
- security: ``n * P[Hyp(n - 1, C, d) >= t]`` (some honest node has ``t`` colluding
  neighbours, who could rebuild its secrets) plus ``n * P[d/2 ring-consecutive nodes are
  all colluding or dropped]`` (the honest survivors' graph could split, and the server
  learn the sum of a part) is at most ``2**-security_bits``. Union bounds, so conservative.

``min_survivors`` is then ``n - D``: the server aborts below it, and distributed noise
is calibrated for it. Example degrees (``gamma = 0.2``, ``delta = 1/3``, 40 and 20 bits):
n = 200 -> d = 112, t = 57; n = 500 -> d = 184, t = 93; n = 1000 -> d = 236, t = 119.

>>> choice = choose_graph(10)
>>> choice.degree, choice.threshold, choice.min_survivors
(9, 6, 7)
>>> choose_graph(500).degree < 499
True
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from client_sdk.secagg import RoundParams, random_ring

__all__ = [
    "DEFAULT_COLLUSION_FRACTION",
    "DEFAULT_DROPOUT_FRACTION",
    "GraphChoice",
    "choose_graph",
    "plan_round",
]

DEFAULT_DROPOUT_FRACTION: Final = 1 / 3
DEFAULT_COLLUSION_FRACTION: Final = 0.2
DEFAULT_SECURITY_BITS: Final = 40
DEFAULT_CORRECTNESS_BITS: Final = 20
DEFAULT_MAX_COMPLETE: Final = 128


@dataclass(frozen=True, slots=True)
class GraphChoice:
    """A degree, threshold and survivor floor, with the bounds they were chosen under."""

    degree: int
    threshold: int
    min_survivors: int
    security_log2: float
    """log2 of the bound on a privacy failure (``-inf`` when there is none)."""
    correctness_log2: float
    """log2 of the bound on an abort with at most ``delta * n`` dropouts (``-inf``: never)."""


def _log2(value: Fraction) -> float:
    return -math.inf if value == 0 else math.log2(value)


def _hypergeometric_upper_tails(population: int, marked: int, draws: int) -> list[Fraction]:
    """``tails[k] = P[X >= k]`` for ``X ~ Hyp(population, marked, draws)``, exactly."""
    total = math.comb(population, draws)
    weights = [
        math.comb(marked, x) * math.comb(population - marked, draws - x) for x in range(draws + 1)
    ]
    tails = [Fraction(0)] * (draws + 2)
    running = 0
    for x in range(draws, -1, -1):
        running += weights[x]
        tails[x] = Fraction(running, total)
    return tails


def _run_bound(n: int, removed: int, run: int) -> Fraction:
    """Union bound on ``run`` ring-consecutive positions all among ``removed`` random ones."""
    probability = Fraction(n)
    for i in range(run):
        probability *= Fraction(max(removed - i, 0), n - i)
    return probability


def choose_graph(
    n: int,
    *,
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION,
    collusion_fraction: float = DEFAULT_COLLUSION_FRACTION,
    security_bits: int = DEFAULT_SECURITY_BITS,
    correctness_bits: int = DEFAULT_CORRECTNESS_BITS,
    max_complete: int = DEFAULT_MAX_COMPLETE,
) -> GraphChoice:
    """The graph degree, threshold and survivor floor for ``n`` devices (module docstring)."""
    if n < 3:
        raise ValueError(f"secure aggregation needs at least 3 devices, got {n}")
    if not 0 <= dropout_fraction < 0.5 or not 0 <= collusion_fraction < 0.5:
        raise ValueError("dropout and collusion fractions must be in [0, 0.5)")
    dropped = math.floor(dropout_fraction * n)
    colluding = math.floor(collusion_fraction * n)
    if n > max_complete:
        security_target = Fraction(1, 2**security_bits)
        correctness_target = Fraction(1, 2**correctness_bits)
        for degree in range(4, n - 1, 2):
            dropout_tails = _hypergeometric_upper_tails(n - 1, dropped, degree)
            threshold = next(
                (
                    t
                    for t in range(degree, degree // 2, -1)
                    if n * dropout_tails[degree - t + 1] <= correctness_target
                ),
                None,
            )
            if threshold is None:
                continue
            collusion = n * _hypergeometric_upper_tails(n - 1, colluding, degree)[threshold]
            security = collusion + _run_bound(n, colluding + dropped, degree // 2)
            if security <= security_target:
                return GraphChoice(
                    degree=degree,
                    threshold=threshold,
                    min_survivors=max(n - dropped, threshold + 1),
                    security_log2=_log2(security),
                    correctness_log2=_log2(n * dropout_tails[degree - threshold + 1]),
                )
    degree = n - 1
    threshold = max(degree // 2 + 1, degree - dropped)
    return GraphChoice(
        degree=degree,
        threshold=threshold,
        min_survivors=threshold + 1,
        security_log2=-math.inf,
        correctness_log2=-math.inf,
    )


def plan_round(
    node_ids: Collection[int],
    *,
    run_id: int,
    round_label: str,
    modulus_bits: int,
    vector_length: int,
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION,
    collusion_fraction: float = DEFAULT_COLLUSION_FRACTION,
    max_complete: int = DEFAULT_MAX_COMPLETE,
) -> RoundParams:
    """The parameters of a round over ``node_ids``: a fresh random ring and :func:`choose_graph`.

    ``round_label`` must be unique within the run (e.g. ``"train/3"``): it is part of
    the context every key and share is bound to.
    """
    choice = choose_graph(
        len(node_ids),
        dropout_fraction=dropout_fraction,
        collusion_fraction=collusion_fraction,
        max_complete=max_complete,
    )
    return RoundParams(
        run_id=run_id,
        round_label=round_label,
        ring=random_ring(node_ids),
        degree=choice.degree,
        threshold=choice.threshold,
        min_survivors=choice.min_survivors,
        modulus_bits=modulus_bits,
        vector_length=vector_length,
    )

"""The neighbour graph: complete, or a Harary graph over a random ring (Bell et al. 2020).

A round's graph is given by a ring (the sampled node ids in an order the server drew at
random) and a degree ``d``. With ``d = n - 1`` the graph is complete. Otherwise ``d`` is
even and each node is linked to the ``d / 2`` nodes on either side of it on the ring:
the Harary graph ``H(n, d)`` with a random labelling, as in SecAgg+. Every device gets
the whole ring, so each one computes the same graph and no server-made neighbour list
has to be trusted.

>>> ring = (50, 10, 40, 20, 30)
>>> neighbours(ring, degree=2, node_id=40)
(10, 20)
>>> neighbours(ring, degree=4, node_id=40)
(10, 20, 30, 50)
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence

__all__ = ["check_degree", "neighbours", "random_ring"]


def check_degree(n: int, degree: int) -> None:
    """Raise ``ValueError`` unless ``degree`` is a valid degree for ``n`` nodes.

    Valid: ``n - 1`` (complete), or an even number from 2 to ``n - 2`` (Harary).
    """
    if n < 2:
        raise ValueError(f"a graph needs at least 2 nodes, got {n}")
    if degree == n - 1:
        return
    if degree < 2 or degree % 2 or degree > n - 2:
        raise ValueError(
            f"degree {degree} is neither n - 1 = {n - 1} (complete) nor even in [2, {n - 2}]"
        )


def neighbours(ring: Sequence[int], *, degree: int, node_id: int) -> tuple[int, ...]:
    """The neighbours of ``node_id`` (never itself), sorted by node id."""
    n = len(ring)
    check_degree(n, degree)
    try:
        position = ring.index(node_id)
    except ValueError:
        raise ValueError(f"node {node_id} is not in the ring") from None
    if degree == n - 1:
        return tuple(sorted(node for node in ring if node != node_id))
    half = degree // 2
    linked = {ring[(position + offset) % n] for offset in range(-half, half + 1) if offset}
    return tuple(sorted(linked))


def random_ring(node_ids: Iterable[int]) -> tuple[int, ...]:
    """The node ids in a uniformly random order drawn from the OS's CSPRNG."""
    ring = list(node_ids)
    secrets.SystemRandom().shuffle(ring)
    return tuple(ring)

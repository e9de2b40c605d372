"""The graph and parameters the server picks, and the bound that keeps the sum from wrapping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from client_sdk.secagg import check_degree, neighbours, random_ring, sum_fits_modulus
from server.secagg import choose_graph, plan_round
from tests.secagg.harness import Federation


@pytest.mark.parametrize("n", [3, 4, 10, 50, 128])
def test_small_cohorts_get_a_complete_graph_tolerating_a_third_dropping_out(n: int) -> None:
    choice = choose_graph(n)

    assert choice.degree == n - 1
    assert 2 * choice.threshold > choice.degree
    survivors_each_sees = choice.min_survivors - 1
    assert survivors_each_sees >= choice.threshold
    if n >= 10:
        assert n - choice.min_survivors == math.floor(n / 3)


@pytest.mark.parametrize("n", [129, 200, 500, 1000])
def test_large_cohorts_get_a_sparse_graph_within_the_stated_bounds(n: int) -> None:
    choice = choose_graph(n)

    assert choice.degree < n - 1 and choice.degree % 2 == 0
    assert 2 * choice.threshold > choice.degree
    assert choice.security_log2 <= -40 and choice.correctness_log2 <= -20
    assert choice.min_survivors == n - math.floor(n / 3)
    smaller = choose_graph(n, dropout_fraction=0.1)
    assert smaller.degree <= choice.degree


def test_the_degree_grows_slowly_with_the_cohort() -> None:
    degrees = [choose_graph(n).degree for n in (200, 500, 1000)]
    assert degrees == sorted(degrees) and degrees[-1] < 300


def test_choose_graph_refuses_impossible_settings() -> None:
    with pytest.raises(ValueError):
        choose_graph(2)
    with pytest.raises(ValueError):
        choose_graph(100, dropout_fraction=0.5)


@pytest.mark.parametrize(("n", "degree"), [(9, 8), (9, 4), (200, 112)])
def test_the_graph_is_symmetric_and_regular(n: int, degree: int) -> None:
    ring = random_ring(range(1000, 1000 + n))
    adjacency = {node: neighbours(ring, degree=degree, node_id=node) for node in ring}

    assert sorted(ring) == list(range(1000, 1000 + n))
    assert all(len(peers) == degree and node not in peers for node, peers in adjacency.items())
    assert all(node in adjacency[peer] for node, peers in adjacency.items() for peer in peers)


@pytest.mark.parametrize(("n", "degree"), [(5, 3), (5, 5), (5, 0), (10, 10)])
def test_invalid_degrees_are_refused(n: int, degree: int) -> None:
    with pytest.raises(ValueError):
        check_degree(n, degree)


def test_plan_round_draws_a_fresh_ring_each_time() -> None:
    nodes = list(range(1, 301))
    first = plan_round(nodes, run_id=1, round_label="a", modulus_bits=32, vector_length=10)
    second = plan_round(nodes, run_id=1, round_label="a", modulus_bits=32, vector_length=10)

    assert sorted(first.ring) == nodes and first.ring != second.ring
    assert first.degree == choose_graph(300).degree


def test_the_sum_equals_the_integer_sum_exactly_up_to_the_overflow_bound() -> None:
    """n * max_value < 2**k: the modular sum is the integer sum; one more and it wraps."""
    n, bits = 5, 8
    fed = Federation(n, vector_length=3, modulus_bits=bits, seed=99)
    edge = (2**bits - 1) // n  # 51: 5 * 51 = 255 < 256
    at_edge = {node: np.full(3, edge, dtype=np.uint64) for node in fed.devices}
    over = dict(at_edge)
    over[next(iter(over))] = np.full(3, edge + 1, dtype=np.uint64)  # 256 wraps to 0

    exact = fed.run(at_edge)
    wrapped = fed.run(over)

    assert sum_fits_modulus(count=n, max_value=edge, modulus_bits=bits)
    assert not sum_fits_modulus(count=n, max_value=edge + 1, modulus_bits=bits)
    assert exact.total is not None and exact.total.tolist() == [n * edge] * 3 == [255] * 3
    assert wrapped.total is not None and wrapped.total.tolist() == [0] * 3

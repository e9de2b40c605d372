"""The unmasked sum is exactly the survivors' sum, whoever drops out and whenever."""

from __future__ import annotations

import numpy as np
import pytest

from tests.secagg.harness import Federation, Outcome, Round, drop_some, random_vectors


def clear_sum(outcome: Outcome, vectors: dict[int, np.ndarray], modulus_bits: int) -> list[int]:
    survivors = outcome.server.survivors
    totals = [0] * len(next(iter(vectors.values())))
    for node in survivors:
        for i, value in enumerate(vectors[node]):
            totals[i] += int(value)
    return [value % (1 << modulus_bits) for value in totals]


@pytest.mark.parametrize("n", [3, 10, 50, pytest.param(200, marks=pytest.mark.slow)])
def test_sum_is_exact_when_devices_drop_out_after_sharing_keys(n: int) -> None:
    """0%, 10% and 30% drop out after key sharing: one round forked after stage 2."""
    fed = Federation(n, vector_length=8, modulus_bits=32, seed=n)
    vectors = random_vectors(fed.devices, length=8, modulus_bits=32, seed=n)
    shared = Round(fed, fed.params())
    shared.advertise()
    shared.share_keys()

    for fraction in (0.0, 0.1, 0.3):
        dropped = drop_some(fed.devices, fraction, seed=n)
        branch = shared.fork()
        branch.masked_input(vectors, drop=dropped)
        branch.unmask()
        outcome = branch.finish()

        assert outcome.aborted is None and not outcome.refusals and not outcome.rejected
        assert len(dropped) == int(fraction * n)
        assert outcome.server.survivors == set(fed.devices) - dropped
        assert outcome.total is not None
        assert outcome.total.tolist() == clear_sum(outcome, vectors, 32)
        assert outcome.total.tolist() == [
            sum(int(vectors[node][i]) for node in fed.devices if node not in dropped)
            for i in range(8)
        ]


@pytest.mark.parametrize("stage", ["advertise", "share-keys", "unmask"])
def test_sum_is_exact_when_devices_drop_out_at_another_stage(stage: str) -> None:
    fed = Federation(50, vector_length=8, modulus_bits=32, seed=5)
    vectors = random_vectors(fed.devices, length=8, modulus_bits=32, seed=5)
    dropped = drop_some(fed.devices, 0.3, seed=5)

    outcome = fed.run(vectors, drop={stage: dropped})

    assert outcome.aborted is None and outcome.total is not None
    expected_survivors = set(fed.devices) if stage == "unmask" else set(fed.devices) - dropped
    assert outcome.server.survivors == expected_survivors
    assert outcome.total.tolist() == clear_sum(outcome, vectors, 32)


def test_sum_is_exact_with_dropouts_at_every_stage_on_a_sparse_graph() -> None:
    fed = Federation(40, vector_length=8, modulus_bits=20, seed=8)
    params = fed.params(degree=16, threshold=9, min_survivors=30)
    vectors = random_vectors(fed.devices, length=8, modulus_bits=20, seed=8)
    nodes = list(params.ring)

    outcome = fed.run(
        vectors,
        params=params,
        drop={
            "advertise": {nodes[0]},
            "share-keys": {nodes[10], nodes[11]},
            "masked-input": {nodes[20], nodes[21], nodes[30]},
            "unmask": {nodes[5], nodes[25]},
        },
    )

    assert not params.is_complete
    assert outcome.aborted is None and outcome.total is not None
    assert len(outcome.server.survivors) == 34
    assert outcome.total.tolist() == clear_sum(outcome, vectors, 20)


def test_sum_is_exact_with_full_64_bit_words() -> None:
    fed = Federation(6, vector_length=5, modulus_bits=64, seed=64)
    vectors = random_vectors(fed.devices, length=5, modulus_bits=64, seed=64)

    outcome = fed.run(vectors, drop={"masked-input": {next(iter(fed.devices))}})

    assert outcome.total is not None
    assert outcome.total.tolist() == clear_sum(outcome, vectors, 64)

"""Conditional randomized rounding keeps its norm bounds; residues mod 2^k round-trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.errors import PrivacyError
from privacy.quantization import (
    conditional_round,
    from_modular,
    lattice_bounds,
    to_modular,
)

TAIL = 1e-6


@st.composite
def clipped_vectors(draw: st.DrawFn) -> tuple[np.ndarray, float, float]:
    """(vector, norm bound, beta): vectors of norm <= the bound, some of them exactly at it."""
    dimension = draw(st.sampled_from([1, 2, 3, 7, 40, 1441]))
    bound = draw(st.floats(min_value=0.3, max_value=5e4))
    seed = draw(st.integers(0, 2**32 - 1))
    shape = draw(st.sampled_from(["spread", "spike", "grid"]))
    fill = draw(st.floats(min_value=0.0, max_value=1.0))
    beta = draw(st.sampled_from([0.0, 0.1, math.exp(-0.5), 0.9]))
    rng = np.random.default_rng(seed)
    if shape == "spike":  # all the norm on one coordinate: the largest coordinate possible
        vector = np.zeros(dimension)
        vector[rng.integers(dimension)] = bound * fill * rng.choice([-1.0, 1.0])
    elif shape == "grid":  # halves: every coordinate is a coin flip of the rounding
        vector = rng.choice([-0.5, 0.5], size=dimension)
        vector *= min(1.0, bound * fill / float(np.linalg.norm(vector)))
    else:
        vector = rng.normal(size=dimension)
        vector *= bound * fill / float(np.linalg.norm(vector))
    return vector, bound, beta


@settings(max_examples=300, deadline=None)
@given(case=clipped_vectors(), seed=st.integers(0, 2**32 - 1))
def test_rounded_vector_never_exceeds_its_l2_and_l1_bounds(
    case: tuple[np.ndarray, float, float], seed: int
) -> None:
    vector, bound, beta = case
    bounds = lattice_bounds(l2_norm=bound, dimension=vector.size, beta=beta)

    rounded = conditional_round(
        vector, max_square=bounds.max_square, rng=np.random.default_rng(seed)
    )

    exact_square = sum(v * v for v in rounded.tolist())
    assert exact_square <= bounds.max_square
    assert math.sqrt(exact_square) <= bounds.l2
    assert sum(abs(v) for v in rounded.tolist()) <= bounds.l1
    assert (np.abs(rounded - vector) < 1).all()  # floor or ceil, never further


def test_bounds_tighten_with_beta_and_never_exceed_the_deterministic_one() -> None:
    loose = lattice_bounds(l2_norm=100.0, dimension=1441, beta=0.0)
    tight = lattice_bounds(l2_norm=100.0, dimension=1441, beta=math.exp(-0.5))

    # sqrt of the largest integer square below (100 + sqrt(d))^2: within 1/138 of it.
    deterministic = 100.0 + math.sqrt(1441)
    assert deterministic - 0.01 < loose.l2 <= deterministic * (1 + 1e-12)
    assert 100.0 < tight.l2 < loose.l2


def test_plain_stochastic_rounding_is_unbiased() -> None:
    rng = np.random.default_rng(21)
    vector = np.array([0.3, -1.7, 2.5, 0.0, -0.01])
    draws = np.array([conditional_round(vector, max_square=10**6, rng=rng) for _ in range(40_000)])

    # Each coordinate is floor + Bernoulli(frac): standard error sqrt(frac (1 - frac) / n).
    standard_error = np.sqrt(0.25 / draws.shape[0])
    assert (np.abs(draws.mean(axis=0) - vector) < 5.5 * standard_error).all()


def test_rounding_does_not_modify_its_input() -> None:
    vector = np.array([0.25, 1.75, -3.5])
    before = vector.copy()

    conditional_round(vector, max_square=100, rng=np.random.default_rng(0))

    assert np.array_equal(vector, before)


def test_an_input_beyond_the_bound_is_refused_after_bounded_tries() -> None:
    with pytest.raises(PrivacyError):
        conditional_round([10.0, 10.0], max_square=100, rng=np.random.default_rng(0))


@pytest.mark.parametrize("values", [[], [[1.0, 2.0]], [math.nan], [math.inf], [2.0**63]], ids=str)
def test_rounding_refuses_bad_vectors(values: list[float] | list[list[float]]) -> None:
    with pytest.raises(ValueError):
        conditional_round(values, max_square=10, rng=np.random.default_rng(0))


@pytest.mark.parametrize("kwargs", [{"l2_norm": 0.0}, {"l2_norm": math.inf}, {"dimension": 0}])
def test_bounds_refuse_bad_arguments(kwargs: dict[str, float]) -> None:
    arguments: dict[str, float] = {"l2_norm": 1.0, "dimension": 3, "beta": 0.5} | kwargs
    with pytest.raises(ValueError):
        lattice_bounds(**arguments)  # type: ignore[arg-type]


@given(
    bits=st.integers(8, 53),
    values=st.lists(st.integers(-(2**62), 2**62 - 1), min_size=1, max_size=20),
)
def test_residues_are_below_the_modulus_and_sums_commute_with_them(
    bits: int, values: list[int]
) -> None:
    residues = to_modular(np.array(values, dtype=np.int64), bits=bits)

    assert residues.dtype == np.uint64
    assert (residues < 2**bits).all()
    assert int(residues.astype(object).sum()) % 2**bits == sum(values) % 2**bits


@given(bits=st.integers(8, 53), data=st.data())
def test_signed_values_in_range_round_trip_and_the_edges_wrap(
    bits: int, data: st.DataObject
) -> None:
    half = 2 ** (bits - 1)
    values = data.draw(st.lists(st.integers(-half, half - 1), min_size=1, max_size=20))

    decoded = from_modular(to_modular(np.array(values, dtype=np.int64), bits=bits), bits=bits)

    assert decoded.tolist() == values
    edges = to_modular(np.array([half - 1, half, -half - 1], dtype=np.int64), bits=bits)
    assert from_modular(edges, bits=bits).tolist() == [half - 1, -half, half - 1]


@pytest.mark.parametrize("bits", [7, 54, True])
def test_modulus_outside_the_supported_range_is_refused(bits: int) -> None:
    with pytest.raises(ValueError):
        to_modular(np.array([1]), bits=bits)


def test_decoding_refuses_floats_and_out_of_range_residues() -> None:
    with pytest.raises(ValueError):
        from_modular(np.array([1.5]), bits=8)
    with pytest.raises(ValueError):
        from_modular(np.array([256], dtype=np.uint64), bits=8)
    with pytest.raises(ValueError):
        to_modular(np.array([1.5]), bits=8)

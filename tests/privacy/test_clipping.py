"""L2 clipping of model updates, for numpy arrays and torch tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from privacy import clip_factors, clip_update, update_norm

float_arrays = st.sampled_from([np.float32, np.float64]).flatmap(
    lambda dtype: arrays(
        dtype,
        array_shapes(min_dims=1, max_dims=3, max_side=6),
        elements=st.floats(-1e6, 1e6, allow_nan=False, width=32),
    )
)
updates = st.lists(float_arrays, min_size=1, max_size=4)
norms = st.floats(1e-3, 1e3)


@settings(max_examples=300, deadline=None)
@given(update=updates, max_norm=norms)
def test_a_clipped_update_never_exceeds_the_clipping_norm(
    update: list[np.ndarray], max_norm: float
) -> None:
    clipped, original = clip_update(update, max_norm=max_norm)

    assert update_norm(clipped) <= max_norm
    assert original == update_norm(update)
    assert [(c.shape, c.dtype) for c in clipped] == [(u.shape, u.dtype) for u in update]


@settings(max_examples=200, deadline=None)
@given(update=updates, max_norm=norms)
def test_clipping_only_rescales_and_keeps_the_direction(
    update: list[np.ndarray], max_norm: float
) -> None:
    clipped, original = clip_update(update, max_norm=max_norm)

    expected = min(original, max_norm)
    assert update_norm(clipped) == pytest.approx(expected, rel=1e-5, abs=1e-30)
    if original > 0:
        flat_in = np.concatenate([u.ravel() for u in update]).astype(np.float64)
        flat_out = np.concatenate([c.ravel() for c in clipped]).astype(np.float64)
        cosine = flat_in @ flat_out / (np.linalg.norm(flat_in) * np.linalg.norm(flat_out) or 1)
        assert cosine == pytest.approx(1.0, abs=1e-5) or update_norm(clipped) == 0


def test_an_update_within_the_norm_comes_back_unchanged() -> None:
    update = [np.array([0.3, -0.4], dtype=np.float32), np.array([[0.0]])]

    clipped, original = clip_update(update, max_norm=1.0)

    assert original == pytest.approx(0.5)
    assert all(c is u for c, u in zip(clipped, update, strict=True))


def test_the_norm_is_taken_across_all_arrays_together() -> None:
    update = [np.array([3.0]), np.array([4.0])]  # each within 4.5, together 5

    clipped, original = clip_update(update, max_norm=4.5)

    assert original == 5.0
    assert update_norm(clipped) == pytest.approx(4.5)
    assert clipped[0][0] / clipped[1][0] == pytest.approx(0.75)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_update_is_replaced_by_zeros(bad: float) -> None:
    update = [np.array([1.0, bad], dtype=np.float32), np.ones((2, 2))]

    clipped, original = clip_update(update, max_norm=1.0)

    assert original == math.inf
    assert all(not c.any() for c in clipped)
    assert [(c.shape, c.dtype) for c in clipped] == [(u.shape, u.dtype) for u in update]


def test_torch_tensors_are_clipped_as_tensors() -> None:
    update = [torch.full((3, 4), 2.0), torch.ones(5, dtype=torch.float64)]

    clipped, original = clip_update(update, max_norm=1.0)

    assert all(isinstance(c, torch.Tensor) for c in clipped)
    assert [c.dtype for c in clipped] == [torch.float32, torch.float64]
    assert original == pytest.approx(math.sqrt(12 * 4 + 5))
    assert update_norm(clipped) <= 1.0


def test_a_non_finite_torch_update_is_replaced_by_zeros() -> None:
    update = [torch.tensor([1.0, float("nan")]), torch.ones(3)]

    clipped, original = clip_update(update, max_norm=1.0)

    assert original == math.inf
    assert all(isinstance(c, torch.Tensor) and not c.any() for c in clipped)


def test_huge_finite_entries_are_clipped_without_overflow() -> None:
    update = [np.array([1e200, -1e200]), np.array([3e199])]

    clipped, original = clip_update(update, max_norm=2.0)

    assert math.isfinite(original) and original > 1e200
    assert 1.99 < update_norm(clipped) <= 2.0


def test_the_clipping_norm_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_norm"):
        clip_update([np.ones(2)], max_norm=0.0)


norm_batches = st.sampled_from([np.float32, np.float64]).flatmap(
    lambda dtype: arrays(
        dtype, st.integers(1, 64), elements=st.floats(0, 1e6, allow_nan=False, width=32)
    )
)


@settings(max_examples=300, deadline=None)
@given(norms=norm_batches, max_norm=norms)
def test_clip_factors_scale_each_norm_to_at_most_the_clipping_norm(
    norms: np.ndarray, max_norm: float
) -> None:
    factors = clip_factors(norms, max_norm=max_norm)

    assert factors.shape == norms.shape and factors.dtype == norms.dtype
    assert np.all((factors >= 0) & (factors <= 1))
    assert np.all(factors.astype(np.float64) * norms <= max_norm)
    assert np.all(factors[norms <= max_norm * (1 - 1e-6)] == 1)
    long = norms > max_norm
    np.testing.assert_allclose(factors[long] * norms[long], max_norm, rtol=1e-5)


@settings(max_examples=100, deadline=None)
@given(norms=norm_batches, max_norm=norms)
def test_clip_factors_of_tensors_equal_those_of_arrays(norms: np.ndarray, max_norm: float) -> None:
    from_tensor = clip_factors(torch.from_numpy(norms), max_norm=max_norm)

    assert isinstance(from_tensor, torch.Tensor)
    np.testing.assert_allclose(
        from_tensor.numpy(), clip_factors(norms, max_norm=max_norm), rtol=1e-6
    )


@pytest.mark.parametrize("kind", [np.array, torch.tensor])
def test_an_example_with_a_non_finite_or_negative_norm_gets_factor_zero(kind) -> None:  # type: ignore[no-untyped-def]
    factors = clip_factors(kind([math.nan, math.inf, -1.0, 0.0, 4.0]), max_norm=2.0)

    assert [float(f) for f in factors] == [0.0, 0.0, 0.0, 1.0, pytest.approx(0.5)]

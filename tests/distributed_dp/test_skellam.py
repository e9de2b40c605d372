"""Skellam noise: its law, its RDP bound against exact divergences, its tail bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]  # scipy ships no stubs here

from privacy.skellam import skellam_noise, skellam_rdp, skellam_tail_bound

from .reference import renyi, shifted_pair

# Two-sided tail of the statistical checks (fixed seeds make them reproducible; a correct
# implementation fails one in a million seeds).
TAIL = 1e-6


def test_noise_is_integer_with_mean_zero_and_the_requested_variance() -> None:
    draws = skellam_noise(400_000, variance=30.0, rng=np.random.default_rng(11))

    assert draws.dtype == np.int64
    n = draws.size
    statistic = (n - 1) * draws.var(ddof=1) / 30.0
    # Sk(30) is near-normal; the chi-square variance test is within its tolerance here.
    assert stats.chi2.ppf(TAIL / 2, n - 1) < statistic < stats.chi2.ppf(1 - TAIL / 2, n - 1)
    assert abs(draws.mean()) < 5.5 * math.sqrt(30.0 / n)


def test_noise_follows_the_skellam_law() -> None:
    draws = skellam_noise(200_000, variance=4.0, rng=np.random.default_rng(12))
    values, counts = np.unique(draws, return_counts=True)
    expected = stats.skellam.pmf(values, 2.0, 2.0) * draws.size
    keep = expected > 20  # chi-square goodness of fit on the well-populated cells
    statistic = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()

    assert statistic < stats.chi2.ppf(1 - TAIL, keep.sum() - 1)


def test_shares_from_t_devices_add_up_to_the_central_variance() -> None:
    rng = np.random.default_rng(13)
    shares = skellam_noise((7, 100_000), variance=3.0, rng=rng)
    total = shares.sum(axis=0)  # Sk(3) * 7 = Sk(21) exactly
    values, counts = np.unique(total, return_counts=True)
    expected = stats.skellam.pmf(values, 10.5, 10.5) * total.size
    keep = expected > 20
    statistic = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()

    assert statistic < stats.chi2.ppf(1 - TAIL, keep.sum() - 1)


def test_zero_variance_adds_nothing_and_bad_variance_is_refused() -> None:
    assert not skellam_noise(5, variance=0.0).any()
    for bad in (-1.0, math.nan, math.inf, 2.0**52):
        with pytest.raises(ValueError):
            skellam_noise(5, variance=bad)


@pytest.mark.parametrize("variance", [0.5, 1.0, 2.0, 5.0, 20.0])
@pytest.mark.parametrize("shift", [1, 2, 3])
@pytest.mark.parametrize("order", [1.5, 2, 3, 4, 7.5, 10, 20])
def test_rdp_bound_covers_the_exact_divergence_in_one_dimension(
    variance: float, shift: int, order: float
) -> None:
    log_p, log_q = shifted_pair((shift,), variance)
    exact = max(renyi(order, log_q, log_p), renyi(order, log_p, log_q))

    bound = skellam_rdp(order, variance=variance, l1_sensitivity=shift, l2_sensitivity=shift)

    assert exact <= bound
    if variance >= 20:  # the regime the platform uses (variance >> sensitivity^2): not loose
        assert exact >= 0.5 * bound


@pytest.mark.parametrize("shift", [(1, 1), (2, -1), (1, -1, 1), (3, 0, 1)])
@pytest.mark.parametrize("order", [2, 5, 12])
def test_rdp_bound_covers_vector_shifts_with_their_l1_and_l2_norms(
    shift: tuple[int, ...], order: int
) -> None:
    variance = 3.0
    # The noise is independent per coordinate, so the divergence is a sum over coordinates.
    exact = sum(renyi(order, *reversed(shifted_pair((z,), variance))) for z in shift)
    l1 = float(sum(abs(z) for z in shift))
    l2 = math.sqrt(sum(z * z for z in shift))

    assert exact <= skellam_rdp(order, variance=variance, l1_sensitivity=l1, l2_sensitivity=l2)


def test_rdp_bound_tends_to_the_gaussian_as_the_variance_grows() -> None:
    gaussian = 8 * 1.0**2 / (2 * 1e8)

    bound = skellam_rdp(8, variance=1e8, l1_sensitivity=1.0, l2_sensitivity=1.0)

    assert gaussian <= bound <= gaussian * (1 + 1e-6)


def test_rdp_refuses_orders_at_most_one_and_bad_sensitivities() -> None:
    with pytest.raises(ValueError):
        skellam_rdp(1.0, variance=1.0, l1_sensitivity=1.0, l2_sensitivity=1.0)
    with pytest.raises(ValueError):
        skellam_rdp(2, variance=1.0, l1_sensitivity=-1.0, l2_sensitivity=1.0)
    with pytest.raises(ValueError):
        skellam_rdp(2, variance=math.nan, l1_sensitivity=1.0, l2_sensitivity=1.0)


@pytest.mark.parametrize("variance", [1.0, 10.0, 1e4, 1e10])
@pytest.mark.parametrize("stds", [1.0, 3.0, 6.0, 9.0])
def test_tail_bound_is_above_the_exact_tail_and_within_a_small_factor(
    variance: float, stds: float
) -> None:
    threshold = math.ceil(stds * math.sqrt(variance))
    exact = stats.skellam.sf(threshold - 1, variance / 2, variance / 2)  # P[X >= threshold]

    bound = skellam_tail_bound(threshold, variance=variance)

    assert exact <= bound
    assert bound <= max(1e-300, 30 * stds * exact) or bound < 1e-15

"""The release threshold: its formula, and the false-release probability it promises."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from privacy import DEFAULT_FALSE_RELEASE_BOUND, DEFAULT_MIN_CONTRIBUTORS, release_threshold


def test_the_defaults_are_the_cms_cell_size_and_one_in_a_thousand() -> None:
    assert (DEFAULT_MIN_CONTRIBUTORS, DEFAULT_FALSE_RELEASE_BOUND) == (11, 1e-3)
    assert release_threshold(noise_std=10.0) == release_threshold(
        noise_std=10.0, min_contributors=11, false_release_bound=1e-3
    )


def test_the_threshold_follows_the_documented_formula() -> None:
    threshold = release_threshold(noise_std=10.0, min_contributors=11, false_release_bound=1e-3)

    assert threshold == pytest.approx(10 + 10.0 * stats.norm.isf(1e-3), rel=1e-12)


@pytest.mark.parametrize("noise_std", [0.5, 3.0, 40.0])
@pytest.mark.parametrize("k", [2, 11, 50])
@pytest.mark.parametrize("beta", [1e-6, 1e-3, 0.05])
def test_a_cell_of_k_minus_one_passes_with_probability_exactly_beta_by_the_normal_tail(
    noise_std: float, k: int, beta: float
) -> None:
    threshold = release_threshold(noise_std=noise_std, min_contributors=k, false_release_bound=beta)

    # The noisy count of k - 1 contributors is N(k - 1, s^2); it passes when >= T.
    passes = stats.norm.sf(threshold, loc=k - 1, scale=noise_std)

    assert passes == pytest.approx(beta, rel=1e-9)
    assert stats.norm.sf(threshold, loc=k - 2, scale=noise_std) < beta  # fewer: less likely


def simulated_release_rate(true_count: float, threshold: float, noise_std: float) -> float:
    rng = np.random.default_rng(20240601)
    noisy = true_count + rng.normal(0.0, noise_std, size=400_000)
    return float(np.mean(noisy >= threshold))


def test_a_simulated_cell_of_k_minus_one_is_released_at_the_promised_rate() -> None:
    k, beta, noise_std, runs = 11, 0.01, 7.0, 400_000
    threshold = release_threshold(noise_std=noise_std, min_contributors=k, false_release_bound=beta)
    tolerance = 5 * math.sqrt(beta * (1 - beta) / runs)  # five binomial standard errors

    assert abs(simulated_release_rate(k - 1, threshold, noise_std) - beta) < tolerance
    # The check can fail: one noise std less in the threshold releases far more often.
    assert simulated_release_rate(k - 1, threshold - noise_std, noise_std) > beta + 10 * tolerance
    # And a large cell is released almost always.
    assert simulated_release_rate(threshold + 4 * noise_std, threshold, noise_std) > 0.9999


@pytest.mark.parametrize(
    ("bad", "name"),
    [
        ({"noise_std": 0.0}, "noise_std"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"noise_std": math.nan}, "noise_std"),
        ({"noise_std": math.inf}, "noise_std"),
        ({"min_contributors": 0}, "min_contributors"),
        ({"min_contributors": 2.5}, "min_contributors"),
        ({"min_contributors": True}, "min_contributors"),
        ({"false_release_bound": 0.0}, "false_release_bound"),
        ({"false_release_bound": 0.5}, "false_release_bound"),
        ({"false_release_bound": math.nan}, "false_release_bound"),
    ],
)
def test_bad_parameters_are_refused_with_their_name(bad: dict[str, Any], name: str) -> None:
    arguments: dict[str, Any] = {"noise_std": 1.0, **bad}

    with pytest.raises(ValueError, match=name):
        release_threshold(**arguments)

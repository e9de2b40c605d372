"""Noise calibration for planned releases, checked against the accountants."""

from __future__ import annotations

import math
from typing import Any

import pytest

from privacy import (
    PrivacyEvent,
    epsilon_for,
    gaussian_epsilon,
    noise_multiplier_for,
)

from .conftest import DELTA, MakeAccountant
from .reference import analytic_gaussian_epsilon


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 4.0])
def test_one_release_gets_the_exact_analytic_gaussian_noise(epsilon: float) -> None:
    sigma = noise_multiplier_for(epsilon=epsilon, delta=DELTA)

    assert analytic_gaussian_epsilon(sigma, DELTA) == pytest.approx(epsilon, rel=1e-6)
    assert gaussian_epsilon(noise_multiplier=sigma, delta=DELTA) == pytest.approx(epsilon, rel=1e-6)
    # PLD accounting (pessimistic, 1e-3 grid) charges that release what was planned ...
    pld = epsilon_for(
        sampling_rate=1.0, noise_multiplier=sigma, rounds=1, delta=DELTA, method="pld"
    )
    assert epsilon - 1e-9 <= pld <= epsilon + 2e-3
    # ... RDP a little more, as the docstring says (RDP is looser for one release).
    rdp = epsilon_for(sampling_rate=1.0, noise_multiplier=sigma, rounds=1, delta=DELTA)
    assert epsilon < rdp < 1.2 * epsilon


@pytest.mark.parametrize(("method", "releases"), [("rdp", 52), ("rdp", 5), ("pld", 12)])
def test_several_releases_get_the_least_noise_the_accountant_keeps_within_epsilon(
    method: Any, releases: int
) -> None:
    sigma = noise_multiplier_for(epsilon=4.0, delta=DELTA, releases=releases, method=method)

    def charged(s: float) -> float:
        return epsilon_for(
            sampling_rate=1.0, noise_multiplier=s, rounds=releases, delta=DELTA, method=method
        )

    assert charged(sigma) <= 4.0 < charged(sigma * 0.99)


def test_planned_releases_fit_a_users_budget_in_the_accountant(
    make_accountant: MakeAccountant,
) -> None:
    releases, budget = 10, 2.0
    sigma = noise_multiplier_for(epsilon=budget, delta=DELTA, releases=releases)
    accountant = make_accountant(epsilon_budget=budget)
    release = PrivacyEvent.analytics_release(noise_multiplier=sigma)

    for week in range(releases):
        accountant.charge(["user"], release, purpose="analytics", release_id=f"w{week}")

    assert 0.99 * budget < accountant.epsilon("user") <= budget
    assert accountant.would_exceed(["user"], release) == ["user"]


@pytest.mark.parametrize(
    ("bad", "name"),
    [
        ({"releases": 0}, "releases"),
        ({"releases": 2.0}, "releases"),
        ({"releases": True}, "releases"),
        ({"method": "gdp"}, "method"),
        ({"method": "gdp", "releases": 3}, "method"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": math.inf, "releases": 3}, "epsilon"),
        ({"delta": 1.0}, "delta"),
        ({"delta": 0.0, "releases": 3}, "delta"),
    ],
)
def test_bad_parameters_are_refused_with_their_name(bad: dict[str, Any], name: str) -> None:
    arguments: dict[str, Any] = {"epsilon": 1.0, "delta": DELTA, **bad}

    with pytest.raises(ValueError, match=name):
        noise_multiplier_for(**arguments)


def test_noise_on_top_of_a_history_keeps_the_whole_history_within_the_budget() -> None:
    from privacy import history_epsilon, noise_multiplier_for

    training = {(0.02, 1.0): 30}
    sigma = noise_multiplier_for(epsilon=9.8, delta=1e-5, releases=416, after=training)

    within = history_epsilon({**training, (1.0, sigma): 416}, delta=1e-5)
    just_less = history_epsilon({**training, (1.0, sigma * 0.999): 416}, delta=1e-5)
    assert within <= 9.8 < just_less

"""RDP curves: equal to dp-accounting's RdpAccountant, close to Opacus, computed once."""

from __future__ import annotations

import math
import warnings
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant
from opacus.accountants.analysis import rdp as opacus_rdp

import privacy.rdp
from privacy import RDP_ORDERS, event_rdp, rdp_epsilon, sampled_gaussian_rdp
from privacy.rdp import check_curve, sampled_gaussian_event, zero_rdp

from .conftest import DELTA

SETTINGS = [(0.01, 1.0, 500), (0.05, 0.8, 40), (0.32, 1.0, 30), (1.0, 4.0, 3)]


def reference_curve(q: float, sigma: float, count: int) -> np.ndarray:
    event = dp_accounting.SelfComposedDpEvent(sampled_gaussian_event(q, sigma), count)
    return RdpAccountant().compose(event).rdp


@pytest.mark.parametrize(("q", "sigma", "count"), SETTINGS)
def test_a_curve_equals_dp_accountings_rdp_accountant_bit_for_bit(
    q: float, sigma: float, count: int
) -> None:
    curve = sampled_gaussian_rdp(sampling_rate=q, noise_multiplier=sigma, count=count)

    assert np.array_equal(curve, reference_curve(q, sigma, count))


def test_a_running_sum_converts_to_the_epsilon_of_composing_the_same_events() -> None:
    accountant = RdpAccountant()
    running = zero_rdp()
    for q, sigma, count in SETTINGS:
        running += sampled_gaussian_rdp(sampling_rate=q, noise_multiplier=sigma, count=count)
        event = dp_accounting.SelfComposedDpEvent(sampled_gaussian_event(q, sigma), count)
        accountant.compose(event)

        assert rdp_epsilon(running, delta=DELTA) == accountant.get_epsilon(DELTA)


@pytest.mark.parametrize(("q", "sigma", "count"), SETTINGS)
def test_a_curve_agrees_with_opacus_at_integer_orders_and_bounds_it_at_fractional_ones(
    q: float, sigma: float, count: int
) -> None:
    # Opacus computes the same sampled-Gaussian RDP (Mironov, Talwar & Zhang 2019)
    # independently. At integer orders both sum the same finite binomial series. At a
    # fractional order dp-accounting adds the infinite series' terms in absolute value
    # (Opacus subtracts the negative ones), an upper bound: never below Opacus; measured
    # up to 28% above at orders below 2 (which matter only for epsilons in the hundreds),
    # under 2% from order 2 on; inf where it cannot sum the series at all.
    ours = sampled_gaussian_rdp(sampling_rate=q, noise_multiplier=sigma, count=count)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.asarray(
            opacus_rdp.compute_rdp(
                q=q, noise_multiplier=sigma, steps=count, orders=list(RDP_ORDERS)
            )
        )
    integer = np.array([order.is_integer() for order in RDP_ORDERS])
    fractional = ~integer & np.isfinite(ours)

    np.testing.assert_allclose(ours[integer], theirs[integer], rtol=1e-9)
    assert fractional.sum() >= integer.sum()
    assert np.all(theirs[fractional] * (1 - 1e-9) <= ours[fractional])
    from_two = fractional & (np.array(RDP_ORDERS) >= 2)
    assert np.all(ours[from_two] <= theirs[from_two] * 1.02)


def test_the_one_step_curve_of_a_setting_is_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    computed: list[Any] = []
    real = privacy.rdp.event_rdp

    def counting(event: Any) -> np.ndarray:
        computed.append(event)
        return real(event)

    monkeypatch.setattr(privacy.rdp, "event_rdp", counting)
    privacy.rdp._step_rdp.cache_clear()

    first = sampled_gaussian_rdp(sampling_rate=0.02, noise_multiplier=1.1, count=10)
    first += 1.0  # the caller's copy: must not leak into the cache
    again = sampled_gaussian_rdp(sampling_rate=0.02, noise_multiplier=1.1, count=10)
    sampled_gaussian_rdp(sampling_rate=0.02, noise_multiplier=1.1, count=999)
    sampled_gaussian_rdp(sampling_rate=0.03, noise_multiplier=1.1, count=10)

    assert len(computed) == 2
    assert np.array_equal(again, reference_curve(0.02, 1.1, 10))


def test_other_mechanisms_enter_through_their_dp_accounting_event() -> None:
    # rho-zCDP is (alpha, rho * alpha)-RDP, the form of discrete Gaussian bounds.
    zcdp = event_rdp(dp_accounting.ZCDpEvent(rho=0.1))
    gaussian = sampled_gaussian_rdp(sampling_rate=1.0, noise_multiplier=2.0)

    np.testing.assert_allclose(zcdp, 0.1 * np.array(RDP_ORDERS))
    np.testing.assert_allclose(gaussian, np.array(RDP_ORDERS) / 8)  # alpha / (2 sigma^2)
    assert rdp_epsilon(zcdp + gaussian, delta=DELTA) > rdp_epsilon(gaussian, delta=DELTA)


def test_an_event_rdp_cannot_account_is_refused() -> None:
    event = dp_accounting.SampledWithoutReplacementDpEvent(
        100, 10, dp_accounting.GaussianDpEvent(1.0)
    )

    with pytest.raises(dp_accounting.UnsupportedEventError):
        event_rdp(event)


@pytest.mark.parametrize(
    "values",
    [
        [0.0] * 3,
        [[0.0] * len(RDP_ORDERS)],
        [math.nan, *[0.0] * (len(RDP_ORDERS) - 1)],
        [-1e-3, *[0.0] * (len(RDP_ORDERS) - 1)],
    ],
    ids=["short", "two-dimensional", "nan", "negative"],
)
def test_a_malformed_curve_is_refused(values: list[Any]) -> None:
    with pytest.raises(ValueError, match="RDP curve"):
        check_curve(values)
    with pytest.raises(ValueError, match="RDP curve"):
        rdp_epsilon(np.array(values, dtype=np.float64), delta=DELTA)


@pytest.mark.parametrize(
    "bad",
    [
        {"sampling_rate": 0.0, "noise_multiplier": 1.0},
        {"sampling_rate": 1.5, "noise_multiplier": 1.0},
        {"sampling_rate": 0.1, "noise_multiplier": 0.0},
        {"sampling_rate": 0.1, "noise_multiplier": math.inf},
        {"sampling_rate": 0.1, "noise_multiplier": 1.0, "count": 0},
        {"sampling_rate": 0.1, "noise_multiplier": 1.0, "count": 2.0},
    ],
)
def test_bad_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sampled_gaussian_rdp(**bad)


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, math.nan])
def test_delta_must_be_a_probability(delta: float) -> None:
    with pytest.raises(ValueError, match="delta"):
        rdp_epsilon(zero_rdp(), delta=delta)

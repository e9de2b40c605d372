"""Poisson-subsampled RDP against exact divergences of the mixture, both directions."""

from __future__ import annotations

import logging
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import rdp_privacy_accountant

from privacy.skellam import skellam_rdp
from privacy.subsampled_rdp import symmetric_subsampled_rdp

from .reference import mixture, renyi, shifted_pair

ORDERS = [1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 7.3, 10.0, 16.0]
INTEGER_ORDERS = [2, 3, 4, 6, 10, 16]


def _exact_directions(
    order: float, q: float, log_p: np.ndarray, log_q: np.ndarray
) -> tuple[float, float]:
    log_m = mixture(q, log_p, log_q)
    return renyi(order, log_m, log_p), renyi(order, log_p, log_m)


@pytest.mark.parametrize("q", [0.01, 0.1, 0.3, 0.7])
@pytest.mark.parametrize(("shift", "variance"), [((1,), 1.0), ((2,), 4.0), ((1, -1), 2.0)])
def test_bound_covers_both_directions_of_the_exact_mixture_divergence(
    q: float, shift: tuple[int, ...], variance: float
) -> None:
    log_p, log_q = shifted_pair(shift, variance, reach=60 if len(shift) > 1 else 120)
    l1 = float(sum(abs(z) for z in shift))
    l2 = math.sqrt(sum(z * z for z in shift))

    curve = symmetric_subsampled_rdp(
        lambda a: skellam_rdp(a, variance=variance, l1_sensitivity=l1, l2_sensitivity=l2),
        sampling_rate=q,
        orders=ORDERS,
    )

    for order, bound in zip(ORDERS, curve, strict=True):
        removal, addition = _exact_directions(order, q, log_p, log_q)
        assert removal <= bound and addition <= bound, (order, removal, addition, bound)


@pytest.mark.parametrize("q", [0.02, 0.2, 0.6])
@pytest.mark.parametrize(("shift", "variance"), [((1,), 0.7), ((3,), 5.0), ((2, 1), 3.0)])
def test_removal_formula_is_exact_with_the_true_divergences(
    q: float, shift: tuple[int, ...], variance: float
) -> None:
    # Fed the pair's exact D_l(Q || P), part 1 of the module is an identity, not a bound.
    log_p, log_q = shifted_pair(shift, variance, reach=60 if len(shift) > 1 else 120)

    curve = symmetric_subsampled_rdp(
        lambda a: renyi(a, log_q, log_p), sampling_rate=q, orders=INTEGER_ORDERS
    )

    exact = [_exact_directions(order, q, log_p, log_q)[0] for order in INTEGER_ORDERS]
    assert np.allclose(curve, exact, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("q", [0.001, 0.05, 0.3, 0.9])
@pytest.mark.parametrize("variance", [0.3, 1.0, 6.0])
@pytest.mark.parametrize("order", [1.2, 2, 2.7, 5, 11])
def test_addition_never_exceeds_removal_for_a_symmetric_pair(
    q: float, variance: float, order: float
) -> None:
    # Part 2 of the module (the lemma) checked on Skellam pairs, at real orders.
    log_p, log_q = shifted_pair((2,), variance)

    removal, addition = _exact_directions(order, q, log_p, log_q)

    assert addition <= removal * (1 + 1e-9) + 1e-15


def test_lemma_needs_symmetry_an_asymmetric_pair_breaks_it() -> None:
    # Without a map swapping P and Q the addition direction can be the larger one; this
    # is why the module asks for symmetric noise.
    log_p = np.log(np.array([0.7, 0.3]))
    log_q = np.log(np.array([0.99, 0.01]))

    removal, addition = _exact_directions(8, 0.9, log_p, log_q)

    assert addition > 2 * removal


def _dp_accounting_gaussian(q: float, sigma: float, orders: list[float]) -> np.ndarray:
    logging.getLogger("absl").setLevel(logging.ERROR)  # it warns about unused tiny orders
    accountant = rdp_privacy_accountant.RdpAccountant(orders=orders)
    accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)))
    return np.asarray(accountant.rdp)


def _integrated_gaussian(q: float, sigma: float, order: float) -> float:
    """D_order((1-q) N(0, s^2) + q N(1, s^2) || N(0, s^2)) by quadrature on a fine grid."""
    x = np.linspace(-40 * sigma, 40 * sigma + order / sigma**2 + 1, 400_001)
    log_density = -(x**2) / (2 * sigma**2) - math.log(sigma * math.sqrt(2 * math.pi))
    log_ratio = np.logaddexp(math.log1p(-q), math.log(q) + (2 * x - 1) / (2 * sigma**2))
    log_integrand = log_density + order * log_ratio
    peak = log_integrand.max()
    integral = np.trapezoid(np.exp(log_integrand - peak), x)
    return float((peak + math.log(integral)) / (order - 1))


@pytest.mark.parametrize("q", [0.001, 0.01, 0.2, 0.5])
@pytest.mark.parametrize("sigma", [0.7, 1.0, 3.0, 20.0])
def test_gaussian_curve_is_never_below_the_exact_subsampled_gaussian(
    q: float, sigma: float
) -> None:
    orders = [1.1, 1.5, 1.9, 2.0, 2.3, 2.5, 3.0, 3.7, 4.0, 6.5, 10.0, 10.9, 20.0, 40.0]

    ours = symmetric_subsampled_rdp(lambda a: a / (2 * sigma**2), sampling_rate=q, orders=orders)

    for order, bound in zip(orders, ours, strict=True):
        exact = _integrated_gaussian(q, sigma, order)
        assert bound >= exact * (1 - 1e-6), (order, bound, exact)
        if order.is_integer():
            assert bound == pytest.approx(exact, rel=1e-5)


@pytest.mark.parametrize("q", [0.001, 0.01, 0.2, 0.5])
@pytest.mark.parametrize("sigma", [0.7, 1.0, 3.0, 20.0])
def test_gaussian_curve_equals_dp_accounting_at_integer_orders(q: float, sigma: float) -> None:
    orders = [float(order) for order in rdp_privacy_accountant.DEFAULT_RDP_ORDERS]
    integer = [order for order in orders if order.is_integer()]

    ours = symmetric_subsampled_rdp(lambda a: a / (2 * sigma**2), sampling_rate=q, orders=integer)

    assert np.allclose(ours, _dp_accounting_gaussian(q, sigma, integer), rtol=1e-6)


@pytest.mark.parametrize(("q", "sigma", "rounds"), [(0.01, 1.0, 500), (0.05, 2.0, 200)])
def test_gaussian_epsilon_is_close_to_dp_accounting(q: float, sigma: float, rounds: int) -> None:
    # dp-accounting's fractional orders come from a series that is sometimes too high;
    # ours interpolate its exact integer orders, so the two epsilons agree within 1%.
    orders = [float(order) for order in rdp_privacy_accountant.DEFAULT_RDP_ORDERS]
    exact = _dp_accounting_gaussian(q, sigma, orders)
    ours = symmetric_subsampled_rdp(lambda a: a / (2 * sigma**2), sampling_rate=q, orders=orders)

    eps_exact, _ = rdp_privacy_accountant.compute_epsilon(orders, rounds * exact, 1e-5)
    eps_ours, _ = rdp_privacy_accountant.compute_epsilon(orders, rounds * ours, 1e-5)

    assert eps_ours == pytest.approx(eps_exact, rel=0.01)


def test_without_sampling_the_curve_is_the_base_curve_interpolated() -> None:
    curve = symmetric_subsampled_rdp(lambda a: 0.1 * a, sampling_rate=1.0, orders=[2, 3, 2.5, 1.5])

    # (a - 1) D_a interpolates linearly: at 2.5, (0.5 * 0.2 + 0.5 * 0.6) / 1.5.
    assert np.allclose(curve, [0.2, 0.3, 0.4 / 1.5, 0.2])


def test_sampling_never_makes_the_curve_worse() -> None:
    base = [0.0] + [0.0] + [math.inf if a > 40 else 3.0 * a for a in range(2, 65)]

    curve = symmetric_subsampled_rdp(lambda a: base[a], sampling_rate=0.999, orders=[2, 10, 50])

    assert curve[0] <= 6.0 and curve[1] <= 30.0 and curve[2] == math.inf


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampling_rate": 0.0, "orders": [2.0]},
        {"sampling_rate": 1.5, "orders": [2.0]},
        {"sampling_rate": 0.1, "orders": [1.0]},
        {"sampling_rate": 0.1, "orders": []},
        {"sampling_rate": 0.1, "orders": [math.nan]},
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        symmetric_subsampled_rdp(lambda a: 1.0, **kwargs)  # type: ignore[arg-type]


def test_a_negative_base_curve_is_refused() -> None:
    with pytest.raises(ValueError):
        symmetric_subsampled_rdp(lambda a: -1.0, sampling_rate=0.1, orders=[2.0])

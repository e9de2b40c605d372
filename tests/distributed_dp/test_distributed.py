"""The distributed Skellam mechanism end to end: encoding, the noise in the sum, wrapping,
and the accounting against the central Gaussian mechanism."""

from __future__ import annotations

import logging
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import stats  # type: ignore[import-untyped]  # scipy ships no stubs here

from privacy.distributed import (
    RDP_ORDERS,
    DistributedSkellam,
    skellam_event_rdp,
    skellam_noise_for_budget,
    wrap_bound,
)
from privacy.quantization import conditional_round, to_modular
from privacy.skellam import skellam_noise

# Two-sided tail of the statistical checks: with these fixed seeds the outcome is
# reproducible; a correct implementation fails for about one seed in a million.
TAIL = 1e-6
DELTA = 1e-5

MODEL = {"clip_norm": 1.0, "dimension": 1441, "max_devices": 50, "min_survivors": 35}


def _model(**overrides: float) -> DistributedSkellam:
    arguments: dict[str, float] = {**MODEL, "noise_multiplier": 1.0} | overrides
    return DistributedSkellam(**arguments)  # type: ignore[arg-type]


def _clipped(rng: np.random.Generator, dimension: int, norm: float = 1.0) -> np.ndarray:
    vector = rng.normal(size=dimension)
    return vector * norm / float(np.linalg.norm(vector))


def _secure_sum(inputs: list[np.ndarray], bits: int) -> np.ndarray:
    """What secure aggregation reveals: the inputs' sum modulo 2^bits."""
    total = np.zeros_like(inputs[0])
    for vector in inputs:
        total = (total + vector) % np.uint64(1 << bits)
    return total


def _gaussian_epsilon(q: float, sigma: float, rounds: int) -> float:
    logging.getLogger("absl").setLevel(logging.ERROR)
    event = dp_accounting.GaussianDpEvent(sigma)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(event, rounds)
    return float(accountant.get_epsilon(DELTA))


def test_parameters_at_the_model_scale() -> None:
    mechanism = _model()

    assert mechanism.wrap_probability <= 1e-9
    # gamma is the largest scale within the bound: a hair more and the bound fails.
    arguments = {**MODEL, "noise_multiplier": 1.0, "bits": 32, "beta": mechanism.beta}
    assert wrap_bound(scale=mechanism.scale * (1 + 1e-9), **arguments) > 1e-9  # type: ignore[arg-type]
    assert 3e7 < mechanism.scale < 4e7
    # Rounding inflates the sensitivity by a part in ten million at this scale.
    assert 1 < mechanism.l2_sensitivity / mechanism.scale < 1 + 1e-7
    assert mechanism.central_variance == pytest.approx(mechanism.scale**2, rel=1e-12)
    assert mechanism.noise_std(35) == pytest.approx(1.0, rel=1e-12)
    assert mechanism.noise_std(50) == pytest.approx(math.sqrt(50 / 35), rel=1e-12)


def test_encoding_is_rounding_then_noise_then_residues() -> None:
    mechanism = _model()
    vector = _clipped(np.random.default_rng(1), 1441)
    replay = np.random.default_rng(2)
    rounded = conditional_round(
        vector * mechanism.scale, max_square=mechanism.max_square, rng=replay
    )
    noise = skellam_noise(1441, variance=mechanism.device_variance, rng=replay)

    encoded = mechanism.encode(vector, rng=np.random.default_rng(2))

    assert encoded.dtype == np.uint64
    assert (encoded < 2**32).all()
    assert np.array_equal(encoded, to_modular(rounded + noise, bits=32))


@pytest.mark.parametrize("survivors", [35, 42, 50])
def test_decoded_sum_is_the_true_sum_plus_the_noise_within_the_rounding_bound(
    survivors: int,
) -> None:
    mechanism = _model()
    rng = np.random.default_rng(survivors)
    vectors = [_clipped(rng, 1441, norm) for norm in rng.uniform(0, 1, survivors)]
    seeds = rng.integers(2**32, size=survivors)
    inputs, noise = [], np.zeros(1441, dtype=np.int64)
    for vector, seed in zip(vectors, seeds, strict=True):
        inputs.append(mechanism.encode(vector, rng=np.random.default_rng(seed)))
        replay = np.random.default_rng(seed)  # the same draws again: rounding, then noise
        conditional_round(vector * mechanism.scale, max_square=mechanism.max_square, rng=replay)
        noise += skellam_noise(1441, variance=mechanism.device_variance, rng=replay)

    decoded = mechanism.decode(_secure_sum(inputs, 32))

    error = decoded - np.sum(vectors, axis=0) - noise / mechanism.scale
    assert np.abs(error).max() <= mechanism.rounding_error_bound(survivors)


@pytest.mark.parametrize("survivors", [35, 50])
def test_noise_in_the_decoded_sum_has_the_documented_std(survivors: int) -> None:
    mechanism = _model()
    rng = np.random.default_rng(100 + survivors)
    errors = []
    for _ in range(12):
        vectors = [_clipped(rng, 1441) for _ in range(survivors)]
        inputs = [mechanism.encode(vector, rng=rng) for vector in vectors]
        errors.append(mechanism.decode(_secure_sum(inputs, 32)) - np.sum(vectors, axis=0))
    draws = np.concatenate(errors)
    std = mechanism.noise_std(survivors)  # sigma C sqrt(s / t); rounding adds ~1e-7

    n = draws.size
    statistic = (n - 1) * draws.var(ddof=1) / std**2
    assert stats.chi2.ppf(TAIL / 2, n - 1) < statistic < stats.chi2.ppf(1 - TAIL / 2, n - 1)
    assert abs(draws.mean()) < 5.5 * std / math.sqrt(n)


def test_an_empty_diary_contributes_only_its_noise_share() -> None:
    mechanism = _model()
    rng = np.random.default_rng(7)

    inputs = [mechanism.encode(np.zeros(1441), rng=rng) for _ in range(35)]

    decoded = mechanism.decode(_secure_sum(inputs, 32))
    assert 0.9 < decoded.std() < 1.1  # sigma C = 1 over 1441 coordinates


def test_default_generator_draws_fresh_noise_each_time() -> None:
    mechanism = _model()
    vector = np.zeros(1441)

    assert not np.array_equal(mechanism.encode(vector), mechanism.encode(vector))


def test_largest_signal_plus_the_margin_decodes_and_one_more_wraps() -> None:
    # The bound's arithmetic at its edge: a coordinate of the sum holds at most n b of
    # signal, the noise may use the remaining margin m, and one more step wraps.
    mechanism = DistributedSkellam(
        clip_norm=1.0, dimension=1, max_devices=20, min_survivors=10, noise_multiplier=0.5, bits=12
    )
    signal = mechanism.max_devices * mechanism.max_coordinate
    margin = 2**11 - 1 - signal
    assert margin >= 0

    inside = mechanism.decode(to_modular(np.array([signal + margin]), bits=12))
    beyond = mechanism.decode(to_modular(np.array([signal + margin + 1]), bits=12))

    assert inside[0] * mechanism.scale == pytest.approx(2**11 - 1)
    assert beyond[0] < 0


def test_wrapping_at_the_edge_is_no_more_frequent_than_the_bound() -> None:
    # One coordinate, every device at +C: the worst signal, and the bound at 0.2, the
    # largest gamma allowed. Wraps are real here, and rarer than the bound says.
    mechanism = DistributedSkellam(
        clip_norm=1.0,
        dimension=1,
        max_devices=20,
        min_survivors=10,
        noise_multiplier=0.5,
        bits=12,
        max_wrap_probability=0.2,
    )
    rng = np.random.default_rng(3)
    rounds, wrapped = 3000, 0
    for _ in range(rounds):
        inputs = [mechanism.encode(np.array([1.0]), rng=rng) for _ in range(20)]
        decoded = mechanism.decode(_secure_sum(inputs, 12))
        wrapped += bool(abs(decoded[0] - 20.0) > 2**10 / mechanism.scale)

    assert 0 < wrapped / rounds <= mechanism.wrap_probability <= 0.2


@pytest.mark.parametrize(
    ("q", "sigma", "rounds", "devices", "survivors", "dimension", "slack"),
    [
        (0.01, 1.0, 500, 1000, 700, 1441, 0.01),  # training at scale
        (0.05, 1.2, 300, 200, 140, 1441, 0.01),
        (1.0, 5.0, 20, 1000, 500, 40, 0.03),  # analytics: no sampling, bounded vectors
        (0.2, 1.0, 100, 50, 35, 1441, 0.05),  # the lead's example: best order 2.3
    ],
)
def test_epsilon_is_within_a_few_percent_of_the_gaussian_with_the_same_std(
    q: float,
    sigma: float,
    rounds: int,
    devices: int,
    survivors: int,
    dimension: int,
    slack: float,
) -> None:
    mechanism = DistributedSkellam(
        clip_norm=1.0,
        dimension=dimension,
        max_devices=devices,
        min_survivors=survivors,
        noise_multiplier=sigma,
    )

    distributed = mechanism.epsilon(sampling_rate=q, rounds=rounds, delta=DELTA)

    central = _gaussian_epsilon(q, sigma, rounds)
    assert central * 0.999 <= distributed <= central * (1 + slack)


def test_few_bits_make_rounding_costly_and_the_accounting_says_so() -> None:
    # At 12 bits 50 sums leave gamma = 34: rounding inflates the sensitivity by 16%.
    coarse = _model(bits=12)
    fine = _model()

    assert coarse.scale < 100 < 1e7 < fine.scale
    assert coarse.l2_sensitivity / coarse.scale > 1.1
    coarse_eps = coarse.epsilon(sampling_rate=0.2, rounds=100, delta=DELTA)
    assert coarse_eps > 1.2 * fine.epsilon(sampling_rate=0.2, rounds=100, delta=DELTA)


def test_curve_is_on_dp_accounting_orders_and_composes_with_gaussian_curves() -> None:
    mechanism = _model()
    logging.getLogger("absl").setLevel(logging.ERROR)
    gaussian = rdp_privacy_accountant.RdpAccountant(orders=RDP_ORDERS)
    gaussian.compose(dp_accounting.PoissonSampledDpEvent(0.2, dp_accounting.GaussianDpEvent(1.0)))

    skellam = mechanism.rdp(sampling_rate=0.2)
    composed = 50 * skellam + 50 * np.asarray(gaussian.rdp)

    assert skellam.shape == (len(rdp_privacy_accountant.DEFAULT_RDP_ORDERS),)
    epsilon, _ = rdp_privacy_accountant.compute_epsilon(RDP_ORDERS, composed, DELTA)
    assert _gaussian_epsilon(0.2, 1.0, 100) <= epsilon
    assert epsilon <= mechanism.epsilon(sampling_rate=0.2, rounds=100, delta=DELTA)


def test_cached_curves_cannot_be_corrupted_by_a_caller() -> None:
    first = skellam_event_rdp(
        sampling_rate=0.1, variance=1e6, l1_sensitivity=30.0, l2_sensitivity=1e3
    )
    first[:] = 0.0

    again = skellam_event_rdp(
        sampling_rate=0.1, variance=1e6, l1_sensitivity=30.0, l2_sensitivity=1e3
    )
    assert (again > 0).all()


def test_calibrated_noise_meets_the_budget_and_less_would_not() -> None:
    sigma = skellam_noise_for_budget(
        epsilon=3.0,
        delta=DELTA,
        sampling_rate=0.01,
        rounds=1000,
        clip_norm=1.0,
        dimension=1441,
        max_devices=1000,
        min_survivors=700,
    )

    at = _model(noise_multiplier=sigma, max_devices=1000, min_survivors=700)
    below = _model(noise_multiplier=sigma * 0.999, max_devices=1000, min_survivors=700)
    assert at.epsilon(sampling_rate=0.01, rounds=1000, delta=DELTA) <= 3.0
    assert below.epsilon(sampling_rate=0.01, rounds=1000, delta=DELTA) > 3.0


@pytest.mark.parametrize(
    "overrides",
    [
        {"clip_norm": 0.0},
        {"clip_norm": math.nan},
        {"dimension": 0},
        {"dimension": 2.5},
        {"max_devices": 0},
        {"min_survivors": 0},
        {"min_survivors": 51},
        {"noise_multiplier": 0.0},
        {"noise_multiplier": math.inf},
        {"bits": 7},
        {"bits": 54},
        {"bits": True},
        {"beta": 1.0},
        {"beta": -0.1},
        {"max_wrap_probability": 0.0},
        {"max_wrap_probability": 1.0},
        {"bits": 8, "max_devices": 1000, "min_survivors": 500},  # no gamma fits 8 bits
    ],
    ids=str,
)
def test_bad_parameters_are_refused(overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        _model(**overrides)


@pytest.mark.parametrize(
    "vector",
    [np.zeros(1440), np.zeros((1441, 1)), np.full(1441, np.nan), np.full(1441, 1.0)],
    ids=["short", "matrix", "nan", "unclipped"],
)
def test_bad_vectors_are_refused_and_left_unchanged(vector: np.ndarray) -> None:
    mechanism = _model()
    before = vector.copy()

    with pytest.raises(ValueError):
        mechanism.encode(vector)

    assert np.array_equal(vector, before, equal_nan=True)


def test_bad_sums_and_survivor_counts_are_refused() -> None:
    mechanism = _model()
    with pytest.raises(ValueError):
        mechanism.decode(np.zeros(1440, dtype=np.uint64))
    with pytest.raises(ValueError):
        mechanism.decode(np.full(1441, 2**32, dtype=np.uint64))
    for survivors in (34, 51, 0):
        with pytest.raises(ValueError):
            mechanism.noise_std(survivors)
    with pytest.raises(ValueError):
        mechanism.epsilon(sampling_rate=0.0, rounds=1, delta=DELTA)
    with pytest.raises(ValueError):
        mechanism.epsilon(sampling_rate=0.1, rounds=0, delta=DELTA)


def test_calibration_refuses_bad_budgets() -> None:
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError):
            skellam_noise_for_budget(
                epsilon=bad,
                delta=DELTA,
                sampling_rate=0.1,
                rounds=10,
                clip_norm=1.0,
                dimension=1441,
                max_devices=50,
                min_survivors=35,
            )

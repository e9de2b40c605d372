"""The server side: noise of the stated scale, thresholds, consent, and the privacy spend."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant
from scipy import stats
from sqlalchemy import func, select

from client_sdk.queries import Query, standard_queries
from privacy import (
    Accountant,
    BudgetExceededError,
    PrivacyError,
    add_gaussian_noise,
    noise_multiplier_for,
    release_threshold,
)
from server.analytics import AnalyticsPlan, AnalyticsReport, AnalyticsRound, AnalyticsRun
from server.figures import release_cells
from server.releases import AnalyticsCell, AnalyticsRelease, CellRelease, Release, ReleaseStore
from server.releases.readers import analytics_cells
from server.settings import Aggregation

from .conftest import DELTA, WEEK

QUERIES = standard_queries()
BY_NAME = {q.name: q for q in QUERIES}
COHORT = BY_NAME["mood-by-cohort"]
SIGMA = 5.0


def release_analytics(
    contributions: Mapping[str, Mapping[str, np.ndarray]],
    *,
    eligible: Iterable[str],
    queries: Sequence[Query],
    period: date,
    noise_multiplier: float,
    accountant: Accountant,
    store: ReleaseStore,
    rng: np.random.Generator | None = None,
    aggregation: Aggregation = "central",
) -> AnalyticsReport:
    """One analytics week through the production round's charge, aggregate and publish."""
    plan = AnalyticsPlan(
        weeks=(period,), epsilon=1.0, delta=accountant.delta, queries=tuple(queries)
    )
    run = AnalyticsRun(
        plan=plan,
        eligibility=None,
        accountant=accountant,
        store=store,
        rng=rng,
        noise_multiplier=noise_multiplier,
        aggregation=aggregation,
    )
    return AnalyticsRound(run, period).release(list(eligible), contributions)


def noisy_release(
    query: Query, total: np.ndarray, *, noise_multiplier: float, threshold: float
) -> tuple[CellRelease, ...]:
    """The noise the round adds, then the cells it releases."""
    noisy = add_gaussian_noise(
        total, sensitivity=query.sensitivity, noise_multiplier=noise_multiplier
    )
    return release_cells(
        query, noisy, noise_std=noise_multiplier * query.sensitivity, threshold=threshold
    )


def _count(store: ReleaseStore, table: type) -> int:
    with store.engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(table.__table__)))


def _population(n: int, *, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """n devices' vectors for every query, made with the device-side code."""
    rng = np.random.default_rng(seed)
    mood = rng.integers(1, 6, (n, 7)).astype(float)
    mood[rng.random((n, 7)) < 0.3] = np.nan
    sleep = rng.normal(7.2, 1.0, (n, 7))
    cohort = rng.integers(0, len(COHORT.cohorts), n)
    vectors = {q.name: q.contributions(mood=mood, sleep=sleep, cohort=cohort) for q in QUERIES}
    return {f"device-{i}": {name: rows[i] for name, rows in vectors.items()} for i in range(n)}


def test_the_noise_has_the_stated_standard_deviation() -> None:
    query = BY_NAME["low-mood-share"]
    truth = np.array([40.0, 100.0])
    runs = 3000

    samples = []
    for _ in range(runs):
        (cell,) = noisy_release(query, truth, noise_multiplier=SIGMA, threshold=-np.inf)
        samples.extend([cell.noisy_sum - truth[0], cell.noisy_count - truth[1]])
    noise = np.array(samples)

    stated = SIGMA * query.sensitivity
    n = len(noise)
    # chi-square bounds on the sample variance at 1e-4 two-sided, a normality check, the mean
    ratio = np.sum(noise**2) / stated**2
    assert stats.chi2.ppf(5e-5, n) < ratio < stats.chi2.isf(5e-5, n)
    assert stats.kstest(noise / stated, "norm").pvalue > 1e-4
    assert abs(noise.mean()) < 4.5 * stated / np.sqrt(n)


def test_the_release_records_the_noise_std_it_used(
    store: ReleaseStore, accountant: Accountant
) -> None:
    released = release_analytics(
        _population(50),
        eligible=_population(50).keys(),
        queries=QUERIES,
        period=WEEK,
        noise_multiplier=SIGMA,
        accountant=accountant,
        store=store,
    )

    rows = analytics_cells(store.engine)
    assert rows and all(row["noise_std"] == pytest.approx(SIGMA * np.sqrt(2)) for row in rows)
    assert all(r.noise_std == SIGMA * r.sensitivity for r in released.releases)


def test_a_cohort_of_two_devices_is_never_released() -> None:
    small, large = 0, 1
    total = np.zeros(COHORT.dim)
    total[2 * small : 2 * small + 2] = [2 * 0.5, 2]
    total[2 * large : 2 * large + 2] = [300 * 0.5, 300]
    threshold = release_threshold(
        noise_std=SIGMA * COHORT.sensitivity, min_contributors=11, false_release_bound=1e-3
    )

    shown = {small: 0, large: 0}
    for _ in range(3000):
        cells = noisy_release(COHORT, total, noise_multiplier=SIGMA, threshold=threshold)
        for index in shown:
            shown[index] += not cells[index].suppressed

    assert shown[small] == 0
    assert shown[large] == 3000


def test_a_cell_just_below_k_contributors_is_released_at_most_at_the_documented_rate() -> None:
    k, beta, runs = 11, 0.05, 4000
    query = BY_NAME["low-mood-share"]
    threshold = release_threshold(
        noise_std=SIGMA * query.sensitivity, min_contributors=k, false_release_bound=beta
    )
    truth = np.array([0.0, k - 1.0])  # k - 1 devices, each adding its full count of 1

    released = sum(
        not noisy_release(query, truth, noise_multiplier=SIGMA, threshold=threshold)[0].suppressed
        for _ in range(runs)
    )

    assert released / runs <= beta + 4 * np.sqrt(beta * (1 - beta) / runs)


def test_a_suppressed_cell_publishes_no_number(store: ReleaseStore, accountant: Accountant) -> None:
    release_analytics(
        _population(30),
        eligible=_population(30).keys(),
        queries=[COHORT],
        period=WEEK,
        noise_multiplier=SIGMA,
        accountant=accountant,
        store=store,
    )

    rows = analytics_cells(store.engine, query=COHORT.name)
    assert rows and all(row["suppressed"] for row in rows)  # ~2 devices a cohort
    for row in rows:
        assert row["value"] is None and row["value_std"] is None
        assert row["noisy_sum"] is None and row["noisy_count"] is None


def test_a_contribution_from_a_device_without_analytics_consent_changes_nothing(
    tmp_path, accountant: Accountant
) -> None:
    honest = _population(200)
    intruders = {
        f"intruder-{i}": {q.name: np.full(q.dim, 1.0) for q in QUERIES} for i in range(500)
    }

    results = []
    for name, contributions in (("a", honest), ("b", {**honest, **intruders})):
        with ReleaseStore(f"sqlite:///{tmp_path / name}.db") as store:
            released = release_analytics(
                contributions,
                eligible=honest.keys(),
                queries=QUERIES,
                period=WEEK + timedelta(weeks=len(results)),
                noise_multiplier=SIGMA,
                accountant=accountant,
                store=store,
                rng=np.random.default_rng(7),
            )
        results.append([r.cells for r in released.releases])

    assert results[0] == results[1]
    assert accountant.epsilon("intruder-0") == 0.0
    assert accountant.epsilon("device-0") > 0.0


def _rdp_epsilon(sigma: float, count: int) -> float:
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), count)
    return RdpAccountant().compose(event).get_epsilon(DELTA)


def test_the_recorded_privacy_spend_equals_dp_accountings_own_computation(
    store: ReleaseStore, accountant: Accountant
) -> None:
    devices = _population(40)
    early, late = "device-1", "device-2"
    for week in range(3):
        eligible = [k for k in devices if k != late or week == 2]
        release_analytics(
            devices,
            eligible=eligible,
            queries=QUERIES,
            period=WEEK + timedelta(weeks=week),
            noise_multiplier=SIGMA,
            accountant=accountant,
            store=store,
        )

    assert accountant.epsilon(early) == pytest.approx(_rdp_epsilon(SIGMA, 12), rel=1e-9)
    assert accountant.epsilon(late) == pytest.approx(_rdp_epsilon(SIGMA, 4), rel=1e-9)
    with store.engine.connect() as connection:
        last = (
            connection.execute(
                select(AnalyticsRelease.__table__, Release.__table__.c.epsilon.label("after"))
                .join(
                    Release.__table__,
                    Release.__table__.c.id == AnalyticsRelease.__table__.c.release_id,
                )
                .order_by(AnalyticsRelease.__table__.c.release_id.desc())
            )
            .mappings()
            .first()
        )
    assert last["after"] == pytest.approx(_rdp_epsilon(SIGMA, 12), rel=1e-9)
    assert last["purpose_epsilon"] == pytest.approx(_rdp_epsilon(SIGMA, 12), rel=1e-9)
    assert last["round_epsilon"] == pytest.approx(_rdp_epsilon(SIGMA, 4), rel=1e-9)
    assert last["epsilon"] == pytest.approx(dp_accounting.get_epsilon_gaussian(SIGMA, DELTA))
    assert last["delta"] == DELTA and last["n_eligible"] == 40


def test_a_round_past_the_budget_is_refused_and_nothing_is_written(
    store: ReleaseStore, tmp_path
) -> None:
    one_round = _rdp_epsilon(SIGMA, 4)
    devices = _population(20)
    with Accountant(
        f"sqlite:///{tmp_path / 'tight.db'}", epsilon_budget=one_round * 1.2, delta=DELTA
    ) as tight:
        release_analytics(
            devices,
            eligible=devices.keys(),
            queries=QUERIES,
            period=WEEK,
            noise_multiplier=SIGMA,
            accountant=tight,
            store=store,
        )
        before = (_count(store, Release), _count(store, AnalyticsCell), tight.epsilon("device-0"))

        with pytest.raises(BudgetExceededError):
            release_analytics(
                devices,
                eligible=devices.keys(),
                queries=QUERIES,
                period=WEEK + timedelta(weeks=1),
                noise_multiplier=SIGMA,
                accountant=tight,
                store=store,
            )

        after = (_count(store, Release), _count(store, AnalyticsCell), tight.epsilon("device-0"))
    assert after == before


def test_the_same_round_cannot_be_released_twice(
    store: ReleaseStore, accountant: Accountant
) -> None:
    devices = _population(20)
    kwargs = dict(
        eligible=devices.keys(),
        queries=QUERIES,
        period=WEEK,
        noise_multiplier=SIGMA,
        accountant=accountant,
        store=store,
    )
    release_analytics(devices, **kwargs)
    releases = _count(store, Release)

    with pytest.raises(PrivacyError, match="already charged"):
        release_analytics(devices, **kwargs)

    assert _count(store, Release) == releases


def test_released_values_are_close_to_the_truth_when_the_noise_is_small(
    store: ReleaseStore, accountant: Accountant
) -> None:
    devices = _population(3000, seed=3)
    truth = {q.name: np.sum([d[q.name] for d in devices.values()], axis=0) for q in QUERIES}

    released = release_analytics(
        devices,
        eligible=devices.keys(),
        queries=QUERIES,
        period=WEEK,
        noise_multiplier=0.5,
        accountant=accountant,
        store=store,
    )

    low = next(r for r in released.releases if r.query == "low-mood-share").cells[0]
    expected = truth["low-mood-share"][0] / truth["low-mood-share"][1]
    assert low.value == pytest.approx(expected, abs=5 * low.value_std)
    mean = next(r for r in released.releases if r.query == "mood-distribution").cells[-1]
    shares = truth["mood-distribution"]
    expected_mean = np.dot(np.arange(1, 6), shares[:5]) / shares[5]
    assert mean.derived and mean.value == pytest.approx(expected_mean, abs=5 * mean.value_std)


def test_the_threshold_follows_the_documented_formula() -> None:
    threshold = release_threshold(noise_std=10.0, min_contributors=11, false_release_bound=1e-3)

    assert threshold == pytest.approx(10 + 10.0 * stats.norm.isf(1e-3))


def test_a_single_releases_noise_is_calibrated_by_dp_accounting() -> None:
    sigma = noise_multiplier_for(epsilon=1.0, delta=DELTA)
    planned = noise_multiplier_for(epsilon=4.0, delta=DELTA, releases=52)

    assert dp_accounting.get_epsilon_gaussian(sigma, DELTA) == pytest.approx(1.0, abs=1e-3)
    assert _rdp_epsilon(planned, 52) <= 4.0

"""The device side: each query's contribution is bounded, and only consent makes one."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from client_sdk import Entry, InvalidArgumentError
from client_sdk.analytics import device_contributions
from client_sdk.consent_client import Decision
from client_sdk.protocol import ANALYTICS_PURPOSE
from client_sdk.queries import (
    QUERY_NAMES,
    SLEEP_BINS,
    queries_from_config,
    queries_to_config,
    standard_queries,
)
from client_sdk.sim import SyntheticPopulation

from .conftest import WEEK

QUERIES = standard_queries()
BY_NAME = {q.name: q for q in QUERIES}
GRANT = Decision(ANALYTICS_PURPOSE, "grant", "2026-01-01T00:00:00Z", None, 3)
TOLERANCE = 1e-12


@st.composite
def diaries(draw: st.DrawFn) -> list[Entry]:
    """Entries around the week (some before, some after), several a day, any time zone."""
    entries = []
    for _ in range(draw(st.integers(0, 30))):
        offset = timezone(timedelta(hours=draw(st.integers(-12, 14))))
        moment = datetime.combine(WEEK, datetime.min.time(), offset) + timedelta(
            minutes=draw(st.integers(-3 * 1440, 10 * 1440))
        )
        sleep = draw(st.none() | st.floats(0.0, 24.0))
        entries.append(Entry(time=moment, mood=draw(st.integers(1, 5)), sleep_hours=sleep))
    return entries


cohorts = st.none() | st.tuples(
    st.sampled_from(["18-29", "30-44", "45-64", "65+", "unknown"]),
    st.sampled_from(["north", "south", "east", "west", "elsewhere"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(diary=diaries(), cohort=cohorts)
def test_every_contribution_is_within_its_bounds_and_sensitivity(
    diary: list[Entry], cohort: tuple[str, str] | None
) -> None:
    vectors = device_contributions(diary, week=WEEK, queries=QUERIES, decision=GRANT, cohort=cohort)

    assert set(vectors) == set(QUERY_NAMES)
    for name, vector in vectors.items():
        query = BY_NAME[name]
        assert vector.shape == (query.dim,)
        assert np.linalg.norm(vector) <= query.sensitivity + TOLERANCE
        assert (vector >= np.array(query.lower) - TOLERANCE).all()
        assert (vector <= np.array(query.upper) + TOLERANCE).all()
    shares = vectors["mood-distribution"]
    assert shares[:5].sum() == pytest.approx(shares[5])  # shares sum to the count, 1 or 0
    assert vectors["mood-by-sleep"][1::2].sum() <= 1 + TOLERANCE  # one device, weight <= 1


@settings(max_examples=100, deadline=None)
@given(diary=diaries(), cohort=cohorts)
def test_a_cohort_contribution_touches_only_the_devices_own_cohort(
    diary: list[Entry], cohort: tuple[str, str] | None
) -> None:
    query = BY_NAME["mood-by-cohort"]
    vector = device_contributions(diary, week=WEEK, queries=[query], decision=GRANT, cohort=cohort)[
        query.name
    ]

    own = query.cohort_index(cohort)
    others = np.delete(vector, [2 * own, 2 * own + 1]) if own >= 0 else vector
    assert not others.any()


@settings(max_examples=200, deadline=None)
@given(
    rows=arrays(
        np.float64,
        st.tuples(st.integers(1, 5), st.just(BY_NAME["mood-by-cohort"].dim)),
        elements=st.floats(allow_nan=True, allow_infinity=True),
    )
)
def test_the_server_side_bound_tames_any_vector_a_device_might_send(rows: np.ndarray) -> None:
    query = BY_NAME["mood-by-cohort"]

    bounded = query.bound(rows)

    assert np.isfinite(bounded).all()
    assert (np.linalg.norm(bounded, axis=1) <= query.sensitivity).all()
    assert (bounded >= np.array(query.lower)).all() and (bounded <= np.array(query.upper)).all()


def test_the_vectorized_path_equals_each_devices_own_computation() -> None:
    population = SyntheticPopulation(25, days=21, seed=4, start=date(2026, 3, 2))
    week_days = slice(7, 14)
    week = date(2026, 3, 9)
    mood = np.where(population.logged, population.mood, np.nan)[:, week_days]
    sleep = population.sleep_hours[:, week_days]
    info = population.devices
    cohort_index = [BY_NAME["mood-by-cohort"].cohort_index((d.age_band, d.region)) for d in info]

    for query in QUERIES:
        batched = query.contributions(mood=mood, sleep=sleep, cohort=cohort_index)
        for i, device in enumerate(info):
            own = device_contributions(
                population.entries_for(i),
                week=week,
                queries=[query],
                decision=GRANT,
                cohort=(device.age_band, device.region),
            )[query.name]
            np.testing.assert_allclose(own, batched[i], atol=1e-12)


def test_a_device_without_an_active_analytics_grant_contributes_nothing() -> None:
    diary = [Entry(time=datetime(2026, 3, 3, 20, tzinfo=UTC), mood=4, sleep_hours=7.5)]
    withdrawn = Decision(ANALYTICS_PURPOSE, "withdraw", "2026-02-01T00:00:00Z", None, 7)
    expired = Decision(
        ANALYTICS_PURPOSE, "grant", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", 5
    )

    for decision in (None, withdrawn, expired):
        assert device_contributions(diary, week=WEEK, queries=QUERIES, decision=decision) == {}
    assert len(device_contributions(diary, week=WEEK, queries=QUERIES, decision=GRANT)) == 4


def test_a_training_decision_is_not_taken_for_analytics_consent() -> None:
    training = Decision("model-training", "grant", "2026-01-01T00:00:00Z", None, 1)

    with pytest.raises(InvalidArgumentError, match="population-analytics"):
        device_contributions([], week=WEEK, queries=QUERIES, decision=training)


def test_a_week_is_named_by_its_monday() -> None:
    with pytest.raises(InvalidArgumentError, match="Monday"):
        device_contributions([], week=WEEK + timedelta(days=1), queries=QUERIES, decision=GRANT)


def test_a_device_with_nothing_logged_that_week_sends_zeros() -> None:
    before = [Entry(time=datetime(2026, 2, 20, 20, tzinfo=UTC), mood=1, sleep_hours=4.0)]

    vectors = device_contributions(before, week=WEEK, queries=QUERIES, decision=GRANT)

    assert all(not vector.any() for vector in vectors.values())


def test_sleep_bins_pair_a_days_mood_with_the_night_before() -> None:
    query = BY_NAME["mood-by-sleep"]
    diary = [
        Entry(time=datetime(2026, 3, 2, 21, tzinfo=UTC), mood=5, sleep_hours=5.0),
        Entry(time=datetime(2026, 3, 3, 21, tzinfo=UTC), mood=1, sleep_hours=8.5),
    ]

    vector = device_contributions(diary, week=WEEK, queries=[query], decision=GRANT)[query.name]

    labels = [label for label, _, _ in SLEEP_BINS]
    short, long = labels.index("<6 h"), labels.index("8-9 h")
    assert vector[2 * short : 2 * short + 2].tolist() == pytest.approx([0.5 * 1.0, 0.5])
    assert vector[2 * long : 2 * long + 2].tolist() == pytest.approx([0.5 * -1.0, 0.5])


def test_the_query_specs_travel_in_a_flat_string_config() -> None:
    queries = standard_queries(age_bands=["young", "old"], regions=["a", "b", "c"])

    rebuilt = queries_from_config(queries_to_config(queries))

    assert rebuilt == queries
    with pytest.raises(InvalidArgumentError, match="unknown"):
        queries_from_config({"analytics-queries": "mood-distribution,raw-diaries"})

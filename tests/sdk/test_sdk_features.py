"""Features for next-day mood prediction: shapes, missing days, no look-ahead."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pytest

from client_sdk import (
    FEATURE_DIM,
    Entry,
    InvalidArgumentError,
    daily_series,
    feature_dim,
    feature_names,
    latest_features,
    make_examples,
)
from client_sdk.sim import SyntheticPopulation

START = date(2026, 3, 2)  # a Monday
NAMES = feature_names()


def _col(name: str) -> int:
    return NAMES.index(name)


def _entry(day: int, mood: int, *, hour: int = 20, **extra: object) -> Entry:
    when = datetime.combine(START + timedelta(days=day), datetime.min.time(), tzinfo=UTC)
    return Entry(time=when + timedelta(hours=hour), mood=mood, **extra)


@pytest.fixture(scope="module")
def population() -> SyntheticPopulation:
    return SyntheticPopulation(20, days=120, seed=11)


def test_feature_vectors_have_the_documented_shape_and_dtype(
    population: SyntheticPopulation,
) -> None:
    entries = population.entries_for(0)

    x, y = make_examples(entries)
    latest = latest_features(entries)

    assert FEATURE_DIM == feature_dim(7) == len(NAMES) == 43
    assert x.shape == (len(y), FEATURE_DIM) and x.dtype == y.dtype == np.float32
    assert latest.shape == (FEATURE_DIM,) and latest.dtype == np.float32
    assert len(y) > 50
    assert make_examples(entries, window=3)[0].shape[1] == feature_dim(3) == 23


def test_y_is_the_mean_mood_of_the_target_day() -> None:
    entries = [_entry(0, 2), _entry(1, 5, hour=8), _entry(1, 2, hour=21)]

    x, y = make_examples(entries)

    assert y.tolist() == [3.5]
    assert x[0, _col("mood_lag1")] == pytest.approx((2 - 3) / 2)


def test_days_are_the_entries_local_days() -> None:
    tokyo = timezone(timedelta(hours=9))
    # 01:00 in Tokyo is still the previous day in UTC; the diary day is Tokyo's.
    entries = [Entry(time=datetime(2026, 3, 3, 1, tzinfo=tokyo), mood=4)]

    series = daily_series(entries)

    assert series.start == date(2026, 3, 3)


def test_missing_days_are_flagged_and_filled_with_the_persons_earlier_mean() -> None:
    entries = [_entry(0, 5), _entry(1, 3), _entry(4, 1)]  # days 2 and 3 missing

    x, y = make_examples(entries)

    assert y.tolist() == [3.0, 1.0]
    row = x[1]  # target day 4: lags are days -3..3
    missing = [row[_col(f"missing_lag{lag}")] for lag in range(7, 0, -1)]
    assert missing == [1, 1, 1, 0, 0, 1, 1]
    fill = ((5 + 3) / 2 - 3) / 2
    moods = [row[_col(f"mood_lag{lag}")] for lag in range(7, 0, -1)]
    assert moods == pytest.approx([fill, fill, fill, 1.0, 0.0, fill, fill])
    assert row[_col("person_mean_mood")] == pytest.approx(fill)


def test_sleep_steps_and_activities_are_filled_from_earlier_known_values() -> None:
    entries = [
        _entry(0, 3, sleep_hours=5.0, steps=20_000, activities=["a", "b"]),
        _entry(1, 3),  # logged, but no sleep, steps or activities
    ]

    x, _ = make_examples(entries, window=2)

    row = x[0]  # target day 1: lag2 = day -1 (missing), lag1 = day 0
    names = feature_names(2)
    assert row[names.index("sleep_lag1")] == pytest.approx((5.0 - 7.5) / 2.5)
    assert row[names.index("sleep_lag2")] == pytest.approx((5.0 - 7.5) / 2.5)
    assert row[names.index("steps_lag1")] == pytest.approx(2.0)
    assert row[names.index("activities_lag1")] == pytest.approx(2 / 5)


def test_a_person_with_no_earlier_days_gets_neutral_defaults() -> None:
    x = latest_features([], day=START)

    assert x[_col("missing_lag1")] == 1.0
    assert x[_col("mood_lag1")] == 0.0  # mood 3
    assert x[_col("sleep_lag1")] == 0.0  # 7.5 h
    assert x[_col("weekday_mon")] == 1.0


def test_no_feature_depends_on_the_target_day_or_later(population: SyntheticPopulation) -> None:
    entries = population.entries_for(3)
    series = daily_series(entries)
    targets = [t for t in range(1, len(series)) if series.logged[t]]

    x, _ = make_examples(entries, min_observed=0)
    targets = [t for t in range(1, len(series)) if series.logged[t]]
    assert len(x) == len(targets) > 40

    # Each row equals the features computed from the diary cut off before its target day.
    for row, t in list(zip(x, targets, strict=True))[:40]:
        day = series.day(t)
        before = [e for e in entries if e.time.date() < day]
        np.testing.assert_array_equal(row, latest_features(before, day=day))


def test_changing_the_target_days_mood_leaves_its_row_unchanged() -> None:
    base = [_entry(d, 3 + (d % 3) - 1) for d in range(10)]
    changed = [*base[:8], _entry(8, 5), _entry(9, 1)]

    x_base, y_base = make_examples(base)
    x_changed, y_changed = make_examples(changed)

    np.testing.assert_array_equal(x_base[:8], x_changed[:8])  # rows for targets 1..8
    assert y_base[7] != y_changed[7]


def test_weekday_one_hot_is_the_target_days() -> None:
    entries = [_entry(0, 3), _entry(1, 3)]  # Monday, Tuesday

    x, _ = make_examples(entries)
    tomorrow = latest_features(entries)

    weekdays = slice(_col("weekday_mon"), _col("weekday_sun") + 1)
    assert x[0, weekdays].tolist() == [0, 1, 0, 0, 0, 0, 0]
    assert tomorrow[_col("weekday_wed")] == 1.0


def test_latest_features_for_a_later_day_treat_the_gap_as_missing() -> None:
    entries = [_entry(d, 4) for d in range(7)]

    soon = latest_features(entries)
    later = latest_features(entries, day=START + timedelta(days=10))

    assert [soon[_col(f"missing_lag{lag}")] for lag in range(7, 0, -1)] == [0] * 7
    assert [later[_col(f"missing_lag{lag}")] for lag in range(7, 0, -1)] == [0] * 4 + [1] * 3


def test_min_observed_drops_targets_with_too_little_history() -> None:
    entries = [_entry(0, 3), _entry(9, 4), _entry(10, 5)]

    assert make_examples(entries)[1].tolist() == [5.0]  # day 9's window is empty
    assert make_examples(entries, min_observed=0)[1].tolist() == [4.0, 5.0]
    assert make_examples(entries, min_observed=2)[1].tolist() == []


def test_synthetic_series_and_materialized_entries_give_the_same_examples(
    population: SyntheticPopulation,
) -> None:
    for i in range(3):
        from_entries = make_examples(population.entries_for(i))
        from_arrays = make_examples(population.daily_series(i))

        np.testing.assert_array_equal(from_entries[0], from_arrays[0])
        np.testing.assert_array_equal(from_entries[1], from_arrays[1])


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(InvalidArgumentError):
        make_examples([], window=0)
    with pytest.raises(InvalidArgumentError, match="explicit day"):
        latest_features([])
    with pytest.raises(InvalidArgumentError, match="before"):
        latest_features([_entry(5, 3)], day=START)

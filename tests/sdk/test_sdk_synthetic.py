"""Synthetic population: its statistics match the published parameters it cites.

Tolerances, and why they are honest. With 2,000 devices x 365 days the sampling error
of every statistic below is far smaller than its tolerance (SE of the mean about 0.011,
of the between-person SD about 0.008, of the lag-1 autocorrelation about 0.003, of the
logged fraction about 0.003). What the tolerances absorb is the 1-5 rounding and
clipping: the generator calibrates the observed mean to 3.7 and the observed
autocorrelation to 0.3 (with a 1/12 rounding-variance approximation, off by about
0.01), while clipping at 5 squeezes the happiest people's means, pulling the
between-person SD of person means about 0.01 below 0.5. The ±0.1 / ±0.07 / ±0.03
bounds are the brief's; each is several times the error we expect.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from client_sdk import Diary, InvalidArgumentError
from client_sdk.errors import SDKError
from client_sdk.sim import PopulationParams, SyntheticPopulation, generate_population
from client_sdk.sim.federation import SPEC_FILE, FederationSpec


@pytest.fixture(scope="module")
def population() -> SyntheticPopulation:
    return SyntheticPopulation(2000, days=365, seed=2026)


def _observed(pop: SyntheticPopulation) -> np.ndarray:
    return np.where(pop.logged, pop.mood, np.nan).astype(np.float64)


def _within(pop: SyntheticPopulation) -> np.ndarray:
    mood = _observed(pop)
    return mood - np.nanmean(mood, axis=1, keepdims=True)


def test_overall_mean_mood_is_near_the_parameter(population: SyntheticPopulation) -> None:
    mean = np.nanmean(_observed(population))

    assert abs(mean - population.params.mean_mood) < 0.1
    assert population.params.mean_mood == 3.7


def test_between_person_sd_of_person_means_is_near_the_parameter(
    population: SyntheticPopulation,
) -> None:
    person_means = np.nanmean(_observed(population), axis=1)

    assert abs(person_means.std(ddof=1) - population.params.between_person_sd) < 0.1
    assert population.params.between_person_sd == 0.5


def test_lag1_autocorrelation_of_daily_mood_is_near_the_parameter(
    population: SyntheticPopulation,
) -> None:
    dev = _within(population)
    today, tomorrow = dev[:, :-1], dev[:, 1:]
    both = ~np.isnan(today) & ~np.isnan(tomorrow)

    r = np.sum(today[both] * tomorrow[both]) / np.sqrt(
        np.sum(today[both] ** 2) * np.sum(tomorrow[both] ** 2)
    )

    assert abs(r - population.params.autocorrelation) < 0.07
    assert population.ar_coefficient > population.params.autocorrelation  # undoes rounding


def test_short_sleep_lowers_next_day_mood_compared_with_7_5_to_9_hours(
    population: SyntheticPopulation,
) -> None:
    dev = _within(population)
    sleep = population.sleep_hours  # the night before each day

    short = np.nanmean(dev[sleep < 6.0])
    optimal = np.nanmean(dev[(sleep >= 7.5) & (sleep <= 9.0)])

    assert short < optimal - 0.1


def test_more_steps_than_usual_goes_with_better_mood(population: SyntheticPopulation) -> None:
    dev = _within(population)
    relative = np.log(population.steps) - population.usual_log_steps[:, None]

    assert np.nanmean(dev[relative > 0.35]) > np.nanmean(dev[relative < -0.35])


def test_weekend_mood_is_better_than_midweek(population: SyntheticPopulation) -> None:
    dev = _within(population)
    weekday = population.weekday

    weekend = np.nanmean(dev[:, np.isin(weekday, [5, 6])])
    midweek = np.nanmean(dev[:, np.isin(weekday, [1, 2, 3])])

    assert weekend > midweek + 0.03


def test_about_seventy_percent_of_days_are_logged(population: SyntheticPopulation) -> None:
    assert abs(population.logged.mean() - 0.7) < 0.03
    assert population.logging_rate.std() > 0.05  # people differ in how often they log


def test_cohorts_differ_in_the_documented_direction(population: SyntheticPopulation) -> None:
    person_means = np.nanmean(_observed(population), axis=1)
    names = [c.name for c in population.params.age_bands]
    by_age = {n: person_means[population.age_band == k].mean() for k, n in enumerate(names)}
    shares = np.bincount(population.age_band) / population.n_devices

    assert by_age["65+"] > by_age["45-64"] + 0.05
    assert np.allclose(shares, [c.weight for c in population.params.age_bands], atol=0.03)
    assert {d.region for d in population.devices} == {"north", "south", "east", "west"}


def test_same_seed_gives_identical_populations() -> None:
    a = SyntheticPopulation(50, days=60, seed=5)
    b = generate_population(50, days=60, seed=5)

    for name in ("mood", "logged", "sleep_hours", "steps", "valence", "minute_of_day"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.entries_for(7) == b.entries_for(7)
    assert a.devices == b.devices
    assert a.device_key_for(3) == b.device_key_for(3)


def test_different_seeds_give_different_populations() -> None:
    a = SyntheticPopulation(50, days=60, seed=5)
    b = SyntheticPopulation(50, days=60, seed=6)

    assert not np.array_equal(a.mood, b.mood)
    assert a.device_key_for(0) != b.device_key_for(0)


def test_materialized_entries_match_the_arrays() -> None:
    pop = SyntheticPopulation(5, days=40, seed=3, start=date(2026, 6, 1))

    entries = pop.entries_for(2)

    logged_days = np.flatnonzero(pop.logged[2])
    assert len(entries) == len(logged_days)
    assert [e.time.date() for e in entries] == [pop.dates()[t] for t in logged_days]
    assert [e.mood for e in entries] == pop.mood[2, logged_days].tolist()
    assert all(1 <= len(e.emotions) <= 2 for e in entries)
    assert [len(e.activities) for e in entries] == pop.n_activities[2, logged_days].tolist()


def test_a_device_fills_a_real_diary(tmp_path: Path) -> None:
    pop = SyntheticPopulation(3, days=30, seed=9)

    with Diary.open(tmp_path / "diary.db") as diary:
        ids = pop.fill_diary(diary, 1)
        assert len(diary) == len(ids) == int(pop.logged[1].sum())
        assert diary.read() == pop.entries_for(1)


def test_examples_cover_every_device() -> None:
    pop = SyntheticPopulation(4, days=50, seed=1)

    x, y, device = pop.examples()

    assert len(x) == len(y) == len(device)
    assert set(device.tolist()) == {0, 1, 2, 3}
    assert y.min() >= 1 and y.max() <= 5


def test_impossible_parameters_are_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        SyntheticPopulation(10, days=30, params=PopulationParams(short_sleep_effect=2.0))
    with pytest.raises(InvalidArgumentError):
        SyntheticPopulation(0)


def test_a_federation_spec_saved_again_is_loaded_anew(tmp_path: Path) -> None:
    first = FederationSpec(
        devices=3, holdout_devices=1, days=30, seed=1, consent_url="http://127.0.0.1:1", log_key="k"
    )
    first.save(tmp_path)
    assert FederationSpec.load(tmp_path) == first
    second = dataclasses.replace(first, seed=2, consent_url="http://127.0.0.1:2")
    second.save(tmp_path)
    assert FederationSpec.load(tmp_path) == second
    (tmp_path / SPEC_FILE).write_text("{}")
    with pytest.raises(SDKError, match="not a valid federation spec"):
        FederationSpec.load(tmp_path)
    (tmp_path / SPEC_FILE).unlink()
    with pytest.raises(SDKError, match="is missing"):
        FederationSpec.load(tmp_path)

"""Fill a release store with realistic releases, made by the real pipeline on synthetic devices.

For demos, the dashboard's tests and its benchmark. Nothing here is a hand-written
figure: a :class:`~client_sdk.SyntheticPopulation` keeps diaries; consent arrives
gradually (and is sometimes withdrawn); every week the consenting devices compute their
bounded contributions with the device-side code (:mod:`client_sdk.analytics`) and the
server releases them through :func:`server.analytics.release_analytics`, charged to one
:class:`privacy.Accountant`. Interleaved with those weeks, a small DP-FedAvg of a linear
next-day-mood model (Poisson sampling, clipped updates, Gaussian noise, all from
:mod:`privacy`) publishes model rounds through :class:`server.releases.ReleaseStore`,
charged to the same per-user budget. The analytics noise is planned so that a device
eligible for everything ends within the budget.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt

from client_sdk.analytics import Query, iso_week_start, standard_queries
from client_sdk.features import DailySeries, make_examples
from client_sdk.synthetic import AGE_BANDS, REGIONS, Cohort, PopulationParams, SyntheticPopulation
from privacy import (
    Accountant,
    BudgetExceededError,
    PrivacyEvent,
    add_gaussian_noise,
    clip_update,
    history_epsilon,
)
from server.analytics import release_analytics
from server.releases import ReleaseStore

__all__ = ["SeedReport", "cohort_grid", "seed_release_store"]

log = logging.getLogger(__name__)

TRAINING_PURPOSE: Final = "model-training"
_FIVE_AGE_BANDS: Final = (
    AGE_BANDS[0],
    AGE_BANDS[1],
    Cohort("45-54", 0.13, -0.07, -0.2, 0.92),
    Cohort("55-64", 0.12, -0.06, -0.2, 0.88),
    AGE_BANDS[3],
)
_REGION_NAMES: Final = (
    "north",
    "south",
    "east",
    "west",
    "central",
    "north-east",
    "north-west",
    "south-east",
    "south-west",
    "coast",
    "highlands",
    "islands",
)
_HISTORY_DAYS: Final = 56  # a device trains on its last eight weeks


@dataclass(frozen=True, slots=True)
class SeedReport:
    """What :func:`seed_release_store` wrote."""

    url: str
    start: date
    weeks: int
    cohorts: int
    devices: int
    analytics_noise_multiplier: float
    training_rounds: int
    max_epsilon: float
    seconds: float
    refused_weeks: tuple[date, ...] = field(default=())


def cohort_grid(cohorts: int, *, seed: int = 0) -> tuple[tuple[Cohort, ...], tuple[Cohort, ...]]:
    """(age bands, regions) whose product has ``cohorts`` cells (a multiple of 4 or 5).

    Four cohorts per age band use the synthetic defaults; more regions get decreasing
    weights (the smallest about a quarter of the largest, so some cohorts are too small
    to release) and small mood offsets drawn from ``seed``.
    """
    if cohorts >= 4 and cohorts % 4 == 0:
        ages: tuple[Cohort, ...] = AGE_BANDS
    elif cohorts >= 5 and cohorts % 5 == 0:
        ages = _FIVE_AGE_BANDS
    else:
        raise ValueError(f"cohorts must be a positive multiple of 4 or 5, got {cohorts}")
    n_regions = cohorts // len(ages)
    if n_regions == len(REGIONS):
        return ages, REGIONS
    rng = np.random.default_rng([seed, 7])
    weights = 0.85 ** np.arange(n_regions)
    weights /= weights.sum()
    names = [
        _REGION_NAMES[j] if j < len(_REGION_NAMES) else f"region-{j + 1:02d}"
        for j in range(n_regions)
    ]
    regions = tuple(
        Cohort(
            names[j],
            float(weights[j]),
            float(rng.uniform(-0.08, 0.08)),
            float(rng.uniform(-0.15, 0.15)),
            float(rng.uniform(0.9, 1.1)),
        )
        for j in range(n_regions)
    )
    return ages, regions


def _consent_weeks(
    n: int, weeks: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per device, the week its grant starts and the week it ends (withdrawal or never)."""
    joins = np.where(rng.random(n) < 0.4, 0, rng.integers(0, max(1, int(weeks * 0.75)), n)).astype(
        np.int64
    )
    joins[rng.random(n) < 0.1] = weeks + 1  # never grants
    ends = np.full(n, weeks + 1, dtype=np.int64)
    withdraws = rng.random(n) < 0.08
    ends[withdraws] = joins[withdraws] + rng.integers(1, max(2, weeks), withdraws.sum())
    return joins, ends


def _plan_noise(
    *, budget: float, delta: float, training: tuple[float, float, int], analytics_releases: int
) -> float:
    """The smallest analytics noise multiplier keeping training + analytics under budget.

    Bisection on :func:`privacy.history_epsilon` of the whole history of a device
    eligible for every round and release.
    """
    q, sigma, rounds = training

    def total(noise: float) -> float:
        history = {(1.0, noise): analytics_releases}
        if rounds:
            history[(q, sigma)] = rounds
        return history_epsilon(history, delta=delta)

    target = budget * 0.98
    low, high = 0.5, 1.0
    while total(high) > target:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError("the training rounds alone exceed the budget")
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (low, middle) if total(middle) <= target else (middle, high)
    return high


@dataclass
class _LinearFedAvg:
    """DP-FedAvg of a linear next-day-mood model, only for seeding model rounds."""

    population: SyntheticPopulation
    holdout: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]
    sampling_rate: float
    noise_multiplier: float
    clipping_norm: float
    rng: np.random.Generator
    weights: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def examples(self, device: int, end_day: int) -> tuple[npt.NDArray[np.float32], ...]:
        series = self.population.daily_series(device)
        start = max(0, end_day - _HISTORY_DAYS)
        part = DailySeries(
            start=series.start + timedelta(days=start),
            mood=series.mood[start:end_day],
            sleep_hours=series.sleep_hours[start:end_day],
            steps=series.steps[start:end_day],
            activities=series.activities[start:end_day],
        )
        return make_examples(part)

    def local_update(self, device: int, end_day: int) -> npt.NDArray[np.float64]:
        x, y = self.examples(device, end_day)
        if len(y) == 0:
            return np.zeros_like(self.weights)
        design = np.hstack([x.astype(np.float64), np.ones((len(y), 1))])
        local = self.weights.copy()
        for _ in range(5):  # five full-batch gradient steps on the mean squared error
            local -= 0.05 * 2 * design.T @ (design @ local - y) / len(y)
        return local - self.weights

    def round(self, eligible: npt.NDArray[np.int64], end_day: int) -> None:
        sampled = eligible[self.rng.random(len(eligible)) < self.sampling_rate]
        total = np.zeros_like(self.weights)
        for device in sampled:
            clipped, _ = clip_update(
                [self.local_update(int(device), end_day)], max_norm=self.clipping_norm
            )
            total += clipped[0]
        noisy = add_gaussian_noise(
            total,
            sensitivity=self.clipping_norm,
            noise_multiplier=self.noise_multiplier,
            rng=self.rng,
        )
        expected = max(self.sampling_rate * len(eligible), 1.0)
        self.weights = self.weights + np.asarray(noisy) / expected

    def holdout_mae(self) -> float:
        x, y = self.holdout
        design = np.hstack([x.astype(np.float64), np.ones((len(y), 1))])
        return float(np.mean(np.abs(np.clip(design @ self.weights, 1, 5) - y)))


def _holdout(
    params: PopulationParams, days: int, seed: int, start: date
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    holdout = SyntheticPopulation(
        100, days=min(days, 120), seed=seed + 10_000, start=start, params=params
    )
    x, y, _ = holdout.examples()
    return x, y


def seed_release_store(
    url: str,
    *,
    weeks: int = 104,
    cohorts: int = 50,
    devices: int | None = None,
    seed: int = 0,
    epsilon_budget: float = 10.0,
    delta: float = 1e-5,
    training_rounds: int = 30,
    start: date | None = None,
    accountant_url: str = "sqlite://",
) -> SeedReport:
    """Write ``weeks`` weekly analytics rounds (4 queries, ``cohorts`` cohorts) and
    ``training_rounds`` model rounds into the release store at ``url``.

    ``devices`` defaults to 160 per cohort; ``start`` (a Monday) defaults to ``weeks``
    weeks before the current ISO week. The per-user budgets live in ``accountant_url``
    (default: in memory, thrown away). Reproducible from ``seed``.
    """
    began = time.perf_counter()
    if weeks < 1:
        raise ValueError("weeks must be at least 1")
    n_devices = devices if devices is not None else 160 * cohorts
    first = start if start is not None else iso_week_start(date.today()) - timedelta(weeks=weeks)
    if first.weekday() != 0:
        raise ValueError(f"start must be a Monday, got {first}")
    ages, regions = cohort_grid(cohorts, seed=seed)
    params = PopulationParams(age_bands=ages, regions=regions)
    population = SyntheticPopulation(
        n_devices, days=weeks * 7, seed=seed, start=first, params=params
    )
    queries: tuple[Query, ...] = standard_queries(
        age_bands=[c.name for c in ages], regions=[c.name for c in regions]
    )
    keys = np.array([population.device_key_for(i).device_key for i in range(n_devices)])
    rng = np.random.default_rng([seed, 1])
    joins, ends = _consent_weeks(n_devices, weeks, rng)
    mood = np.where(population.logged, population.mood, np.nan).astype(np.float64)
    sleep = population.sleep_hours
    cohort_of = population.age_band * len(regions) + population.region

    sampling_rate, train_sigma, clip = 0.02, 1.0, 1.0
    rounds = min(training_rounds, weeks)
    noise = _plan_noise(
        budget=epsilon_budget,
        delta=delta,
        training=(sampling_rate, train_sigma, rounds),
        analytics_releases=weeks * len(queries),
    )
    every = max(1, weeks // rounds) if rounds else weeks + 1
    trainer = _LinearFedAvg(
        population=population,
        holdout=_holdout(params, weeks * 7, seed, first),
        sampling_rate=sampling_rate,
        noise_multiplier=train_sigma,
        clipping_norm=clip,
        rng=np.random.default_rng([seed, 2]),
        weights=np.zeros(make_examples(population.daily_series(0))[0].shape[1] + 1),
    )
    refused: list[date] = []
    run_id = f"seed-{seed}"
    with (
        ReleaseStore(url) as store,
        Accountant(accountant_url, epsilon_budget=epsilon_budget, delta=delta) as accountant,
    ):
        if rounds:
            store.start_run(
                run_id=run_id,
                flower_run_id="0",
                purpose=TRAINING_PURPOSE,
                planned_rounds=rounds,
                epsilon_budget=epsilon_budget,
                delta=delta,
                accounting=accountant.method,
                noise_multiplier=train_sigma,
                clipping_norm=clip,
                expected_devices=sampling_rate * n_devices,
                model="linear next-day mood (seeded demo)",
                metric_label="MAE of next-day mood on 100 synthetic held-out devices",
            )
        done = 0
        for week in range(weeks):
            period = first + timedelta(weeks=week)
            active = np.flatnonzero((joins <= week) & (week < ends))
            if rounds and done < rounds and week % every == every - 1:
                done += 1
                _training_round(trainer, store, accountant, run_id, done, active, keys, week)
            days = slice(week * 7, week * 7 + 7)
            vectors = {
                q.name: q.contributions(
                    mood=mood[active, days], sleep=sleep[active, days], cohort=cohort_of[active]
                )
                for q in queries
            }
            contributions = {
                str(keys[device]): {name: rows[row] for name, rows in vectors.items()}
                for row, device in enumerate(active)
            }
            try:
                release_analytics(
                    contributions,
                    eligible=[str(k) for k in keys[active]],
                    queries=queries,
                    period=period,
                    noise_multiplier=noise,
                    accountant=accountant,
                    store=store,
                    rng=np.random.default_rng([seed, 3, week]),
                )
            except BudgetExceededError as error:
                log.warning("Seeding: analytics for %s refused: %s", period, error)
                refused.append(period)
        if rounds:
            store.finish_run(run_id, status="completed", reason=f"{done} planned rounds done")
        max_epsilon = accountant.max_epsilon()
    return SeedReport(
        url=url,
        start=first,
        weeks=weeks,
        cohorts=cohorts,
        devices=n_devices,
        analytics_noise_multiplier=noise,
        training_rounds=rounds,
        max_epsilon=max_epsilon,
        seconds=time.perf_counter() - began,
        refused_weeks=tuple(refused),
    )


def _training_round(
    trainer: _LinearFedAvg,
    store: ReleaseStore,
    accountant: Accountant,
    run_id: str,
    number: int,
    active: npt.NDArray[np.int64],
    keys: npt.NDArray[np.str_],
    week: int,
) -> None:
    event = PrivacyEvent.training_round(
        sampling_rate=trainer.sampling_rate, noise_multiplier=trainer.noise_multiplier
    )
    accountant.charge(
        [str(k) for k in keys[active]],
        event,
        purpose=TRAINING_PURPOSE,
        release_id=f"{run_id}/round-{number}",
    )
    trainer.round(active, end_day=(week + 1) * 7)
    store.record_model_round(
        run_id=run_id,
        round_number=number,
        weights=[trainer.weights[:-1], trainer.weights[-1:]],
        epsilon=accountant.max_epsilon(),
        delta=accountant.delta,
        sampling_rate=trainer.sampling_rate,
        noise_multiplier=trainer.noise_multiplier,
        clipping_norm=trainer.clipping_norm,
        eligible_devices=len(active),
        expected_devices=trainer.sampling_rate * len(active),
        holdout_mae=trainer.holdout_mae(),
        holdout_devices=100,
        holdout_examples=len(trainer.holdout[1]),
    )
    if not np.isfinite(trainer.weights).all():  # pragma: no cover - a bug, not data
        raise RuntimeError("the seeded model diverged")

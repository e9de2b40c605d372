"""Fill a release store with realistic releases made by the production pipeline.

For demos, the dashboard's tests and its benchmark. Nothing here is a hand-written
figure or a second implementation: a synthetic population keeps diaries; consent
arrives gradually (and is sometimes withdrawn) on a simulated timeline, which stands in
for the consent service as the run's :class:`~server.eligibility.EligibilitySource`.

- Model rounds are the production :class:`~server.training.TrainingRound` (gate,
  charge, Poisson sampling, DP-FedAvg aggregation of the MLP, publication with the
  production release epsilon), with one stage replaced: ``send`` trains each sampled
  device in process with the device's own code (:func:`client_sdk.client_app.clipped_update`,
  DP-SGD on the diary up to that week) instead of over Flower.
- Every week, the consenting devices compute their bounded contributions with the device
  code (:meth:`client_sdk.queries.Query.contributions`, vectorized over devices) and the
  production :class:`~server.analytics.AnalyticsRound` charges, aggregates, noises,
  thresholds and publishes them.

Both are charged to one :class:`privacy.Accountant`; the analytics noise is planned so
that a device eligible for everything ends within the budget. A seeded store is
reproducible from its seed, so its figures are NOT private: it is for demos and tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt

from client_sdk.client_app import clipped_update
from client_sdk.features import DailySeries, make_examples
from client_sdk.policy import DevicePolicy
from client_sdk.protocol import TRAINING_PURPOSE
from client_sdk.queries import Query, iso_week_start, standard_queries
from client_sdk.sim import AGE_BANDS, REGIONS, Cohort, PopulationParams, SyntheticPopulation
from client_sdk.training import LocalTrainingConfig
from privacy import Accountant, BudgetExceededError, noise_multiplier_for
from server.analytics import AnalyticsPlan, AnalyticsRound, AnalyticsRun
from server.attestation import Attestations
from server.errors import RunStopped
from server.evaluation import HoldoutSet
from server.releases import ReleaseStore
from server.secagg import SecureSum, local_sum
from server.settings import TrainSettings
from server.sim.holdout import holdout_from_population
from server.training import RoundPlan, TrainingRound, TrainingRun, initial_weights, model_name

__all__ = ["SeedReport", "cohort_grid", "seed_release_store"]

log = logging.getLogger(__name__)

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
_SAMPLING_RATE: Final = 0.02  # q of every seeded training round
_TRAIN_SIGMA: Final = 1.0


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


class _Timeline:
    """Who holds an active grant in the current week (a stand-in for the consent service)."""

    def __init__(
        self, keys: Sequence[str], joins: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]
    ):
        self.keys = list(keys)
        self.joins, self.ends = joins, ends
        self.week = 0

    def active(self) -> npt.NDArray[np.int64]:
        return np.flatnonzero((self.joins <= self.week) & (self.week < self.ends))

    def eligible(self, purpose: str, device_keys: Sequence[str]) -> list[str]:
        active = {self.keys[i] for i in self.active()}
        return [key for key in device_keys if key in active]


@dataclass
class _InProcessRound(TrainingRound):
    """The production round, its devices run in this process on their diary so far.

    Only the transport is replaced: each eligible device draws its coin, trains with the
    device's own code if it takes part, and encodes its clipped update (or zeros) with
    its share of the noise exactly as :func:`client_sdk.secure_sum.masked_reply` does;
    the inputs are summed modulo 2^k. The masks SecAgg+ would add cancel in that sum, so
    the server's stages after it see what they would see in production.
    """

    population: SyntheticPopulation = field(kw_only=True)
    end_day: int = field(kw_only=True)
    rng: np.random.Generator = field(kw_only=True)

    def secure_send(self, plan: RoundPlan, weights: list[np.ndarray]) -> SecureSum:
        assert plan.secure is not None
        mechanism = plan.secure.mechanism
        index_of = {key: node - 1 for node, key in self.run.attestations.device_keys.items()}
        config = self.run.settings.train_config(self.number, participation_rate=plan.sampling_rate)
        training = LocalTrainingConfig.from_request(config, DevicePolicy())

        def inputs() -> Iterator[npt.NDArray[np.float64]]:
            for key in plan.eligible:
                update = np.zeros(mechanism.dimension)
                if self.rng.random() < plan.sampling_rate:
                    diary = _diary_until(self.population, index_of[key], self.end_day)
                    X, y = make_examples(diary)
                    if len(y):
                        trained = clipped_update(
                            weights,
                            X,
                            y,
                            training=training,
                            clipping_norm=config.clipping_norm,
                            accountant=None,
                            seed=int(self.rng.integers(1 << 31)),
                        )
                        update = np.concatenate([u.astype(np.float64).ravel() for u in trained])
                yield update

        return local_sum(plan.secure.params, mechanism, inputs(), rng=self.rng)


def _diary_until(population: SyntheticPopulation, index: int, end_day: int) -> DailySeries:
    """Device ``index``'s last eight weeks of diary before ``end_day``."""
    series = population.daily_series(index)
    start = max(0, end_day - _HISTORY_DAYS)
    return DailySeries(
        start=series.start + timedelta(days=start),
        mood=series.mood[start:end_day],
        sleep_hours=series.sleep_hours[start:end_day],
        steps=series.steps[start:end_day],
        activities=series.activities[start:end_day],
    )


def _holdout(params: PopulationParams, days: int, seed: int, start: date) -> HoldoutSet:
    population = SyntheticPopulation(
        100, days=min(days, 120), seed=seed + 10_000, start=start, params=params
    )
    return holdout_from_population(population, range(100))


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
    keys = [population.device_key_for(i).device_key for i in range(n_devices)]
    joins, ends = _consent_weeks(n_devices, weeks, np.random.default_rng([seed, 1]))
    timeline = _Timeline(keys, joins, ends)
    mood = np.where(population.logged, population.mood, np.nan).astype(np.float64)
    sleep = population.sleep_hours
    cohort_of = population.age_band * len(regions) + population.region

    rounds = min(training_rounds, weeks)
    settings = TrainSettings(
        rounds=max(rounds, 1),
        noise_multiplier=_TRAIN_SIGMA,
        clipping_norm=1.0,
        epsilon_budget=epsilon_budget,
        delta=delta,
        seed=seed,
    )
    # The least analytics noise that keeps a device eligible for everything within budget.
    noise = noise_multiplier_for(
        epsilon=epsilon_budget * 0.98,
        delta=delta,
        releases=weeks * len(queries),
        after={(_SAMPLING_RATE, _TRAIN_SIGMA): rounds} if rounds else None,
    )
    every = max(1, weeks // rounds) if rounds else weeks + 1
    refused: list[date] = []
    with (
        ReleaseStore(url) as store,
        Accountant(accountant_url, epsilon_budget=epsilon_budget, delta=delta) as accountant,
    ):
        training = TrainingRun(
            grid=None,
            settings=settings,
            eligibility=timeline,
            accountant=accountant,
            store=store,
            attestations=Attestations(device_keys={i + 1: key for i, key in enumerate(keys)}),
            run_id=f"seed-{seed}",
            holdout=_holdout(params, weeks * 7, seed, first),
        )
        analytics = AnalyticsRun(
            plan=AnalyticsPlan(weeks=(), epsilon=1.0, delta=delta, queries=queries),
            eligibility=timeline,
            accountant=accountant,
            store=store,
            rng=np.random.default_rng([seed, 3]),
            noise_multiplier=noise,
            private=False,
        )
        if rounds:
            store.start_run(
                run_id=training.run_id,
                flower_run_id="0",
                purpose=TRAINING_PURPOSE,
                planned_rounds=rounds,
                epsilon_budget=epsilon_budget,
                delta=delta,
                accounting=accountant.method,
                noise_multiplier=_TRAIN_SIGMA,
                clipping_norm=settings.clipping_norm,
                expected_devices=_SAMPLING_RATE * n_devices,
                model=f"{model_name()}, seeded demo",
                metric_label=training.holdout.label if training.holdout else "",
            )
        weights = initial_weights(seed)
        rng = np.random.default_rng([seed, 2])  # the devices' coins, rounding and noise
        done = 0
        for week in range(weeks):
            timeline.week = week
            period = first + timedelta(weeks=week)
            if rounds and done < rounds and week % every == every - 1:
                done += 1
                # q = 0.02 whoever is eligible: the rate the analytics noise was planned for.
                training.settings = settings.model_copy(
                    update={"expected_devices": max(_SAMPLING_RATE * len(timeline.active()), 1e-9)}
                )
                round_ = _InProcessRound(
                    training, done, population=population, end_day=(week + 1) * 7, rng=rng
                )
                try:
                    _, weights = round_(weights)
                except RunStopped as stop:
                    log.warning("Seeding: training round %d not run: %s", done, stop.reason)
            active = timeline.active()
            days = slice(week * 7, week * 7 + 7)
            vectors = {
                q.name: q.contributions(
                    mood=mood[active, days], sleep=sleep[active, days], cohort=cohort_of[active]
                )
                for q in queries
            }
            contributions = {
                keys[device]: {name: rows[row] for name, rows in vectors.items()}
                for row, device in enumerate(active)
            }
            try:
                AnalyticsRound(analytics, period).release([keys[i] for i in active], contributions)
            except BudgetExceededError as error:
                log.warning("Seeding: analytics for %s refused: %s", period, error)
                refused.append(period)
        if rounds:
            store.finish_run(
                training.run_id, status="completed", reason=f"{done} planned rounds done"
            )
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

"""A synthetic population of devices with mood diaries, for simulations, tests and the demo.

Simulation only: production code never imports :mod:`client_sdk.sim`.

Everything is generated as numpy arrays of shape (devices, days), vectorized over
devices, so 10,000 device-years take seconds; ``Entry`` objects are made only when one
device's diary is materialized (``entries_for``, ``fill_diary``).

The model, per device i and day t (``sleep_hours`` on day t is the night before it):

    latent_it = baseline_i + weekday[t] + a_it
    a_it      = phi * a_i,t-1 + sleep_effect(sleep_it) + activity_effect * z_it + noise_it
    mood_it   = clip(round(latent_it), 1, 5)       logged with probability p_i

The parameters below are targets for what an analyst sees (the 1-5 ratings), so the
generator calibrates: ``ar_coefficient`` (phi) and ``noise_sd`` are solved from the
target autocorrelation and within-person SD given the weekday, sleep and activity
effects and the rounding variance (1/12); the baseline SD is what is left of the
between-person SD after cohorts and habitual sleep; and ``clip_shift`` (about +0.03)
moves the latent scale so the observed mean is ``mean_mood`` despite clipping at 5.

Parameters and where they come from (``PopulationParams``; the defaults):

- Mean mood 3.7 on Daylio's 1-5 scale with a between-person SD of 0.5: people on
  average report mildly positive mood (Diener & Diener 1996, "Most people are happy",
  Psychological Science 7:181-185); 3.7 / 0.5 are the brief's figures for mood-app
  diaries. ``between_person_sd`` is the SD of people's true mean mood, including the
  cohort and habitual-sleep differences below.
- Within-person daily SD 0.65 (latent, before rounding; about 0.7 once rounded), which
  puts the intraclass correlation near 0.35, inside the 0.3-0.5 usually found for daily
  affect in diary studies (Bolger & Laurenceau 2013, Intensive Longitudinal Methods).
- Lag-1 autocorrelation 0.3 of a person's observed daily mood: emotional inertia
  (Kuppens, Allen & Sheeber 2010, Psychological Science 21:984-991). ``autocorrelation``
  is the target for the *observed* 1-5 ratings; the latent AR coefficient
  ``ar_coefficient`` is derived from it, larger because rounding adds about 1/12 of
  uncorrelated variance.
- Sleep: short sleep lowers next-day mood, non-linearly, with no penalty between 7.5
  and 9 h: 0.15 mood points per hour below 7.5 h, 0.05 per hour above 9 h. Direction and
  shape from Triantafillou et al. 2019 (JMIR Mental Health 6:e12613) and the review of
  Konjarski et al. 2018 (Sleep Medicine Reviews 42:47-58); the 7-9 h band is the
  National Sleep Foundation's (Hirshkowitz et al. 2015, Sleep Health 1:40-43). Habitual
  sleep 7.1 h (between-person SD 0.6 h), night-to-night SD 1.0 h.
- Physical activity above one's own usual lifts mood a little: +0.08 points per
  within-person SD of log steps (Kanning & Schlicht 2010, J Sport Exerc Psychol
  32:253-261, within-person EMA). Steps are log-normal around a 6,000/day median with
  between-person SD 0.4 and day-to-day SD 0.35 on the log scale (smartphone step counts
  average about 5,000/day worldwide: Althoff et al. 2017, Nature 547:336-339).
- Weekdays: Friday to Sunday slightly better, Monday barely worse than Tuesday-Thursday
  (Stone, Schneider & Harter 2012, J Positive Psychology 7:306-314; Ryan, Bernstein &
  Brown 2010, J Social Clin Psychol 29:95-122). Offsets (Mon..Sun) -0.04, -0.04, -0.03,
  -0.02, +0.04, +0.06, +0.03 before centring.
- Logging: about 70% of days (diary/EMA compliance is typically 70-80%: Wrzus & Neubauer
  2023, Assessment 30:825-846); each person's rate is Beta-distributed around 0.7
  (concentration 12, so most people log 50-90% of days), missing completely at random.
  Sleep is reported on 90% and steps on 95% of logged days.

Cohorts, with modest, documented differences (offsets are centred on their weighted
mean, so the population mean stays 3.7):

- Age band (weight; mood offset; sleep offset h; steps factor): 18-29 (0.30; 0.00;
  +0.3; 1.10), 30-44 (0.30; -0.05; -0.1; 1.00), 45-64 (0.25; -0.07; -0.2; 0.90), 65+
  (0.15; +0.10; +0.1; 0.75): well-being dips in mid-life and everyday emotional
  experience improves in older age (Blanchflower & Oswald 2008, Soc Sci Med 66:1733-1749;
  Carstensen et al. 2011, Psychology and Aging 26:21-33); older adults walk less.
- Region: north (0.25; -0.05; +0.1; 0.95), south (0.25; +0.05; -0.2; 1.00), east (0.25;
  -0.02; 0.0; 1.00), west (0.25; +0.02; 0.0; 1.05). These are illustrative, not
  empirical: they exist so the dashboard's cohort comparisons have something to find.

No seasonality, no mood-dependent missingness, one entry per logged day (evening time).

>>> pop = SyntheticPopulation(n_devices=3, days=30, seed=1)
>>> pop.mood.shape, len(pop.entries_for(0)) == int(pop.logged[0].sum())
((3, 30), True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from client_sdk.entry import Entry
from client_sdk.errors import InvalidArgumentError
from client_sdk.features import DEFAULT_WINDOW, DailySeries, make_examples
from client_sdk.keys import DeviceKey
from client_sdk.queries import DEFAULT_AGE_BANDS, DEFAULT_REGIONS

if TYPE_CHECKING:
    from client_sdk.diary import Diary

__all__ = [
    "AGE_BANDS",
    "REGIONS",
    "Cohort",
    "DeviceInfo",
    "PopulationParams",
    "SyntheticPopulation",
    "generate_population",
]


@dataclass(frozen=True, slots=True)
class Cohort:
    """One level of a cohort variable and how it shifts mood, sleep and steps."""

    name: str
    weight: float
    mood_offset: float
    sleep_offset: float = 0.0
    steps_factor: float = 1.0


# The platform's default cohort grid (client_sdk.queries), with each level's effects.
AGE_BANDS: Final = tuple(
    Cohort(name, *effects)
    for name, effects in zip(
        DEFAULT_AGE_BANDS,
        (
            (0.30, 0.00, +0.3, 1.10),
            (0.30, -0.05, -0.1, 1.00),
            (0.25, -0.07, -0.2, 0.90),
            (0.15, +0.10, +0.1, 0.75),
        ),
        strict=True,
    )
)
REGIONS: Final = tuple(
    Cohort(name, *effects)
    for name, effects in zip(
        DEFAULT_REGIONS,
        (
            (0.25, -0.05, +0.1, 0.95),
            (0.25, +0.05, -0.2, 1.00),
            (0.25, -0.02, 0.0, 1.00),
            (0.25, +0.02, 0.0, 1.05),
        ),
        strict=True,
    )
)

EMOTIONS_BY_MOOD: Final = {
    1: ("sad", "hopeless", "anxious", "overwhelmed", "lonely", "drained"),
    2: ("stressed", "sad", "anxious", "irritated", "frustrated", "drained"),
    3: ("indifferent", "content", "drained", "calm", "worried"),
    4: ("content", "calm", "happy", "relieved", "hopeful", "grateful"),
    5: ("happy", "joyful", "excited", "grateful", "proud", "confident"),
}
ACTIVITIES: Final = (
    "work",
    "family",
    "friends",
    "relax",
    "reading",
    "cooking",
    "shopping",
    "cleaning",
    "gaming",
    "movies",
    "music",
    "date",
)
SPORT: Final = "sport"
_BURN_IN: Final = 28  # days discarded so the AR process starts in its stationary state


@dataclass(frozen=True, slots=True)
class PopulationParams:
    """Ground truth of the generator (see the module docstring for sources)."""

    mean_mood: float = 3.7
    between_person_sd: float = 0.5
    within_person_sd: float = 0.65
    autocorrelation: float = 0.3
    logged_fraction: float = 0.7
    logging_concentration: float = 12.0
    sleep_mean: float = 7.1
    sleep_between_sd: float = 0.6
    sleep_within_sd: float = 1.0
    sleep_optimum: tuple[float, float] = (7.5, 9.0)
    short_sleep_effect: float = 0.15
    long_sleep_effect: float = 0.05
    sleep_reported: float = 0.9
    steps_median: float = 6000.0
    steps_between_sdlog: float = 0.4
    steps_within_sdlog: float = 0.35
    activity_effect: float = 0.08
    steps_reported: float = 0.95
    weekday_effects: tuple[float, ...] = (-0.04, -0.04, -0.03, -0.02, 0.04, 0.06, 0.03)
    age_bands: tuple[Cohort, ...] = field(default=AGE_BANDS)
    regions: tuple[Cohort, ...] = field(default=REGIONS)

    def sleep_effect(self, hours: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Mood change (before centring) after a night of ``hours`` sleep."""
        low, high = self.sleep_optimum
        h = np.asarray(hours, dtype=np.float64)
        return -self.short_sleep_effect * np.maximum(
            0.0, low - h
        ) - self.long_sleep_effect * np.maximum(0.0, h - high)

    def centred_weekday_effects(self) -> npt.NDArray[np.float64]:
        """Weekday offsets (Monday first) with mean zero."""
        w = np.asarray(self.weekday_effects, dtype=np.float64)
        centred: npt.NDArray[np.float64] = w - w.mean()
        return centred


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A synthetic device's public metadata: its cohort, never its diary."""

    index: int
    device_id: str
    age_band: str
    region: str


def _centred_offsets(cohorts: Sequence[Cohort]) -> tuple[npt.NDArray[np.float64], float]:
    weights = np.array([c.weight for c in cohorts], dtype=np.float64)
    weights /= weights.sum()
    offsets = np.array([c.mood_offset for c in cohorts], dtype=np.float64)
    offsets -= weights @ offsets
    return offsets, float(weights @ offsets**2)


class SyntheticPopulation:
    """N devices with a diary of ``days`` days each, reproducible from ``seed``.

    Arrays (devices x days): ``mood`` (int8, 0 = not logged), ``logged`` (bool),
    ``valence``, ``sleep_hours``, ``steps`` (float64, NaN = not reported), ``n_activities``
    (int8), ``minute_of_day`` (int16), ``latent_mood`` (float32, before rounding). Per
    device: ``age_band``, ``region`` (indices into ``params``), ``baseline``,
    ``logging_rate``, ``usual_sleep``, ``usual_log_steps``. Per day: ``weekday`` (0 =
    Monday). Ground truth: ``params`` and the derived ``ar_coefficient``, ``noise_sd``,
    ``clip_shift``.
    """

    def __init__(
        self,
        n_devices: int,
        *,
        days: int = 365,
        seed: int = 0,
        start: date | None = None,
        tz: tzinfo = UTC,
        params: PopulationParams | None = None,
    ) -> None:
        if n_devices < 1 or days < 1:
            raise InvalidArgumentError("need at least one device and one day")
        self.n_devices = n_devices
        self.days = days
        self.seed = seed
        self.start = date(2026, 1, 1) if start is None else start
        self.tz = tz
        self.params = p = PopulationParams() if params is None else params
        rng = np.random.default_rng(seed)
        n, total = n_devices, days + _BURN_IN

        # Who the devices are.
        self.age_band = rng.choice(len(p.age_bands), n, p=_weights(p.age_bands))
        self.region = rng.choice(len(p.regions), n, p=_weights(p.regions))
        age_mood, age_var = _centred_offsets(p.age_bands)
        region_mood, region_var = _centred_offsets(p.regions)
        age_sleep = np.array([c.sleep_offset for c in p.age_bands])[self.age_band]
        region_sleep = np.array([c.sleep_offset for c in p.regions])[self.region]
        steps_factor = (
            np.array([c.steps_factor for c in p.age_bands])[self.age_band]
            * np.array([c.steps_factor for c in p.regions])[self.region]
        )

        # Day-level covariates, burn-in days first.
        self.usual_sleep = (
            p.sleep_mean + age_sleep + region_sleep + rng.normal(0, p.sleep_between_sd, n)
        )
        sleep = np.clip(
            self.usual_sleep[:, None] + rng.normal(0, p.sleep_within_sd, (n, total)), 3.0, 12.0
        ).round(1)
        self.usual_log_steps = np.log(p.steps_median * steps_factor) + rng.normal(
            0, p.steps_between_sdlog, n
        )
        steps_z = rng.standard_normal((n, total))
        steps = np.exp(self.usual_log_steps[:, None] + p.steps_within_sdlog * steps_z).round()

        # Calibration: pick the AR coefficient and noise so that the *observed* lag-1
        # autocorrelation and the latent within-person SD hit their targets.
        weekday = p.centred_weekday_effects()
        v_week = float(np.mean(weekday**2))
        c_week = float(np.mean(weekday * np.roll(weekday, -1)))
        v_ar = p.within_person_sd**2 - v_week
        phi = (p.autocorrelation * (p.within_person_sd**2 + 1 / 12) - c_week) / v_ar
        if not 0.0 <= phi < 0.95:
            raise InvalidArgumentError(f"autocorrelation gives an unusable AR coefficient {phi}")
        sleep_eff = p.sleep_effect(sleep)
        sleep_eff -= sleep_eff.mean()
        v_sleep = float(np.mean(sleep_eff.var(axis=1)))
        v_noise = v_ar * (1 - phi**2) - v_sleep - p.activity_effect**2
        if v_noise < 0.01:
            raise InvalidArgumentError("sleep/activity effects exceed within_person_sd")
        self.ar_coefficient = float(phi)
        self.noise_sd = float(np.sqrt(v_noise))

        innovation = (
            sleep_eff + p.activity_effect * steps_z + rng.normal(0, self.noise_sd, (n, total))
        )
        ar = np.empty((n, total))
        ar[:, 0] = innovation[:, 0] / np.sqrt(1 - phi**2)
        for t in range(1, total):
            ar[:, t] = phi * ar[:, t - 1] + innovation[:, t]

        # People differ in habitual sleep, so part of the between-person SD is already
        # there; the baseline SD makes up the rest.
        v_habit = float(np.var(sleep_eff.mean(axis=1))) / (1 - phi) ** 2
        v_base = p.between_person_sd**2 - age_var - region_var - v_habit
        if v_base < 0:
            raise InvalidArgumentError("cohort and sleep differences exceed between_person_sd")
        self.baseline = (
            p.mean_mood
            + age_mood[self.age_band]
            + region_mood[self.region]
            + rng.normal(0, np.sqrt(v_base), n)
        )

        keep = slice(_BURN_IN, total)
        self.weekday = (self.start.weekday() + np.arange(days)) % 7
        latent = self.baseline[:, None] + weekday[self.weekday][None, :] + ar[:, keep]
        # Clipping at 5 cuts more of the upper tail than the lower one; shift the latent
        # scale so the mean of the observed 1-5 ratings is ``mean_mood`` (about +0.03).
        self.clip_shift = 0.0
        for _ in range(2):
            observed = np.clip(np.rint(latent + self.clip_shift), 1, 5).mean()
            self.clip_shift += p.mean_mood - float(observed)
        self.baseline += self.clip_shift
        latent += self.clip_shift
        self.latent_mood = latent.astype(np.float32)

        # What the diaries hold.
        a = p.logging_concentration * p.logged_fraction
        self.logging_rate = rng.beta(a, p.logging_concentration - a, n)
        self.logged = rng.random((n, days)) < self.logging_rate[:, None]
        self.mood = np.where(self.logged, np.clip(np.rint(latent), 1, 5), 0).astype(np.int8)
        self.valence = np.where(self.logged, np.clip((latent - 3) / 2, -1, 1).round(3), np.nan)
        has_sleep = self.logged & (rng.random((n, days)) < p.sleep_reported)
        has_steps = self.logged & (rng.random((n, days)) < p.steps_reported)
        self.sleep_hours = np.where(has_sleep, sleep[:, keep], np.nan)
        self.steps = np.where(has_steps, steps[:, keep], np.nan)
        active = rng.poisson(1.5 + 0.8 * (steps_z[:, keep] > 1.0))
        self.n_activities = np.where(self.logged, np.minimum(active, 5), 0).astype(np.int8)
        self.minute_of_day = rng.integers(18 * 60, 24 * 60, (n, days)).astype(np.int16)
        self._steps_z = steps_z[:, keep].astype(np.float32)

    # -- per-device views ----------------------------------------------------------------

    def __len__(self) -> int:
        return self.n_devices

    @property
    def devices(self) -> list[DeviceInfo]:
        """Every device's id and cohort."""
        ages = [c.name for c in self.params.age_bands]
        regions = [c.name for c in self.params.regions]
        return [
            DeviceInfo(i, self.device_id(i), ages[self.age_band[i]], regions[self.region[i]])
            for i in range(self.n_devices)
        ]

    def device_id(self, i: int) -> str:
        """A stable, human-readable id for device ``i``."""
        return f"synthetic-{self.seed}-{i:06d}"

    def device_key_for(self, i: int) -> DeviceKey:
        """A deterministic Ed25519 key for device ``i`` (simulations only, never real use)."""
        seed = hashlib.sha256(f"moodfed-synthetic:{self.seed}:{i}".encode()).digest()
        return DeviceKey.from_seed(seed)

    def dates(self) -> list[date]:
        """The calendar day of each column."""
        return [self.start + timedelta(days=t) for t in range(self.days)]

    def daily_series(self, i: int) -> DailySeries:
        """Device ``i``'s diary as daily arrays, without building any ``Entry``."""
        logged = self.logged[i]
        return DailySeries(
            start=self.start,
            mood=np.where(logged, self.mood[i], np.nan).astype(np.float64),
            sleep_hours=self.sleep_hours[i].copy(),
            steps=self.steps[i].copy(),
            activities=np.where(logged, self.n_activities[i], np.nan).astype(np.float64),
        )

    def entries_for(self, i: int) -> list[Entry]:
        """Materialize device ``i``'s diary as entries (labels drawn reproducibly)."""
        if not 0 <= i < self.n_devices:
            raise InvalidArgumentError(f"device index {i} out of range")
        rng = np.random.default_rng([self.seed, i])
        entries = []
        for t in np.flatnonzero(self.logged[i]):
            mood = int(self.mood[i, t])
            pool = EMOTIONS_BY_MOOD[mood]
            emotions = list(rng.choice(pool, size=int(rng.integers(1, 3)), replace=False))
            count = int(self.n_activities[i, t])
            activities = [SPORT] if count and self._steps_z[i, t] > 1.0 else []
            others = rng.choice(ACTIVITIES, size=count - len(activities), replace=False)
            activities += [str(a) for a in others]
            when = datetime.combine(
                self.start + timedelta(days=int(t)),
                time(*divmod(int(self.minute_of_day[i, t]), 60)),
                tzinfo=self.tz,
            )
            sleep = self.sleep_hours[i, t]
            steps = self.steps[i, t]
            entries.append(
                Entry(
                    time=when,
                    mood=mood,
                    valence=float(self.valence[i, t]),
                    emotions=[str(e) for e in emotions],
                    activities=activities,
                    sleep_hours=None if np.isnan(sleep) else float(sleep),
                    steps=None if np.isnan(steps) else int(steps),
                )
            )
        return entries

    def fill_diary(self, diary: Diary, i: int) -> list[str]:
        """Log device ``i``'s entries into ``diary`` in one transaction; returns the ids."""
        return diary.log_many(self.entries_for(i))

    def examples(
        self, *, window: int = DEFAULT_WINDOW
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Training examples of every device: ``X``, ``y`` and the device index per row."""
        xs, ys, owners = [], [], []
        for i in range(self.n_devices):
            x, y = make_examples(self.daily_series(i), window=window)
            xs.append(x)
            ys.append(y)
            owners.append(np.full(len(y), i, dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(owners)


def _weights(cohorts: Sequence[Cohort]) -> npt.NDArray[np.float64]:
    weights = np.array([c.weight for c in cohorts], dtype=np.float64)
    normalized: npt.NDArray[np.float64] = weights / weights.sum()
    return normalized


def generate_population(
    n_devices: int,
    *,
    days: int = 365,
    seed: int = 0,
    start: date | None = None,
    params: PopulationParams | None = None,
) -> SyntheticPopulation:
    """Shorthand for ``SyntheticPopulation(n_devices, days=..., seed=..., ...)``."""
    return SyntheticPopulation(n_devices, days=days, seed=seed, start=start, params=params)

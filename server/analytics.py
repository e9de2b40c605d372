"""Federated analytics, one ISO week as stages: gate, charge, send, aggregate, publish.

An :class:`AnalyticsPlan` names the weeks and what all of them together may cost. Each
week is one round over every device eligible for ``population-analytics`` at its start
(no sampling: each release is a plain Gaussian mechanism over everyone eligible, q = 1
in the accountant):

1. **gate**: ask the consent service which attested devices may contribute now;
2. **charge**: every eligible device the round's cost, ``PrivacyEvent.analytics_release``
   with one Gaussian per query, all or nothing, in the same per-user budget as training
   (over budget: :class:`privacy.BudgetExceededError`, nothing released or written);
3. **send**: the week and the query specs to those nodes only; each device checks its
   own record too and answers with one bounded vector per query, or with nothing;
4. **aggregate**: per query, drop what came from a key that is not eligible, bound the
   rest again and sum (:func:`server.figures.sum_contributions`), add Gaussian noise of std
   ``sigma * sensitivity`` to every slot;
5. **publish**: turn each noisy sum into cells (:func:`server.figures.release_cells`),
   suppressing any cell whose noisy count misses the threshold
   (:func:`privacy.release_threshold`: a cell of fewer than 11 people is released with
   probability at most 0.001), and record them with their (epsilon, delta).

A release's epsilon is the largest total spend (every purpose) of the users eligible
for it, as for model rounds.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import numpy.typing as npt
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from sqlalchemy import inspect, select

from client_sdk.protocol import (
    ANALYTICS_CONFIG_RECORD,
    ANALYTICS_MESSAGE_TYPE,
    ANALYTICS_PURPOSE,
    CONTRIBUTION_RECORD,
)
from client_sdk.queries import Query, iso_week_start, queries_to_config, standard_queries
from privacy import (
    DEFAULT_FALSE_RELEASE_BOUND,
    DEFAULT_MIN_CONTRIBUTORS,
    Accountant,
    BudgetExceededError,
    PrivacyEvent,
    add_gaussian_noise,
    gaussian_epsilon,
    history_epsilon,
    noise_multiplier_for,
    release_threshold,
)
from server.eligibility import EligibilitySource
from server.figures import release_cells, sum_contributions
from server.messaging import exchange
from server.observers import RunObserver
from server.releases import AnalyticsRelease, QueryRelease, ReleaseStore

__all__ = [
    "AnalyticsPlan",
    "AnalyticsReport",
    "AnalyticsRound",
    "AnalyticsRun",
    "last_full_weeks",
    "run_analytics",
]

log = logging.getLogger(__name__)

Contributions = Mapping[str, Mapping[str, npt.ArrayLike]]
"""Device key -> its vector per query name: what the devices answered."""


@dataclass(frozen=True, slots=True)
class AnalyticsPlan:
    """Which weeks to release, and the (epsilon, delta) all of them together may cost."""

    weeks: tuple[date, ...]
    epsilon: float
    delta: float
    queries: tuple[Query, ...] = standard_queries()
    timeout: float = 120.0
    min_contributors: int = DEFAULT_MIN_CONTRIBUTORS
    false_release_bound: float = DEFAULT_FALSE_RELEASE_BOUND

    @property
    def noise_multiplier(self) -> float:
        return noise_multiplier_for(
            epsilon=self.epsilon, delta=self.delta, releases=len(self.weeks) * len(self.queries)
        )


@dataclass(frozen=True, slots=True)
class AnalyticsReport:
    """What one analytics week released (also written to the release store)."""

    period: date
    round_id: str
    release_ids: tuple[int, ...]
    releases: tuple[QueryRelease, ...]
    n_eligible: int
    epsilon_after: float


@dataclass
class AnalyticsRun:
    """What every week of a plan shares. ``grid`` and ``attested`` are only needed to
    send (a caller holding the contributions already passes neither)."""

    plan: AnalyticsPlan
    eligibility: EligibilitySource | None
    accountant: Accountant
    store: ReleaseStore
    grid: Grid | None = None
    attested: Mapping[int, str] | None = None
    observers: Sequence[RunObserver] = ()
    rng: np.random.Generator | None = None
    """Reproducible noise (tests and seeded demo stores only); None: the OS's CSPRNG."""
    noise_multiplier: float | None = None
    """Overrides the plan's calibration (tests)."""

    @property
    def sigma(self) -> float:
        return self.noise_multiplier or self.plan.noise_multiplier


@dataclass
class AnalyticsRound:
    """One week's stages over its run (see the module docstring)."""

    run: AnalyticsRun
    week: date

    def __post_init__(self) -> None:
        if self.week.weekday() != 0:
            raise ValueError(f"a period is named by its ISO week's Monday; {self.week} is not one")
        names = [q.name for q in self.run.plan.queries]
        if not names:
            raise ValueError("an analytics round needs at least one query")
        if len(set(names)) != len(names):
            raise ValueError("each query may be released once per round")

    @property
    def round_id(self) -> str:
        """The accountant's release id: the week and its queries."""
        names = "+".join(q.name for q in self.run.plan.queries)
        return f"{self.week.isoformat()}/{names}"

    def gate(self) -> tuple[str, ...]:
        """The attested devices whose ledger record for analytics is a grant now."""
        if self.run.eligibility is None or self.run.attested is None:
            raise ValueError("gating needs the consent service and the attested devices")
        keys = list(self.run.attested.values())
        return tuple(self.run.eligibility.eligible(ANALYTICS_PURPOSE, keys))

    def charge(self, eligible: Sequence[str]) -> None:
        """Charge every eligible key, answer or not (the charge must not depend on data).

        Raises :class:`privacy.BudgetExceededError` (nothing charged) over the budget and
        :class:`privacy.PrivacyError` if this week was already charged.
        """
        event = PrivacyEvent.analytics_release(
            noise_multiplier=self.run.sigma, count=len(self.run.plan.queries)
        )
        self.run.accountant.charge(
            sorted(set(eligible)), event, purpose=ANALYTICS_PURPOSE, release_id=self.round_id
        )

    def send(self, eligible: Sequence[str]) -> dict[str, dict[str, npt.NDArray[np.float64]]]:
        """The week and the query specs to the eligible nodes; their vectors by key."""
        if self.run.grid is None or self.run.attested is None:
            raise ValueError("sending needs the grid and the attested devices")
        nodes_of = {key: node for node, key in self.run.attested.items()}
        config = ConfigRecord(
            {**queries_to_config(self.run.plan.queries), "week": self.week.isoformat()}
        )
        messages = [
            Message(
                RecordDict({ANALYTICS_CONFIG_RECORD: config}),
                dst_node_id=nodes_of[key],
                message_type=ANALYTICS_MESSAGE_TYPE,
                group_id=f"analytics-{self.week.isoformat()}",
            )
            for key in eligible
        ]
        replies = exchange(
            self.run.grid,
            messages,
            timeout=self.run.plan.timeout,
            phase=f"analytics {self.week.isoformat()}",
            observers=self.run.observers,
        )
        contributions: dict[str, dict[str, npt.NDArray[np.float64]]] = {}
        for reply in replies:
            if reply.has_error() or CONTRIBUTION_RECORD not in reply.content.array_records:
                continue  # refused, failed, dropped or malformed: contributes nothing
            key = self.run.attested.get(reply.metadata.src_node_id)
            if key is not None and key not in contributions:
                record = reply.content.array_records[CONTRIBUTION_RECORD]
                contributions[key] = {name: array.numpy() for name, array in record.items()}
        return contributions

    def aggregate(
        self, eligible: Sequence[str], contributions: Contributions
    ) -> dict[str, npt.NDArray[np.float64]]:
        """Per query, the bounded sum of the eligible devices' vectors plus Gaussian noise."""
        noisy: dict[str, npt.NDArray[np.float64]] = {}
        for query in self.run.plan.queries:
            by_device = {
                key: vectors[query.name]
                for key, vectors in contributions.items()
                if query.name in vectors
            }
            total = sum_contributions(query, by_device, eligible=eligible)
            noisy[query.name] = np.asarray(
                add_gaussian_noise(
                    total,
                    sensitivity=query.sensitivity,
                    noise_multiplier=self.run.sigma,
                    rng=self.run.rng,
                )
            )
        return noisy

    def publish(
        self, eligible: Sequence[str], noisy: Mapping[str, npt.NDArray[np.float64]]
    ) -> AnalyticsReport:
        """The week's cells (small ones suppressed), stored with their privacy cost."""
        run, plan = self.run, self.run.plan
        keys = sorted(set(eligible))
        delta, method, sigma = run.accountant.delta, run.accountant.method, run.sigma
        history = _previous_analytics(run.store)
        history[(1.0, float(sigma))] += len(plan.queries)
        purpose_epsilon = history_epsilon(history, delta=delta, method=method)
        round_epsilon = history_epsilon(
            {(1.0, float(sigma)): len(plan.queries)}, delta=delta, method=method
        )
        own_epsilon = gaussian_epsilon(noise_multiplier=sigma, delta=delta)
        released = []
        for query in plan.queries:
            noise_std = sigma * query.sensitivity
            threshold = release_threshold(
                noise_std=noise_std,
                min_contributors=plan.min_contributors,
                false_release_bound=plan.false_release_bound,
            )
            released.append(
                QueryRelease(
                    query=query.name,
                    title=query.title,
                    statistic=query.statistic,
                    unit=query.unit,
                    period=self.week,
                    round_id=self.round_id,
                    noise_multiplier=float(sigma),
                    sensitivity=query.sensitivity,
                    noise_std=noise_std,
                    threshold=threshold,
                    min_contributors=plan.min_contributors,
                    false_release_bound=plan.false_release_bound,
                    epsilon=own_epsilon,
                    delta=delta,
                    round_epsilon=round_epsilon,
                    purpose_epsilon=purpose_epsilon,
                    epsilon_budget=run.accountant.epsilon_budget,
                    n_eligible=len(keys),
                    cells=release_cells(
                        query, noisy[query.name], noise_std=noise_std, threshold=threshold
                    ),
                )
            )
        epsilon_after = run.accountant.max_epsilon(keys)
        ids = run.store.record_analytics_week(
            released, epsilon=epsilon_after, purpose=ANALYTICS_PURPOSE
        )
        suppressed = sum(cell.suppressed for r in released for cell in r.cells)
        log.info(
            "Released analytics for %s: %d queries, %d eligible, %d cell(s) suppressed, eps %.3g",
            self.week,
            len(released),
            len(keys),
            suppressed,
            epsilon_after,
        )
        return AnalyticsReport(
            period=self.week,
            round_id=self.round_id,
            release_ids=tuple(ids),
            releases=tuple(released),
            n_eligible=len(keys),
            epsilon_after=epsilon_after,
        )

    def release(self, eligible: Sequence[str], contributions: Contributions) -> AnalyticsReport:
        """Charge, aggregate and publish contributions already collected."""
        self.charge(eligible)
        return self.publish(eligible, self.aggregate(eligible, contributions))

    def __call__(self) -> AnalyticsReport:
        """Run the stages in order."""
        eligible = self.gate()
        self.charge(eligible)
        contributions = self.send(eligible)
        report = self.publish(eligible, self.aggregate(eligible, contributions))
        for observer in self.run.observers:
            observer.after_analytics(report)
        return report


def _previous_analytics(store: ReleaseStore) -> Counter[tuple[float, float]]:
    """(q, sigma) -> count of every analytics figure already in the store."""
    table = inspect(AnalyticsRelease).local_table
    with store.engine.connect() as connection:
        sigmas = connection.scalars(select(table.c.noise_multiplier))
        return Counter((1.0, float(sigma)) for sigma in sigmas)


def last_full_weeks(first_day: date, days: int, count: int) -> tuple[date, ...]:
    """The Mondays of the last ``count`` full ISO weeks within ``days`` days from ``first_day``."""
    last_monday = iso_week_start(first_day + timedelta(days=days - 1) - timedelta(days=6))
    weeks = [last_monday - timedelta(weeks=k) for k in range(count)]
    return tuple(sorted(week for week in weeks if week >= first_day))


def run_analytics(run: AnalyticsRun) -> list[AnalyticsReport]:
    """Run the plan's weekly rounds; stop (keeping what was released) at the budget."""
    released: list[AnalyticsReport] = []
    for week in run.plan.weeks:
        try:
            report = AnalyticsRound(run, week)()
        except BudgetExceededError as error:
            log.warning("Analytics stopped before week %s: %s", week, error)
            break
        log.info(
            "Analytics for the week of %s: %d eligible, epsilon now %.3f",
            week,
            report.n_eligible,
            report.epsilon_after,
        )
        released.append(report)
    return released

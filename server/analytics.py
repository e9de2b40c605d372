"""Federated analytics, one ISO week as stages: gate, plan, charge, send, aggregate, publish.

An :class:`AnalyticsPlan` names the weeks and what all of them together may cost. Each
week is one round over every device eligible for ``population-analytics`` at its start
(no sampling: q = 1 in the accountant):

1. **gate**: ask the consent service which attested devices may contribute now;
2. **plan** (secure): the SecAgg+ parameters and the encoding: one vector per device,
   the queries end to end, each slot to carry noise of std ``sigma * sensitivity`` in
   the sum over the fewest survivors t, added by the devices
   (:class:`privacy.DistributedSkellam`);
3. **charge**: every eligible device the round's cost, all or nothing, in the same
   per-user budget as training (over budget: :class:`privacy.BudgetExceededError`,
   nothing released or written);
4. **send**: the week and the query specs to those nodes only; each device checks its
   own record too. Secure (the default): SecAgg+, so the server learns only the noised
   sum of at least t vectors. Central (a trusted server): each device's bounded vectors;
5. **aggregate**: secure: decode the sum and split it into queries. Central: per query,
   drop what came from a key that is not eligible, bound the rest again and sum
   (:func:`server.figures.sum_contributions`), add Gaussian noise of std
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import numpy.typing as npt
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from client_sdk.protocol import (
    ANALYTICS_CONFIG_RECORD,
    ANALYTICS_MESSAGE_TYPE,
    ANALYTICS_PURPOSE,
    CONTRIBUTION_RECORD,
)
from client_sdk.queries import (
    Query,
    analytics_clip_norm,
    iso_week_start,
    queries_to_config,
    standard_queries,
)
from client_sdk.secagg import RoundAborted
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
from privacy.distributed import DistributedSkellam
from server.attestation import Attestations
from server.eligibility import EligibilitySource
from server.figures import release_cells, sum_contributions
from server.messaging import exchange
from server.observers import RunObserver
from server.releases import QueryRelease, ReleaseStore
from server.secagg import SecureSum, local_sum, plan_round, secure_sum
from server.settings import Aggregation
from server.training import MODULUS_BITS, SecurePlan

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
    """What every week of a plan shares. ``grid`` and ``attestations`` are only needed to
    send (a caller holding the contributions already passes neither)."""

    plan: AnalyticsPlan
    eligibility: EligibilitySource | None
    accountant: Accountant
    store: ReleaseStore
    grid: Grid | None = None
    attestations: Attestations | None = None
    observers: Sequence[RunObserver] = ()
    rng: np.random.Generator | None = None
    """Reproducible noise (tests and seeded demo stores only); None: the OS's CSPRNG."""
    noise_multiplier: float | None = None
    """Overrides the plan's calibration (tests)."""
    aggregation: Aggregation = "secure"
    private: bool = True
    """False when a seed made the noise reproducible: the releases are marked not private."""

    @property
    def sigma(self) -> float:
        """The noise of each query's release, as a multiple of its sensitivity."""
        return self.noise_multiplier or self.plan.noise_multiplier


@dataclass(frozen=True, slots=True)
class WeekPlan:
    """Who a week's round is over and, if secure, its protocol and encoding."""

    eligible: tuple[str, ...]
    secure: SecurePlan | None


@dataclass(frozen=True, slots=True)
class NoisySums:
    """Each query's noised summed vector and the noise std of its every slot."""

    values: dict[str, npt.NDArray[np.float64]]
    noise_std: float


@dataclass
class AnalyticsRound:
    """One week's stages over its run (see the module docstring)."""

    run: AnalyticsRun
    week: date

    def __post_init__(self) -> None:
        if self.week.weekday() != 0:
            raise ValueError(f"a period is named by its ISO week's Monday; {self.week} is not one")
        queries = self.run.plan.queries
        names = [q.name for q in queries]
        if not names:
            raise ValueError("an analytics round needs at least one query")
        if len(set(names)) != len(names):
            raise ValueError("each query may be released once per round")
        if len({q.sensitivity for q in queries}) != 1:
            raise ValueError("the queries of one round share one sensitivity (one noise scale)")

    @property
    def round_id(self) -> str:
        """The accountant's release id: the week and its queries."""
        names = "+".join(q.name for q in self.run.plan.queries)
        return f"{self.week.isoformat()}/{names}"

    @property
    def _sensitivity(self) -> float:
        return self.run.plan.queries[0].sensitivity

    def gate(self) -> tuple[str, ...]:
        """The attested devices whose ledger record for analytics is a grant now."""
        if self.run.eligibility is None or self.run.attestations is None:
            raise ValueError("gating needs the consent service and the attested devices")
        keys = list(self.run.attestations.device_keys.values())
        return tuple(self.run.eligibility.eligible(ANALYTICS_PURPOSE, keys))

    def plan(self, eligible: Sequence[str]) -> WeekPlan:
        """A secure week: its SecAgg+ parameters and its encoding, one vector per device (the
        queries end to end, clipped to :func:`client_sdk.queries.analytics_clip_norm`,
        noised so that each slot carries the same noise as in a central release)."""
        keys = tuple(sorted(set(eligible)))
        if self.run.aggregation == "central":
            return WeekPlan(keys, None)
        if len(keys) < 3:
            raise RoundAborted(f"{len(keys)} eligible device(s): a secure sum needs at least 3")
        queries = self.run.plan.queries
        dimension = sum(q.dim for q in queries)
        clip = analytics_clip_norm(queries)
        attestations = self.run.attestations
        node_of = {} if attestations is None else attestations.node_for()
        nodes = [node_of.get(key, index + 1) for index, key in enumerate(keys)]
        params = plan_round(
            nodes,
            run_id=self.run.grid.run.run_id if self.run.grid is not None else 1,
            round_label=f"analytics/{self.week.isoformat()}",
            modulus_bits=MODULUS_BITS,
            vector_length=dimension,
        )
        mechanism = DistributedSkellam(
            clip_norm=clip,
            dimension=dimension,
            max_devices=params.n,
            min_survivors=params.min_survivors,
            noise_multiplier=self.run.sigma * self._sensitivity / clip,
            bits=MODULUS_BITS,
        )
        return WeekPlan(keys, SecurePlan(params=params, mechanism=mechanism))

    def event(self, plan: WeekPlan) -> PrivacyEvent:
        """What the week costs each eligible user: one Gaussian per query (central), or one
        Skellam mechanism over the queries end to end (secure; the same per-slot noise)."""
        if plan.secure is None:
            return PrivacyEvent.analytics_release(
                noise_multiplier=self.run.sigma, count=len(self.run.plan.queries)
            )
        mechanism = plan.secure.mechanism
        return PrivacyEvent.analytics_release(
            noise_multiplier=mechanism.noise_multiplier, skellam=mechanism
        )

    def charge(self, plan: WeekPlan) -> None:
        """Charge every eligible key, answer or not (the charge must not depend on data).

        Raises :class:`privacy.BudgetExceededError` (nothing charged) over the budget and
        :class:`privacy.PrivacyError` if this week was already charged.
        """
        self.run.accountant.charge(
            plan.eligible, self.event(plan), purpose=ANALYTICS_PURPOSE, release_id=self.round_id
        )

    def _config(self, plan: WeekPlan) -> ConfigRecord:
        record = ConfigRecord(dict(queries_to_config(self.run.plan.queries)))
        record["week"] = self.week.isoformat()
        if plan.secure is not None:
            record["noise-multiplier"] = plan.secure.mechanism.noise_multiplier
        return record

    def send(self, plan: WeekPlan) -> dict[str, dict[str, npt.NDArray[np.float64]]]:
        """Central: the week and the query specs to the eligible nodes; their vectors by key."""
        if self.run.grid is None or self.run.attestations is None:
            raise ValueError("sending needs the grid and the attested devices")
        attested = self.run.attestations.device_keys
        nodes_of = {key: node for node, key in attested.items()}
        content = RecordDict({ANALYTICS_CONFIG_RECORD: self._config(plan)})
        messages = [
            Message(
                content,
                dst_node_id=nodes_of[key],
                message_type=ANALYTICS_MESSAGE_TYPE,
                group_id=f"analytics-{self.week.isoformat()}",
            )
            for key in plan.eligible
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
            key = attested.get(reply.metadata.src_node_id)
            if key is not None and key not in contributions:
                record = reply.content.array_records[CONTRIBUTION_RECORD]
                contributions[key] = {name: array.numpy() for name, array in record.items()}
        return contributions

    def secure_send(self, plan: WeekPlan) -> SecureSum:
        """Secure: the secure sum of every eligible device's masked, noised vector."""
        if self.run.grid is None or self.run.attestations is None or plan.secure is None:
            raise ValueError("a secure week needs a grid, the attestations and a secure plan")
        records = self.run.attestations.records
        return secure_sum(
            self.run.grid,
            params=plan.secure.params,
            attestations={node: records[node] for node in plan.secure.params.ring},
            input_message_type=ANALYTICS_MESSAGE_TYPE,
            input_content=RecordDict({ANALYTICS_CONFIG_RECORD: self._config(plan)}),
            timeout=self.run.plan.timeout,
            observers=self.run.observers,
        )

    def aggregate(self, plan: WeekPlan, contributions: Contributions) -> NoisySums:
        """Central: per query, the bounded sum of the eligible devices' vectors plus Gaussian
        noise added here."""
        noisy: dict[str, npt.NDArray[np.float64]] = {}
        for query in self.run.plan.queries:
            by_device = {
                key: vectors[query.name]
                for key, vectors in contributions.items()
                if query.name in vectors
            }
            total = sum_contributions(query, by_device, eligible=plan.eligible)
            noisy[query.name] = np.asarray(
                add_gaussian_noise(
                    total,
                    sensitivity=query.sensitivity,
                    noise_multiplier=self.run.sigma,
                    rng=self.run.rng,
                )
            )
        return NoisySums(noisy, noise_std=self.run.sigma * self._sensitivity)

    def secure_aggregate(self, plan: WeekPlan, total: SecureSum) -> NoisySums:
        """Secure: the decoded sum (the devices added the noise), split back into queries;
        its noise grows with the survivors beyond the floor t, and the std says so."""
        assert plan.secure is not None
        mechanism = plan.secure.mechanism
        flat = mechanism.decode(total.total)
        values: dict[str, npt.NDArray[np.float64]] = {}
        start = 0
        for query in self.run.plan.queries:
            values[query.name] = flat[start : start + query.dim]
            start += query.dim
        return NoisySums(values, noise_std=mechanism.noise_std(total.survivors))

    def publish(self, plan: WeekPlan, noisy: NoisySums) -> AnalyticsReport:
        """The week's cells (small ones suppressed), stored with their privacy cost: this
        week's own epsilon (incremental) and the composed spend of the eligible users."""
        run, plan_ = self.run, self.run.plan
        keys = list(plan.eligible)
        delta, method = run.accountant.delta, run.accountant.method
        event = self.event(plan)
        round_epsilon = history_epsilon({event.mechanism: event.count}, delta=delta, method=method)
        own_epsilon = (
            gaussian_epsilon(noise_multiplier=run.sigma, delta=delta)
            if plan.secure is None
            else round_epsilon
        )
        purpose_epsilon = run.accountant.max_epsilon(keys, purpose=ANALYTICS_PURPOSE)
        threshold = release_threshold(
            noise_std=noisy.noise_std,
            min_contributors=plan_.min_contributors,
            false_release_bound=plan_.false_release_bound,
        )
        released = [
            QueryRelease(
                query=query.name,
                title=query.title,
                statistic=query.statistic,
                unit=query.unit,
                period=self.week,
                round_id=self.round_id,
                noise_multiplier=noisy.noise_std / query.sensitivity,
                sensitivity=query.sensitivity,
                noise_std=noisy.noise_std,
                threshold=threshold,
                min_contributors=plan_.min_contributors,
                false_release_bound=plan_.false_release_bound,
                epsilon=own_epsilon,
                delta=delta,
                round_epsilon=round_epsilon,
                purpose_epsilon=purpose_epsilon,
                epsilon_budget=run.accountant.epsilon_budget,
                n_eligible=len(keys),
                cells=release_cells(
                    query, noisy.values[query.name], noise_std=noisy.noise_std, threshold=threshold
                ),
            )
            for query in plan_.queries
        ]
        epsilon_after = run.accountant.max_epsilon(keys)
        ids = run.store.record_analytics_week(
            released,
            epsilon=epsilon_after,
            purpose=ANALYTICS_PURPOSE,
            aggregation="secure" if plan.secure is not None else "central",
            private=run.private,
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
        """Plan, charge, aggregate and publish contributions already collected (central, or
        secure with the sum taken in process: :func:`in_process_sum`)."""
        plan = self.plan(eligible)
        self.charge(plan)
        if plan.secure is None:
            return self.publish(plan, self.aggregate(plan, contributions))
        total = in_process_sum(plan, self.run.plan.queries, contributions, rng=self.run.rng)
        return self.publish(plan, self.secure_aggregate(plan, total))

    def __call__(self) -> AnalyticsReport:
        """Run the stages in order. A secure week with fewer survivors than its floor
        raises :class:`~client_sdk.secagg.RoundAborted`: nothing released, still charged."""
        plan = self.plan(self.gate())
        self.charge(plan)
        if plan.secure is None:
            noisy = self.aggregate(plan, self.send(plan))
        else:
            noisy = self.secure_aggregate(plan, self.secure_send(plan))
        report = self.publish(plan, noisy)
        for observer in self.run.observers:
            observer.after_analytics(report)
        return report


def in_process_sum(
    plan: WeekPlan,
    queries: Sequence[Query],
    contributions: Contributions,
    *,
    rng: np.random.Generator | None = None,
) -> SecureSum:
    """What a secure sum of these contributions reveals, taken in this process: each
    eligible device's vectors end to end, bounded, encoded with its noise share as the
    device encodes them, summed modulo 2^k (SecAgg+'s masks cancel in that sum). For
    seeded demo stores and tests that hold the contributions already; a device that sent
    nothing adds zeros and its noise."""
    assert plan.secure is not None

    def inputs() -> Iterator[npt.NDArray[np.float64]]:
        for key in plan.eligible:
            vectors = contributions.get(key, {})
            yield np.concatenate(
                [
                    query.bound(np.asarray(vectors[query.name], dtype=np.float64))[0]
                    if query.name in vectors
                    else np.zeros(query.dim)
                    for query in queries
                ]
            )

    return local_sum(plan.secure.params, plan.secure.mechanism, inputs(), rng=rng)


def last_full_weeks(first_day: date, days: int, count: int) -> tuple[date, ...]:
    """The Mondays of the last ``count`` full ISO weeks within ``days`` days from ``first_day``."""
    last_monday = iso_week_start(first_day + timedelta(days=days - 1) - timedelta(days=6))
    weeks = [last_monday - timedelta(weeks=k) for k in range(count)]
    return tuple(sorted(week for week in weeks if week >= first_day))


def run_analytics(run: AnalyticsRun) -> list[AnalyticsReport]:
    """Run the plan's weekly rounds; stop (keeping what was released) at the budget. A
    secure week that aborts (too few survivors) releases nothing and the next one runs."""
    released: list[AnalyticsReport] = []
    for week in run.plan.weeks:
        try:
            report = AnalyticsRound(run, week)()
        except BudgetExceededError as error:
            log.warning("Analytics stopped before week %s: %s", week, error)
            break
        except RoundAborted as abort:
            log.warning("Analytics for the week of %s aborted, nothing released: %s", week, abort)
            continue
        log.info(
            "Analytics for the week of %s: %d eligible, epsilon now %.3f",
            week,
            report.n_eligible,
            report.epsilon_after,
        )
        released.append(report)
    return released

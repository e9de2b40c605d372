"""Federated analytics as Flower rounds: one round per ISO week, every eligible device.

The server asks the consent service which attested devices may take part in
``population-analytics`` at the round's start, sends only those nodes the week and
the query specs, and hands what comes back to :func:`server.analytics.release_analytics`
(clipped again, noised, thresholded, charged to each user's budget, released). A
device checks its own record too and answers with nothing when it says withdrawn.
No sampling: every eligible device is asked, so each release is a plain Gaussian
mechanism over everyone eligible (q = 1 in the accountant).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from client_sdk.analytics import (
    ANALYTICS_PURPOSE,
    Query,
    iso_week_start,
    queries_to_config,
    standard_queries,
)
from client_sdk.protocol import (
    ANALYTICS_CONFIG_RECORD,
    ANALYTICS_MESSAGE_TYPE,
    CONTRIBUTION_RECORD,
)
from privacy import Accountant, BudgetExceededError
from server.analytics import AnalyticsRound, noise_multiplier_for, release_analytics
from server.app import EligibilitySource
from server.releases import ReleaseStore

__all__ = ["AnalyticsPlan", "last_full_weeks", "run_analytics"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AnalyticsPlan:
    """Which weeks to release, and the (epsilon, delta) all of them together may cost."""

    weeks: tuple[date, ...]
    epsilon: float
    delta: float
    queries: tuple[Query, ...] = standard_queries()
    timeout: float = 120.0

    @property
    def noise_multiplier(self) -> float:
        return noise_multiplier_for(
            epsilon=self.epsilon, delta=self.delta, releases=len(self.weeks) * len(self.queries)
        )


def last_full_weeks(first_day: date, days: int, count: int) -> tuple[date, ...]:
    """The Mondays of the last ``count`` full ISO weeks within ``days`` days from ``first_day``."""
    last_monday = iso_week_start(first_day + timedelta(days=days - 1) - timedelta(days=6))
    weeks = [last_monday - timedelta(weeks=k) for k in range(count)]
    return tuple(sorted(week for week in weeks if week >= first_day))


def run_analytics(
    grid: Grid,
    *,
    plan: AnalyticsPlan,
    attested: Mapping[int, str],
    eligibility: EligibilitySource,
    store: ReleaseStore,
    accountant: Accountant,
) -> list[AnalyticsRound]:
    """Run the plan's weekly rounds; stop (keeping what was released) at the budget."""
    released: list[AnalyticsRound] = []
    sigma = plan.noise_multiplier
    nodes_of = {key: node for node, key in attested.items()}
    for week in plan.weeks:
        eligible = eligibility.eligible(ANALYTICS_PURPOSE, list(nodes_of))
        config = ConfigRecord({**queries_to_config(plan.queries), "week": week.isoformat()})
        messages = [
            Message(
                RecordDict({ANALYTICS_CONFIG_RECORD: config}),
                dst_node_id=nodes_of[key],
                message_type=ANALYTICS_MESSAGE_TYPE,
                group_id=f"analytics-{week.isoformat()}",
            )
            for key in eligible
        ]
        contributions: dict[str, dict[str, object]] = {}
        for reply in grid.send_and_receive(messages, timeout=plan.timeout):
            if reply.has_error() or CONTRIBUTION_RECORD not in reply.content:
                continue  # refused, failed or dropped: contributes nothing
            key = attested.get(reply.metadata.src_node_id)
            if key is not None:
                record = reply.content[CONTRIBUTION_RECORD]
                contributions[key] = {name: array.numpy() for name, array in record.items()}
        try:
            result = release_analytics(
                contributions,
                eligible=set(eligible),
                queries=plan.queries,
                period=week,
                noise_multiplier=sigma,
                accountant=accountant,
                store=store,
            )
        except BudgetExceededError as error:
            log.warning("Analytics stopped before week %s: %s", week, error)
            break
        log.info(
            "Analytics for the week of %s: %d eligible, epsilon now %.3f",
            week,
            len(eligible),
            result.epsilon_after,
        )
        released.append(result)
    return released

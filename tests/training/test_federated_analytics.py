"""Analytics as Flower rounds: consent gated twice, bounded vectors only, charged per user."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from client_sdk.protocol import ANALYTICS_PURPOSE
from server.analytics import AnalyticsPlan, last_full_weeks
from server.sim.federation import NOTICES
from tests.conftest import ConsentServer
from tests.training.conftest import Simulation, make_simulation

ANALYTICS = "query.analytics"


def plan_for(simulation: Simulation, weeks: int = 1) -> AnalyticsPlan:
    population = simulation.federation.spec.population()
    return AnalyticsPlan(
        weeks=last_full_weeks(population.start, simulation.settings.days, weeks),
        epsilon=2.0,
        delta=1e-5,
    )


def analytics_replies(simulation: Simulation) -> dict[int, list[dict]]:
    by_device: dict[int, list[dict]] = {}
    for row in simulation.replies():
        if row["message_type"] == ANALYTICS:
            by_device.setdefault(row["partition"], []).append(row)
    return by_device


def test_only_devices_that_granted_analytics_are_asked_and_charged(
    tmp_path: Path, consent_service: ConsentServer
) -> None:
    def grant(federation) -> None:  # training for all, analytics for the first four only
        federation.grant(range(6))
        federation.grant(range(4), purposes=[ANALYTICS_PURPOSE])

    simulation = make_simulation(
        tmp_path, consent_service, devices=6, seed=21, rounds=1, grant=grant
    )
    plan = plan_for(simulation)

    result = simulation.run(analytics=plan)

    assert result.status == "completed" and len(result.analytics) == 1
    assert result.analytics[0].n_eligible == 4
    asked = analytics_replies(simulation)
    assert sorted(asked) == [0, 1, 2, 3]  # the server gate: 4 and 5 get no message at all
    for rows in asked.values():
        (row,) = rows
        assert row["error"] is None
        # secure aggregation: the server gets a masked vector, never the contributions
        assert row["records"] == {"secagg-masked-input": ["ArrayRecord", ["masked"]]}
    with simulation.accountant() as accountant:
        for index in range(6):
            spent = accountant.spent_by_purpose(simulation.key(index))
            assert (ANALYTICS_PURPOSE in spent) == (index < 4), index


class EveryoneEligible:
    """A stale server view: calls every device eligible, whatever the ledger says."""

    def eligible(self, purpose: str, device_keys: Sequence[str]) -> list[str]:
        return list(device_keys)


def test_a_device_whose_own_record_says_withdrawn_sends_nothing(
    tmp_path: Path, consent_service: ConsentServer
) -> None:
    def grant(federation) -> None:
        federation.grant(range(4), purposes=["model-training", ANALYTICS_PURPOSE])
        client = federation.consent_client(3)
        client.withdraw(ANALYTICS_PURPOSE, notice=NOTICES[ANALYTICS_PURPOSE])

    simulation = make_simulation(
        tmp_path, consent_service, devices=4, seed=22, rounds=1, grant=grant
    )

    result = simulation.run(analytics=plan_for(simulation), eligibility=EveryoneEligible())

    assert result.status == "completed"
    asked = analytics_replies(simulation)
    assert sorted(asked) == [0, 1, 2, 3]  # the stale server asked everyone
    (refusal,) = asked[3]
    assert refusal["error"] is not None and refusal["records"] == {}
    for index in (0, 1, 2):
        assert asked[index][0]["records"] == {"secagg-masked-input": ["ArrayRecord", ["masked"]]}

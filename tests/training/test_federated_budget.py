"""Invariant 4: every release carries its (epsilon, delta), and the run stops before any
user would pass the budget. And a round never runs on devices whose consent was not
checked: a consent-service failure stops the run with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from client_sdk.model import create_model, get_weights
from privacy import DistributedSkellam
from server.eligibility import EligibilityError
from server.observers import RunObserver
from server.releases import ReleaseStore
from server.secagg import choose_graph
from tests.conftest import ConsentServer
from tests.training.conftest import make_simulation, round_of

DEVICES = 6
Q = 0.5
SIGMA = 1.0
DELTA = 1e-5
# Each secure round over the 6 devices: the distributed Skellam mechanism of the model's
# size, its noise calibrated for the round's survivor floor.
MECHANISM = DistributedSkellam(
    clip_norm=1.0,
    dimension=sum(w.size for w in get_weights(create_model(seed=0))),
    max_devices=DEVICES,
    min_survivors=choose_graph(DEVICES).min_survivors,
    noise_multiplier=SIGMA,
)
# Between the epsilon of two rounds and of three: the third must not run.
BUDGET = (
    MECHANISM.epsilon(sampling_rate=Q, rounds=2, delta=DELTA)
    + MECHANISM.epsilon(sampling_rate=Q, rounds=3, delta=DELTA)
) / 2


def test_a_small_budget_stops_the_run_before_the_round_that_would_pass_it(
    tmp_path: Path, consent_service: ConsentServer
) -> None:
    simulation = make_simulation(
        tmp_path,
        consent_service,
        devices=DEVICES,
        seed=41,
        rounds=5,
        expected_devices=Q * DEVICES,
        noise_multiplier=SIGMA,
        epsilon_budget=BUDGET,
        delta=DELTA,
    )

    result = simulation.run()

    assert result.status == "stopped"
    assert "privacy budget" in result.reason and "round 3" in result.reason
    with simulation.store() as store:
        rounds = store.model_rounds(result.run_id)
        run = store.run(result.run_id)
        releases = store.releases(kind="model-round")
    assert [row.round for row in rounds] == [1, 2]
    assert run.status == "stopped" and run.rounds_completed == 2
    assert all(0 < release.epsilon <= BUDGET and release.delta == DELTA for release in releases)
    with simulation.accountant() as accountant:
        assert 0 < accountant.max_epsilon() <= BUDGET
        for index in range(DEVICES):  # charged for rounds 1 and 2, never for round 3
            assert sum(accountant.history(simulation.key(index)).values()) == 2


class _StopServiceBefore(RunObserver):
    """Kill the consent service before a given round (a crash, not a shutdown)."""

    def __init__(self, service: ConsentServer, round_number: int) -> None:
        self.service = service
        self.round_number = round_number

    def before_round(self, round_number: int) -> None:
        if round_number == self.round_number:
            self.service.kill()


def test_a_consent_service_failure_stops_the_run_before_any_unchecked_round(
    tmp_path: Path,
) -> None:
    service = ConsentServer(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'c.db'}")
    service.start()
    try:
        simulation = make_simulation(
            tmp_path / "run", service, devices=4, seed=42, rounds=3, eligibility_timeout=5.0
        )
        with pytest.raises(EligibilityError, match="cannot reach the consent service"):
            simulation.run(observers=[_StopServiceBefore(service, 2)])
    finally:
        service.stop()

    with ReleaseStore(simulation.settings.resolved_release_database_url, read_only=True) as store:
        (run,) = store.runs()
        rounds = store.model_rounds(run.id)
    assert run.status == "failed" and "consent service" in (run.stop_reason or "")
    assert [row.round for row in rounds] == [1]
    with simulation.accountant() as accountant:
        for index in range(4):
            assert sum(accountant.history(simulation.key(index)).values()) == 1
    assert not simulation.replies() or all(
        round_of(row["group_id"]) <= 1
        for row in simulation.replies()
        if row["message_type"] == "train"
    )

"""Invariant 2: a device trains in a round only if its consent holds, checked twice.

The server samples only devices the consent service calls eligible at the round's
start; the device itself refuses when its own verified record says withdrawn, even
when the server's view is stale.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.app.metadata import Metadata

from client_sdk import Device
from client_sdk.client_app import DEVICE_LEDGER_FILE, make_client_app
from client_sdk.model import create_model, get_weights
from client_sdk.policy import RefusalCounter
from client_sdk.protocol import (
    GLOBAL_MODEL_RECORD,
    REFUSED,
    TRAIN_CONFIG_RECORD,
    UPDATE_RECORD,
)
from client_sdk.sim import SyntheticPopulation
from privacy import update_norm
from server.eligibility import EligibilityClient, EligibilityError
from server.settings import TrainSettings
from tests.conftest import ConsentServer
from tests.training.conftest import (
    GATED_DEVICES,
    GATED_ROUNDS,
    WITHDRAW_BEFORE,
    Simulation,
    log_key_of,
    make_simulation,
    round_of,
    trained,
)

NOTICE = "test notice"


def test_a_device_that_withdraws_before_round_k_takes_part_in_no_round_from_k(
    gated_run: Simulation,
) -> None:
    # q = 1: every eligible device is sampled every round, so a withdrawn device could
    # only be missing because of the consent gate.
    result = gated_run.result
    withdrawn = gated_run.federation.withdrawn
    stayed = [i for i in range(GATED_DEVICES) if i not in withdrawn]
    every_round = list(range(1, GATED_ROUNDS + 1))

    assert result is not None and result.status == "completed" and len(withdrawn) == 2
    replies = gated_run.replies()
    for index in withdrawn:
        assert trained(replies, index) == list(range(1, WITHDRAW_BEFORE))
    for index in stayed:
        assert trained(replies, index) == every_round
    withdrawn_keys = {gated_run.key(i) for i in withdrawn}
    for report in gated_run.recorder.reports[WITHDRAW_BEFORE - 1 :]:
        assert withdrawn_keys.isdisjoint(report.eligible)
        assert withdrawn_keys.isdisjoint(report.sampled)
    with gated_run.store() as store:
        rows = store.model_rounds(result.run_id)
    assert [row.eligible_devices for row in rows] == [6, 4, 4]


class _StaleEligibility:
    """The server's view frozen at round 1: it never hears of later withdrawals."""

    def __init__(self, client: EligibilityClient) -> None:
        self.client = client
        self.first: list[str] | None = None

    def eligible(self, purpose: str, device_keys: Sequence[str]) -> list[str]:
        if self.first is None:
            self.first = self.client.eligible(purpose, device_keys)
        return list(self.first)


def test_a_device_refuses_to_train_when_its_own_record_says_withdrawn_even_if_sampled(
    tmp_path: Path, consent_service: ConsentServer
) -> None:
    simulation = make_simulation(
        tmp_path,
        consent_service,
        devices=4,
        seed=12,
        rounds=2,
        withdraw_at_round=2,
        withdraw_fraction=0.5,
    )
    stale = _StaleEligibility(EligibilityClient(consent_service.url, token=consent_service.token))

    result = simulation.run(eligibility=stale)

    withdrawn = simulation.federation.withdrawn
    assert result.status == "completed" and len(withdrawn) == 2
    second = simulation.recorder.reports[1]
    assert {simulation.key(i) for i in withdrawn} <= set(second.sampled)  # the stale view
    replies = simulation.replies()
    for index in withdrawn:
        assert trained(replies, index) == [1]
        refusals = [
            row
            for row in replies
            if row["partition"] == index and row["message_type"] == "train" and row["error"]
        ]
        assert [(round_of(r["group_id"]), r["error"][0]) for r in refusals] == [(2, REFUSED)]
    for index in range(4):
        if index not in withdrawn:
            assert trained(replies, index) == [1, 2]


def _train_message(weights: list[np.ndarray], **settings: Any) -> Message:
    """A central round's train message (the update in the clear), as a server sends it."""
    config = TrainSettings(**settings).train_config(1, participation_rate=1.0)
    content = RecordDict(
        {GLOBAL_MODEL_RECORD: ArrayRecord(weights), TRAIN_CONFIG_RECORD: config.to_record()}
    )
    metadata = Metadata(
        run_id=1,
        message_id="m1",
        src_node_id=1,
        dst_node_id=42,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=600.0,
        message_type="train",
    )
    return Message(content=content, metadata=metadata)


def _context(folder: Path, service: ConsentServer, *, allow_central: bool = True) -> Context:
    """The phone's node config: its folder, consent service, pinned key and its policy
    (here allowing a trusted server's central round, so the update comes back in clear)."""
    node_config = {
        "device-dir": str(folder),
        "consent-url": service.url,
        "log-key": log_key_of(service),
        "device-allow-central": allow_central,
        "device-epsilon-budget": 50.0,
    }
    return Context(run_id=1, node_id=42, node_config=node_config, state=RecordDict(), run_config={})


@pytest.fixture
def phone(tmp_path: Path, consent_service: ConsentServer) -> Path:
    """A real device folder: key, encrypted diary with 40 days, consent granted."""
    folder = tmp_path / "phone"
    population = SyntheticPopulation(1, days=40, seed=3)
    with Device.create(
        folder, consent_url=consent_service.url, log_key=log_key_of(consent_service)
    ) as device:
        device.diary.log_many(population.entries_for(0))
        device.consent.grant("model-training", notice=NOTICE)
    return folder


def test_the_client_app_trains_and_sends_only_a_clipped_update_while_consent_holds(
    phone: Path, consent_service: ConsentServer
) -> None:
    weights = get_weights(create_model(seed=0))

    reply = make_client_app()(_train_message(weights), _context(phone, consent_service))

    assert not reply.has_error()
    assert list(reply.content.keys()) == [UPDATE_RECORD]
    update = reply.content[UPDATE_RECORD].to_numpy_ndarrays()
    assert [u.shape for u in update] == [w.shape for w in weights]
    assert 0 < update_norm(update) <= 1.0
    assert (phone / DEVICE_LEDGER_FILE).exists()


def test_the_client_app_refuses_a_train_message_after_the_device_withdrew(
    phone: Path, consent_service: ConsentServer
) -> None:
    with Device.open(
        phone, consent_url=consent_service.url, log_key=log_key_of(consent_service)
    ) as device:
        device.consent.withdraw("model-training", notice=NOTICE)
    weights = get_weights(create_model(seed=0))

    reply = make_client_app()(_train_message(weights), _context(phone, consent_service))

    assert reply.has_error() and reply.error.code == REFUSED
    assert not reply.has_content()
    assert not (phone / DEVICE_LEDGER_FILE).exists()  # no DP-SGD step was even charged


def test_the_server_gets_a_clear_error_and_no_answer_when_the_token_is_wrong(
    consent_service: ConsentServer,
) -> None:
    client = EligibilityClient(consent_service.url, token="wrong-token-value")

    with pytest.raises(EligibilityError, match="MOODFED_ELIGIBILITY_TOKEN") as raised:
        client.eligible("model-training", ["a" * 43])

    assert "wrong-token-value" not in str(raised.value)


def test_the_server_gets_a_clear_error_when_the_consent_service_is_down() -> None:
    client = EligibilityClient("http://127.0.0.1:9", token="t", timeout=2)

    with pytest.raises(EligibilityError, match="cannot reach the consent service"):
        client.eligible("model-training", ["a" * 43])


def test_a_request_for_less_noise_than_the_device_allows_is_refused_before_any_work(
    phone: Path, consent_service: ConsentServer
) -> None:
    weights = get_weights(create_model(seed=0))
    weak = _train_message(weights, device_noise_multiplier=0.3)

    reply = make_client_app()(weak, _context(phone, consent_service))

    assert reply.has_error() and reply.error.code == REFUSED and not reply.has_content()
    assert not (phone / DEVICE_LEDGER_FILE).exists()  # nothing computed, nothing charged
    assert RefusalCounter(phone).count == 1


def test_a_device_that_does_not_allow_central_rounds_never_sends_its_update_in_clear(
    phone: Path, consent_service: ConsentServer
) -> None:
    weights = get_weights(create_model(seed=0))

    reply = make_client_app()(
        _train_message(weights), _context(phone, consent_service, allow_central=False)
    )

    assert reply.has_error() and reply.error.code == REFUSED and not reply.has_content()
    assert not (phone / DEVICE_LEDGER_FILE).exists()
    assert RefusalCounter(phone).count == 1


def test_the_device_policy_comes_from_the_node_never_from_the_run_config(
    phone: Path, consent_service: ConsentServer
) -> None:
    context = _context(phone, consent_service, allow_central=False)
    context.run_config["device-allow-central"] = True  # the server's run config tries
    context.run_config["device-noise-multiplier"] = 0.01
    weights = get_weights(create_model(seed=0))

    reply = make_client_app()(_train_message(weights, device_noise_multiplier=0.01), context)

    assert reply.has_error() and reply.error.code == REFUSED
    assert RefusalCounter(phone).count == 1

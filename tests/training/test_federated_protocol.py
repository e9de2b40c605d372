"""The wire contract's checks, the release store and the device's prediction, without an
engine: what the server accepts as an attestation, what it publishes, what a device does
with a published model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.app.metadata import Metadata

from client_sdk import DeviceKey
from client_sdk.model import create_model, get_weights
from client_sdk.prediction import predict_next_day
from client_sdk.protocol import new_nonce, sign_attestation
from client_sdk.secagg import Attestation
from client_sdk.sim import SyntheticPopulation
from server.attestation import _unique, check_attestation
from server.releases import ReleaseStore
from server.settings import TrainSettings
from server.sim.settings import SimSettings

RUN, NODE = 7, 1234
KEY = DeviceKey.from_seed(bytes(range(32)))


def _reply(content: RecordDict | Error, *, source: int = NODE) -> Message:
    metadata = Metadata(
        run_id=RUN,
        message_id="r",
        src_node_id=source,
        dst_node_id=1,
        reply_to_message_id="q",
        group_id="attestation",
        created_at=time.time(),
        ttl=60.0,
        message_type="query.attest",
    )
    if isinstance(content, Error):
        return Message(error=content, metadata=metadata)
    return Message(content=content, metadata=metadata)


def _attestation(fields: dict[str, str]) -> RecordDict:
    return RecordDict({"attestation": ConfigRecord(fields)})


def test_a_signature_over_this_run_node_and_nonce_proves_the_device_key() -> None:
    nonce = new_nonce()
    fields = sign_attestation(KEY, run_id=RUN, node_id=NODE, nonce=nonce)

    assert check_attestation(
        _reply(_attestation(fields)), run_id=RUN, node_id=NODE, nonce=nonce
    ) == (KEY.device_key)


@pytest.mark.parametrize(
    ("signed_for", "answered_by"),
    [
        ((RUN, NODE + 1, None), NODE),  # made for another node
        ((RUN + 1, NODE, None), NODE),  # made for another run
        ((RUN, NODE, "an-old-nonce"), NODE),  # replayed from another challenge
        ((RUN, NODE, None), NODE + 1),  # relayed by another node
    ],
    ids=["other-node", "other-run", "other-nonce", "relayed"],
)
def test_a_signature_for_anything_else_proves_nothing(
    signed_for: tuple[int, int, str | None], answered_by: int
) -> None:
    nonce = new_nonce()
    run, node, other_nonce = signed_for
    fields = sign_attestation(KEY, run_id=run, node_id=node, nonce=other_nonce or nonce)

    reply = _reply(_attestation(fields), source=answered_by)

    assert check_attestation(reply, run_id=RUN, node_id=NODE, nonce=nonce) is None


@pytest.mark.parametrize(
    "content",
    [
        RecordDict({"attestation": ConfigRecord({"device_key": "x"})}),
        RecordDict(
            {"attestation": ConfigRecord({"device_key": "x", "signature": "y", "extra": 1})}
        ),
        RecordDict({"proof": ConfigRecord({"device_key": "x", "signature": "y"})}),
        RecordDict({"attestation": MetricRecord({"device_key": 1.0, "signature": 2.0})}),
        Error(code=5000, reason="failed"),
    ],
    ids=["missing-field", "extra-field", "wrong-record", "wrong-kind", "error"],
)
def test_a_malformed_attestation_proves_nothing(content: RecordDict | Error) -> None:
    assert check_attestation(_reply(content), run_id=RUN, node_id=NODE, nonce=new_nonce()) is None


def test_nodes_presenting_the_same_device_key_are_all_left_out() -> None:
    claimed = {
        node: Attestation(device_key=key, signature="s", nonce="n")
        for node, key in {1: "key-a", 2: "key-b", 3: "key-a"}.items()
    }
    attestations = _unique(claimed, {})

    assert attestations.device_keys == {2: "key-b"} and set(attestations.records) == {2}
    assert set(attestations.rejected) == {1, 3}


def test_a_device_predicts_with_the_latest_published_model(tmp_path: Path) -> None:
    store = ReleaseStore(f"sqlite:///{tmp_path / 'releases.db'}")
    store.start_run(
        run_id="r",
        flower_run_id="1",
        purpose="model-training",
        planned_rounds=2,
        epsilon_budget=3.0,
        delta=1e-5,
        accounting="rdp",
        noise_multiplier=1.0,
        clipping_norm=1.0,
        expected_devices=10.0,
    )
    weights = get_weights(create_model(seed=0))
    shifted = [w.copy() for w in weights]
    shifted[-1] = shifted[-1] + 0.5  # the output bias: every prediction up by half a point
    for number, published in ((1, weights), (2, shifted)):
        store.record_model_round(
            run_id="r",
            round_number=number,
            weights=published,
            epsilon=0.5 * number,
            delta=1e-5,
            sampling_rate=0.1,
            noise_multiplier=1.0,
            clipping_norm=1.0,
            eligible_devices=100,
            expected_devices=10.0,
        )
    diary = SyntheticPopulation(1, days=30, seed=2).entries_for(0)

    with ReleaseStore(f"sqlite:///{tmp_path / 'releases.db'}", read_only=True) as reader:
        latest = reader.latest_model()
        with pytest.raises(PermissionError):
            reader.finish_run("r", status="completed", reason="")

    assert latest is not None and (latest.round, latest.epsilon) == (2, 1.0)
    assert predict_next_day(diary, latest.weights) == pytest.approx(4.2, abs=1e-4)
    assert all(np.array_equal(a, b) for a, b in zip(latest.weights, shifted, strict=True))


def test_run_config_sets_knobs_but_never_secrets_or_addresses() -> None:
    settings = SimSettings.from_run_config(
        {
            "rounds": 4,
            "expected-devices": 12.0,
            "seed": -1,
            "sim-root": "",
            "consent-url": "http://evil.invalid",
            "eligibility-token": "leaked",
        }
    )

    assert (settings.rounds, settings.expected_devices, settings.seed) == (4, 12.0, None)
    assert settings.consent_url is None and settings.eligibility_token is None
    assert settings.sim_root is None


def test_a_release_carries_the_largest_total_spend_of_the_users_who_shaped_it() -> None:
    from privacy import Accountant, PrivacyEvent, epsilon_for

    accountant = Accountant("sqlite://", epsilon_budget=100.0, delta=1e-5)
    small = PrivacyEvent.training_round(sampling_rate=0.1, noise_multiplier=1.0)
    large = PrivacyEvent.training_round(sampling_rate=1.0, noise_multiplier=1.0)
    accountant.charge(["in-run", "other-run"], small, purpose="model-training", release_id="a")
    accountant.charge(["other-run"], large, purpose="model-training", release_id="b")

    epsilon = accountant.max_epsilon({"in-run"})  # what a round publishes

    assert epsilon == pytest.approx(
        epsilon_for(sampling_rate=0.1, noise_multiplier=1.0, rounds=1, delta=1e-5)
    )
    assert epsilon < accountant.max_epsilon()  # the other run's heavier spend is not ours


def test_a_seed_is_refused_when_a_real_consent_service_is_configured() -> None:
    with pytest.raises(ValueError, match="seed"):
        TrainSettings(seed=7, consent_url="https://consent.example", eligibility_token="t")

    simulated = SimSettings(seed=7, consent_url="http://127.0.0.1:1", eligibility_token="t")
    assert simulated.seed == 7  # simulations may: their releases are marked not private


def test_the_server_reads_its_eligibility_token_from_a_0600_file_only(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-the-file\n")
    secret.chmod(0o600)
    settings = TrainSettings(consent_url="https://consent.example", eligibility_token_file=secret)
    assert settings.eligibility_token is not None
    assert settings.eligibility_token.get_secret_value() == "from-the-file"

    secret.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        TrainSettings(consent_url="https://consent.example", eligibility_token_file=secret)
    secret.chmod(0o600)
    with pytest.raises(ValueError, match="not both"):
        TrainSettings(eligibility_token="t", eligibility_token_file=secret)
    with pytest.raises(ValueError, match="MOODFED_ELIGIBILITY_TOKEN_FILE"):
        TrainSettings(consent_url="https://consent.example")

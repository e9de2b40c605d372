"""What a device remembers to save work, and that none of it can be served stale.

Verified attestation records (per run, in ``context.state``), the policy built from a
node config, the Skellam encoding of a round's parameters; and the work those leave:
two X25519 agreements per neighbour, every round-key signature checked in every round.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict
from flwr.app.message.message import make_message
from pydantic import ValidationError

import client_sdk.secagg.attestations as attestations_module
import client_sdk.secagg.device as device_module
from client_sdk.errors import InvalidArgumentError
from client_sdk.keys import DeviceKey
from client_sdk.policy import DevicePolicy
from client_sdk.protocol import new_nonce, sign_attestation, verify_attestation
from client_sdk.secagg import (
    AdvertiseKeysReply,
    Attestation,
    DeviceSession,
    KeyPair,
    MessageError,
    RoundParams,
    RoundRefused,
    SetupRequest,
    ShareKeysReply,
    ShareKeysRequest,
    VerifiedAttestations,
    advertisement_payload,
    verify_advertisement,
)
from client_sdk.secagg.attestations import MAX_ENTRIES
from client_sdk.secure_sum import ATTESTATIONS_RECORD, secagg_reply, skellam_for
from privacy import DistributedSkellam
from server.secagg import ServerSession
from tests.secagg.harness import Federation, Round, random_vectors

RUN = 77  # the harness's run id


def attested(node: int, *, run_id: int = RUN) -> tuple[DeviceKey, Attestation]:
    key = DeviceKey.generate()
    nonce = new_nonce()
    return key, Attestation(
        nonce=nonce, **sign_attestation(key, run_id=run_id, node_id=node, nonce=nonce)
    )


class Counter:
    """Wraps a function and counts its calls (the real function still runs)."""

    def __init__(self, function: Any) -> None:
        self.function, self.calls = function, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.function(*args, **kwargs)


# -- VerifiedAttestations ----------------------------------------------------------------


def test_a_verified_record_is_remembered_and_checked_without_verifying_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, record = attested(5)
    verified = VerifiedAttestations(run_id=RUN)
    counter = Counter(verify_attestation)
    monkeypatch.setattr(attestations_module, "verify_attestation", counter)

    first = verified.check(node_id=5, attestation=record)
    second = verified.check(node_id=5, attestation=record)

    assert first and second
    assert counter.calls == 1


@pytest.mark.parametrize(
    "change",
    [
        {"device_key": "other"},  # another device key for the same node
        {"signature": "other"},
        {"nonce": "other"},
    ],
)
def test_a_record_that_differs_in_any_field_from_a_remembered_one_is_verified_afresh(
    change: dict[str, str],
) -> None:
    _, record = attested(5)
    other_key, _ = attested(5)
    replacement = {
        "device_key": other_key.device_key,
        "signature": record.signature[:-2] + ("AA" if record.signature[-2:] != "AA" else "AB"),
        "nonce": new_nonce(),
    }
    verified = VerifiedAttestations(run_id=RUN)
    assert verified.check(node_id=5, attestation=record)

    changed = dataclasses.replace(record, **{name: replacement[name] for name in change})

    assert not verified.check(node_id=5, attestation=changed)
    assert len(verified) == 1


def test_a_remembered_record_does_not_vouch_for_another_node_or_run() -> None:
    _, record = attested(5)
    verified = VerifiedAttestations(run_id=RUN)
    assert verified.check(node_id=5, attestation=record)

    assert not verified.check(node_id=6, attestation=record)
    elsewhere = VerifiedAttestations.from_bytes(
        (RUN + 1).to_bytes(8, "big") + verified.to_bytes()[8:]
    )
    assert not elsewhere.check(node_id=5, attestation=record)


def test_a_record_that_fails_is_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    _, record = attested(5)
    forged = dataclasses.replace(record, nonce=new_nonce())
    verified = VerifiedAttestations(run_id=RUN)
    counter = Counter(verify_attestation)
    monkeypatch.setattr(attestations_module, "verify_attestation", counter)

    assert not verified.check(node_id=5, attestation=forged)
    assert not verified.check(node_id=5, attestation=forged)
    assert counter.calls == 2 and len(verified) == 0


def test_verified_attestations_round_trip_and_bad_bytes_are_a_clear_error() -> None:
    verified = VerifiedAttestations(run_id=RUN)
    records = [attested(node) for node in range(3)]
    for node, (_, record) in enumerate(records):
        assert verified.check(node_id=node, attestation=record)

    copy = VerifiedAttestations.from_bytes(verified.to_bytes())

    assert copy.to_bytes() == verified.to_bytes() and copy.run_id == RUN and len(copy) == 3
    bad: Any
    for bad in (b"", b"\x00" * 7, verified.to_bytes()[:-1], "text"):
        with pytest.raises(MessageError):
            VerifiedAttestations.from_bytes(bad)


def test_verified_attestations_keep_at_most_max_entries_oldest_forgotten_first() -> None:
    digests = tuple(i.to_bytes(32, "big") for i in range(MAX_ENTRIES + 3))

    verified = VerifiedAttestations(run_id=RUN, digests=digests)

    kept = verified.to_bytes()[8:]
    assert len(verified) == MAX_ENTRIES
    assert kept[:32] == digests[3] and kept[-32:] == digests[-1]


# -- the device session with remembered attestations --------------------------------------


@pytest.fixture
def fed() -> Federation:
    return Federation(6, vector_length=4, modulus_bits=16, seed=21)


def share_keys_requests(fed: Federation, params: RoundParams) -> tuple[dict[int, bytes], Any]:
    round_ = Round(fed, params)
    round_.advertise()
    return round_.state, round_.server.share_keys_requests()


def test_a_device_verifies_each_attestation_once_per_run_and_every_round_key_signature(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = fed.params().ring[0]
    attestation_checks = Counter(verify_attestation)
    signature_checks = Counter(verify_advertisement)
    monkeypatch.setattr(attestations_module, "verify_attestation", attestation_checks)
    monkeypatch.setattr(device_module, "verify_advertisement", signature_checks)
    verified = VerifiedAttestations(run_id=RUN)

    for label in ("train/1", "train/2", "analytics/1"):
        states, requests = share_keys_requests(fed, fed.params(label=label))
        DeviceSession.from_bytes(states[me]).share_keys(requests[me], verified=verified)

    neighbours = len(fed.params().neighbours(me))
    assert attestation_checks.calls == neighbours
    assert signature_checks.calls == 3 * neighbours


def test_a_remembered_attestation_does_not_let_a_forged_round_key_through(fed: Federation) -> None:
    params = fed.params()
    me, victim = params.ring[0], params.ring[1]
    verified = VerifiedAttestations(run_id=RUN)
    states, requests = share_keys_requests(fed, params)
    DeviceSession.from_bytes(states[me]).share_keys(requests[me], verified=verified)

    states, requests = share_keys_requests(fed, fed.params(label="train/2"))
    c, s = KeyPair.generate(), KeyPair.generate()
    forged = ShareKeysRequest(
        neighbours=tuple(
            dataclasses.replace(item, c_pk=c.public, s_pk=s.public)
            if item.node_id == victim
            else item
            for item in requests[me].neighbours
        )
    )
    session = DeviceSession.from_bytes(states[me])

    with pytest.raises(RoundRefused, match="not signed by its attested key"):
        session.share_keys(forged, verified=verified)


def test_a_remembered_attestation_does_not_vouch_for_another_device_key_of_the_node(
    fed: Federation,
) -> None:
    params = fed.params()
    me, victim = params.ring[0], params.ring[1]
    verified = VerifiedAttestations(run_id=RUN)
    states, requests = share_keys_requests(fed, params)
    DeviceSession.from_bytes(states[me]).share_keys(requests[me], verified=verified)
    intruder = DeviceKey.generate()

    states, requests = share_keys_requests(fed, fed.params(label="train/2"))
    swapped = ShareKeysRequest(
        neighbours=tuple(
            dataclasses.replace(
                item,
                attestation=dataclasses.replace(item.attestation, device_key=intruder.device_key),
            )
            if item.node_id == victim
            else item
            for item in requests[me].neighbours
        )
    )
    session = DeviceSession.from_bytes(states[me])

    with pytest.raises(RoundRefused, match=f"node {victim}'s attestation does not verify"):
        session.share_keys(swapped, verified=verified)


def test_verified_attestations_of_another_run_are_a_clear_error_and_change_nothing(
    fed: Federation,
) -> None:
    params = fed.params()
    me = params.ring[0]
    states, requests = share_keys_requests(fed, params)
    session = DeviceSession.from_bytes(states[me])

    with pytest.raises(InvalidArgumentError, match="run"):
        session.share_keys(requests[me], verified=VerifiedAttestations(run_id=RUN + 1))

    assert session.to_bytes() == states[me]
    session.share_keys(requests[me])  # still at the same stage, and answers


# -- two agreements per neighbour -----------------------------------------------------------


def test_a_device_makes_two_x25519_agreements_per_neighbour_and_forgets_c_after_sharing(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    agreements = Counter(KeyPair.agree)
    monkeypatch.setattr(KeyPair, "agree", lambda self, peer: agreements(self, peer))
    round_ = Round(fed, fed.params())
    round_.advertise()
    round_.share_keys()
    after_sharing = dict(round_.state)
    round_.masked_input(random_vectors(fed.devices, length=4, modulus_bits=16, seed=2))
    round_.unmask()
    outcome = round_.finish()

    assert outcome.total is not None and not outcome.refusals
    edges = sum(len(fed.params().neighbours(node)) for node in fed.devices)
    assert agreements.calls == 2 * edges  # the server rebuilt no dropped key
    for data in after_sharing.values():
        assert b'"c_sk":null' in data and b'"s_sk":"' in data


# -- the signed bytes ---------------------------------------------------------------------


def test_the_advertisement_is_a_fixed_layout_apart_from_everything_else_the_key_signs() -> None:
    context, c_pk, s_pk = bytes(range(32)), bytes(32), bytes([1]) * 32

    payload = advertisement_payload(context=context, node_id=2**64 - 1, c_pk=c_pk, s_pk=s_pk)

    assert payload == b"moodfed-secagg-keys-v2\x00" + context + b"\xff" * 8 + c_pk + s_pk
    for bad in ({"context": bytes(31)}, {"c_pk": bytes(33)}, {"node_id": 2**64}, {"node_id": -1}):
        fields: dict[str, Any] = {"context": context, "node_id": 1, "c_pk": c_pk, "s_pk": s_pk}
        fields.update(bad)
        with pytest.raises(ValueError):
            advertisement_payload(**fields)
        key = DeviceKey.generate()
        assert not verify_advertisement(device_key=key.device_key, signature=bytes(64), **fields)


def test_a_signature_over_the_old_json_advertisement_no_longer_verifies() -> None:
    import rfc8785

    from consent.encoding import b64url_encode

    key = DeviceKey.generate()
    context, c_pk, s_pk = bytes(32), bytes([2]) * 32, bytes([3]) * 32
    old = rfc8785.dumps(
        {
            "purpose": "moodfed-secagg-keys-v1",
            "context": context.hex(),
            "node_id": "9",
            "c_pk": b64url_encode(c_pk),
            "s_pk": b64url_encode(s_pk),
        }
    )
    signature = key.sign(old)

    assert not verify_advertisement(
        device_key=key.device_key,
        signature=signature,
        context=context,
        node_id=9,
        c_pk=c_pk,
        s_pk=s_pk,
    )


# -- through the ClientApp's handler: context.state ---------------------------------------


def secagg_message(content: RecordDict, node: int) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id=f"m{node}",
        src_node_id=1,
        dst_node_id=node,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=600.0,
        message_type="query.secagg",
    )
    return make_message(metadata, content)


@pytest.fixture
def contexts(fed: Federation) -> dict[int, Context]:
    return {
        node: Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})
        for node in fed.devices
    }


def run_share_keys(
    fed: Federation, contexts: dict[int, Context], params: RoundParams
) -> dict[int, ShareKeysReply]:
    """Stages 0-2 for every node through :func:`secagg_reply`, with a real server session."""
    server = ServerSession(params, fed.attestations)
    policy = DevicePolicy(min_survivors=3)
    for node, request in server.setup_requests().items():
        content = secagg_reply(
            secagg_message(request.to_record_dict(), node),
            contexts[node],
            key=fed.devices[node].key,
            policy=policy,
        )
        server.receive_advertise_keys(node, AdvertiseKeysReply.from_record_dict(content))
    return {
        node: ShareKeysReply.from_record_dict(
            secagg_reply(
                secagg_message(request.to_record_dict(), node),
                contexts[node],
                key=fed.devices[node].key,
                policy=policy,
            )
        )
        for node, request in server.share_keys_requests().items()
    }


def test_the_node_keeps_its_verified_attestations_in_its_state_between_rounds(
    fed: Federation, contexts: dict[int, Context], monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = Counter(verify_attestation)
    monkeypatch.setattr(attestations_module, "verify_attestation", counter)

    run_share_keys(fed, contexts, fed.params(label="train/1"))
    first = counter.calls
    run_share_keys(fed, contexts, fed.params(label="train/2"))

    edges = sum(len(fed.params().neighbours(node)) for node in fed.devices)
    assert first == edges and counter.calls == edges
    for node, context in contexts.items():
        record = context.state.config_records[ATTESTATIONS_RECORD]
        digests = record["digests"]
        assert isinstance(digests, bytes)
        verified = VerifiedAttestations.from_bytes(digests)
        assert verified.run_id == RUN and len(verified) == len(fed.params().neighbours(node))


@pytest.mark.parametrize("stored", [b"damaged", (RUN + 1).to_bytes(8, "big")])
def test_unreadable_or_other_run_attestations_in_the_state_are_not_trusted(
    fed: Federation,
    contexts: dict[int, Context],
    monkeypatch: pytest.MonkeyPatch,
    stored: bytes,
) -> None:
    for context in contexts.values():
        context.state[ATTESTATIONS_RECORD] = ConfigRecord({"digests": stored})
    counter = Counter(verify_attestation)
    monkeypatch.setattr(attestations_module, "verify_attestation", counter)

    replies = run_share_keys(fed, contexts, fed.params())

    assert len(replies) == len(fed.devices)
    assert counter.calls == sum(len(fed.params().neighbours(node)) for node in fed.devices)


# -- DevicePolicy.from_node_config ----------------------------------------------------------


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    import os

    for name in list(os.environ):
        if name.upper().startswith("MOODFED_DEVICE_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def test_one_node_config_gives_one_policy_object_and_another_config_another_policy(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    first = DevicePolicy.from_node_config({"device-min-survivors": 5, "partition-id": 1})
    again = DevicePolicy.from_node_config({"device-min-survivors": 5, "partition-id": 2})
    other = DevicePolicy.from_node_config({"device-min-survivors": 8})
    default = DevicePolicy.from_node_config({})

    assert first is again and first.min_survivors == 5
    assert other.min_survivors == 8 and default.min_survivors == 3
    assert other is not first and default is not first


def test_a_changed_environment_gives_a_new_policy(clean_environment: pytest.MonkeyPatch) -> None:
    before = DevicePolicy.from_node_config({"device-delta": 1e-5})

    clean_environment.setenv("MOODFED_DEVICE_MIN_SURVIVORS", "11")
    during = DevicePolicy.from_node_config({"device-delta": 1e-5})
    clean_environment.delenv("MOODFED_DEVICE_MIN_SURVIVORS")
    clean_environment.setenv("moodfed_device_min_survivors", "12")  # read case-insensitively
    lower = DevicePolicy.from_node_config({"device-delta": 1e-5})
    clean_environment.delenv("moodfed_device_min_survivors")
    after = DevicePolicy.from_node_config({"device-delta": 1e-5})

    assert (before.min_survivors, during.min_survivors, lower.min_survivors) == (3, 11, 12)
    assert after is before and during is not before


def test_the_node_config_wins_over_the_environment_as_without_the_cache(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    clean_environment.setenv("MOODFED_DEVICE_NOISE_MULTIPLIER", "2.5")

    policy = DevicePolicy.from_node_config({"device-noise-multiplier": 1.5})

    assert policy == DevicePolicy(noise_multiplier=1.5)
    assert DevicePolicy.from_node_config({}).noise_multiplier == 2.5


def test_a_bad_policy_value_is_refused_every_time(clean_environment: pytest.MonkeyPatch) -> None:
    for _ in range(2):
        with pytest.raises(ValidationError):
            DevicePolicy.from_node_config({"device-min-survivors": 1})


# -- the Skellam encoding -------------------------------------------------------------------


def test_the_skellam_encoding_is_derived_once_per_parameters_and_equals_a_fresh_one(
    fed: Federation,
) -> None:
    params = fed.params(vector_length=50, modulus_bits=32)
    session, _ = DeviceSession.start(
        SetupRequest(params=params),
        node_id=params.ring[0],
        device_key=fed.devices[params.ring[0]].key,
    )
    fresh = DistributedSkellam(
        clip_norm=1.0,
        dimension=50,
        max_devices=params.n,
        min_survivors=params.min_survivors,
        noise_multiplier=0.7,
        bits=32,
    )

    first = skellam_for(session, clip_norm=1.0, noise_multiplier=0.7)
    again = skellam_for(session, clip_norm=1, noise_multiplier=0.7)
    other = skellam_for(session, clip_norm=1.0, noise_multiplier=0.8)

    assert first is again and first == fresh
    assert other == dataclasses.replace(fresh, noise_multiplier=0.8) and other != first

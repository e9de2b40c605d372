"""A device refuses forged keys, a wrong neighbour set, and a server that asks for both shares."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from client_sdk.keys import DeviceKey
from client_sdk.protocol import new_nonce, sign_attestation
from client_sdk.secagg import (
    Attestation,
    DeviceSession,
    KeyPair,
    NeighbourKeys,
    RoundRefused,
    SetupRequest,
    ShareKeysRequest,
    UnmaskRequest,
    sign_advertisement,
)
from tests.secagg.harness import Federation, Outcome, Round, random_vectors

N = 10


@pytest.fixture(scope="module")
def fed() -> Federation:
    return Federation(N, vector_length=4, modulus_bits=16, seed=3)


def vectors(fed: Federation) -> dict[int, Any]:
    return random_vectors(fed.devices, length=4, modulus_bits=16, seed=3)


def replace_entry(request: Any, node: int, change: dict[str, Any]) -> Any:
    if not isinstance(request, ShareKeysRequest):
        return request
    return ShareKeysRequest(
        neighbours=tuple(
            dataclasses.replace(item, **change) if item.node_id == node else item
            for item in request.neighbours
        )
    )


def receivers_of(fed: Federation, node: int) -> set[int]:
    return set(fed.params().neighbours(node))


def test_keys_signed_by_a_key_that_did_not_attest_the_node_are_refused_by_every_peer(
    fed: Federation,
) -> None:
    params = fed.params()
    victim = params.ring[0]
    intruder = DeviceKey.generate()
    c, s = KeyPair.generate(), KeyPair.generate()
    forged = {
        "c_pk": c.public,
        "s_pk": s.public,
        "signature": sign_advertisement(
            intruder, context=params.context, node_id=victim, c_pk=c.public, s_pk=s.public
        ),
    }

    outcome = fed.run(
        vectors(fed), params=params, tamper=lambda st, n, m: replace_entry(m, victim, forged)
    )

    assert set(outcome.refusals) == receivers_of(fed, victim)
    assert all("not signed by its attested key" in r for r in outcome.refusals.values())
    assert outcome.total is None


def test_unsigned_keys_are_refused_by_every_peer(fed: Federation) -> None:
    victim = fed.params().ring[1]

    outcome = fed.run(
        vectors(fed), tamper=lambda st, n, m: replace_entry(m, victim, {"signature": bytes(64)})
    )

    assert set(outcome.refusals) == receivers_of(fed, victim)
    assert outcome.total is None


def run_with(fed: Federation, tamper: Any, **params: Any) -> Outcome:
    """A round whose share-keys requests are tampered with knowing every node's keys."""
    round_ = Round(fed, fed.params(**params))
    round_.advertise()
    keys = round_.neighbour_keys()
    round_.tamper = lambda stage, node, message: tamper(stage, node, message, keys)
    round_.share_keys()
    round_.masked_input(vectors(fed))
    round_.unmask()
    return round_.finish()


def test_keys_swapped_between_two_nodes_are_refused_by_every_peer(fed: Federation) -> None:
    params = fed.params()
    a, b = params.ring[0], params.ring[1]

    def swap(stage: str, node: int, message: Any, keys: dict[int, NeighbourKeys]) -> Any:
        fields = ("c_pk", "s_pk", "signature")
        for victim, other in ((a, b), (b, a)):
            message = replace_entry(message, victim, {f: getattr(keys[other], f) for f in fields})
        return message

    outcome = run_with(fed, swap)

    assert set(outcome.refusals) == set(params.ring), outcome.refusals
    assert outcome.total is None


def test_an_attestation_of_another_node_is_refused(fed: Federation) -> None:
    params = fed.params()
    victim, other = params.ring[2], params.ring[3]
    borrowed = fed.devices[other].attestation

    outcome = fed.run(
        vectors(fed),
        params=params,
        tamper=lambda st, n, m: replace_entry(m, victim, {"attestation": borrowed}),
    )

    assert set(outcome.refusals) == receivers_of(fed, victim)
    assert all("attestation does not verify" in r for r in outcome.refusals.values())


def test_the_same_public_key_under_two_nodes_is_refused(fed: Federation) -> None:
    params = fed.params()
    a, b = params.ring[4], params.ring[5]

    def copy_keys(stage: str, node: int, message: Any, keys: dict[int, NeighbourKeys]) -> Any:
        # b advertises a's public keys, properly signed with b's own device key.
        copied = {
            "c_pk": keys[a].c_pk,
            "s_pk": keys[a].s_pk,
            "signature": sign_advertisement(
                fed.devices[b].key,
                context=params.context,
                node_id=b,
                c_pk=keys[a].c_pk,
                s_pk=keys[a].s_pk,
            ),
        }
        return replace_entry(message, b, copied)

    outcome = run_with(fed, copy_keys)

    assert set(outcome.refusals) == set(params.ring) - {b}
    assert all("already seen" in r for r in outcome.refusals.values())


def test_a_neighbour_outside_the_graph_is_refused() -> None:
    fed = Federation(12, vector_length=4, modulus_bits=16, seed=4)
    sparse: dict[str, Any] = {"degree": 4, "threshold": 3, "min_survivors": 8}
    params = fed.params(**sparse)
    target = params.ring[0]
    stranger = params.ring[6]  # opposite side of the ring: not a neighbour with d = 4

    def add_stranger(stage: str, node: int, message: Any, keys: dict[int, Any]) -> Any:
        if isinstance(message, ShareKeysRequest) and node == target:
            return ShareKeysRequest(neighbours=(*message.neighbours, keys[stranger]))
        return message

    outcome = run_with(fed, add_stranger, **sparse)

    assert stranger not in params.neighbours(target)
    assert set(outcome.refusals) == {target}
    assert "not a neighbour in the round's graph" in outcome.refusals[target]


def test_fewer_live_neighbours_than_the_threshold_is_refused(fed: Federation) -> None:
    params = fed.params()
    target = params.ring[0]

    def starve(stage: str, node: int, message: Any) -> Any:
        if isinstance(message, ShareKeysRequest) and node == target:
            return ShareKeysRequest(neighbours=message.neighbours[: params.threshold - 1])
        return message

    outcome = fed.run(vectors(fed), params=params, tamper=starve)

    assert "the threshold is" in outcome.refusals[target]


def test_a_server_asking_for_both_shares_of_a_neighbour_is_refused(fed: Federation) -> None:
    params = fed.params()
    asked = params.ring[0]
    both = params.ring[1]

    def ask_both(stage: str, node: int, message: Any) -> Any:
        if isinstance(message, UnmaskRequest) and node == asked:
            return UnmaskRequest(survivors=message.survivors, dropped=(*message.dropped, both))
        return message

    outcome = fed.run(vectors(fed), params=params, tamper=ask_both)

    assert set(outcome.refusals) == {asked}
    assert "both shares" in outcome.refusals[asked]
    # It sent nothing in stage 4.
    assert outcome.server.unmasked == set(params.ring) - {asked}


def test_a_refused_session_refuses_everything_after_and_remembers_it(fed: Federation) -> None:
    params = fed.params()
    node = params.ring[0]
    session, _ = DeviceSession.start(
        SetupRequest(params=params), node_id=node, device_key=fed.devices[node].key
    )
    with pytest.raises(RoundRefused):
        session.unmask(UnmaskRequest(survivors=params.ring, dropped=()))  # out of order
    restored = DeviceSession.from_bytes(session.to_bytes())

    with pytest.raises(RoundRefused, match="already refused"):
        restored.share_keys(ShareKeysRequest(neighbours=()))
    assert restored.refusal == session.refusal and restored.stage == "refused"


def test_an_unmask_request_with_too_few_survivors_is_refused(fed: Federation) -> None:
    params = fed.params()

    def shrink(stage: str, node: int, message: Any) -> Any:
        if isinstance(message, UnmaskRequest):
            survivors = message.survivors[: params.min_survivors - 1]
            if node not in survivors:
                survivors = (*survivors[:-1], node)
            rest = tuple(n for n in message.survivors if n not in survivors)
            return UnmaskRequest(survivors=survivors, dropped=(*message.dropped, *rest))
        return message

    outcome = fed.run(vectors(fed), params=params, tamper=shrink)

    assert set(outcome.refusals) == set(params.ring)
    assert all("survivors; the round needs" in r for r in outcome.refusals.values())
    assert outcome.total is None


def test_a_device_refuses_a_round_below_its_own_survivor_floor(fed: Federation) -> None:
    params = fed.params()

    outcome = fed.run(vectors(fed), params=params, minimum_survivors=params.min_survivors + 1)

    assert set(outcome.refusals) == set(params.ring)
    assert outcome.total is None and outcome.aborted is not None


def test_a_device_not_in_the_ring_refuses_setup(fed: Federation) -> None:
    key = DeviceKey.generate()
    with pytest.raises(RoundRefused, match="not in the round"):
        DeviceSession.start(SetupRequest(params=fed.params()), node_id=12345, device_key=key)


def test_an_attestation_with_a_fresh_nonce_for_the_right_node_still_needs_the_signing_key(
    fed: Federation,
) -> None:
    # A server that makes its own device key attest the victim's node can pass the
    # attestation check, but then the victim's real round keys do not verify under it.
    params = fed.params()
    victim = params.ring[0]
    sybil = DeviceKey.generate()
    nonce = new_nonce()
    fake = Attestation(
        nonce=nonce, **sign_attestation(sybil, run_id=params.run_id, node_id=victim, nonce=nonce)
    )

    outcome = fed.run(
        vectors(fed),
        params=params,
        tamper=lambda st, n, m: replace_entry(m, victim, {"attestation": fake}),
    )

    assert set(outcome.refusals) == receivers_of(fed, victim)
    assert all("not signed by its attested key" in r for r in outcome.refusals.values())

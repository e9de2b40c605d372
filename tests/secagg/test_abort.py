"""Fewer survivors than the round allows, or too few shares: no sum, ever."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from client_sdk.keys import DeviceKey
from client_sdk.secagg import (
    AdvertiseKeysReply,
    MaskedInputReply,
    MessageError,
    ReplyRejected,
    RoundAborted,
    StageError,
)
from server.secagg import ServerSession
from tests.secagg.harness import Federation, Round, random_vectors

N = 10  # complete graph: t = 6, min_survivors = 7


@pytest.fixture(scope="module")
def fed() -> Federation:
    return Federation(N, vector_length=4, modulus_bits=16, seed=21)


def vectors(fed: Federation) -> dict[int, np.ndarray]:
    return random_vectors(fed.devices, length=4, modulus_bits=16, seed=21)


@pytest.mark.parametrize("stage", ["advertise", "share-keys", "masked-input"])
def test_fewer_survivors_than_the_floor_at_any_stage_aborts_with_no_sum(
    fed: Federation, stage: str
) -> None:
    params = fed.params()
    dropped = set(params.ring[: params.n - params.min_survivors + 1])

    outcome = fed.run(vectors(fed), params=params, drop={stage: dropped})

    assert params.threshold == 6 and params.min_survivors == 7
    assert outcome.total is None
    assert outcome.aborted is not None and "the round needs 7" in outcome.aborted
    with pytest.raises(RoundAborted):
        outcome.server.result()


def test_fewer_than_t_survivors_aborts(fed: Federation) -> None:
    params = fed.params()
    dropped = set(params.ring[: params.n - params.threshold + 1])

    outcome = fed.run(vectors(fed), params=params, drop={"masked-input": dropped})

    assert outcome.total is None and outcome.aborted is not None


def test_the_floor_itself_is_enough(fed: Federation) -> None:
    params = fed.params()
    dropped = set(params.ring[: params.n - params.min_survivors])

    outcome = fed.run(vectors(fed), params=params, drop={"masked-input": dropped})

    assert outcome.total is not None and len(outcome.server.survivors) == 7


def test_too_few_unmasking_shares_aborts_with_no_sum(fed: Federation) -> None:
    params = fed.params()
    dropped = set(params.ring[:3])  # 7 survivors, the floor
    silent = set(params.ring[3:5])  # 5 answer: 4 or 5 shares of each seed, t = 6

    outcome = fed.run(vectors(fed), params=params, drop={"masked-input": dropped, "unmask": silent})

    assert outcome.total is None
    assert outcome.aborted is not None and "shares of" in outcome.aborted


def test_key_shares_that_do_not_rebuild_the_advertised_key_abort(fed: Federation) -> None:
    params = fed.params()
    dropped = params.ring[0]
    round_ = Round(fed, params)
    round_.advertise()
    round_.share_keys()
    round_.masked_input(vectors(fed), drop={dropped})

    def corrupt(stage: str, node: int, reply: Any) -> Any:
        shares = tuple(bytes(33) for _ in reply.key_shares)  # zeros: a wrong point each
        return dataclasses.replace(reply, key_shares=shares)

    round_.corrupt = corrupt
    round_.unmask()
    outcome = round_.finish()

    assert outcome.total is None
    assert outcome.aborted is not None and f"node {dropped}" in outcome.aborted


def test_a_server_session_needs_every_node_attested(fed: Federation) -> None:
    params = fed.params()
    attestations = fed.attestations
    attestations.pop(params.ring[0])

    with pytest.raises(MessageError, match="no valid attestation"):
        ServerSession(params, attestations)


def test_the_server_rejects_badly_signed_and_repeated_keys_and_keeps_its_state(
    fed: Federation,
) -> None:
    round_ = Round(fed, fed.params())
    round_.advertise()
    server, keys = round_.server, round_.neighbour_keys()
    fresh = ServerSession(round_.params, fed.attestations)
    fresh.setup_requests()
    node = round_.params.ring[0]
    good = AdvertiseKeysReply(
        c_pk=keys[node].c_pk, s_pk=keys[node].s_pk, signature=keys[node].signature
    )
    forged = AdvertiseKeysReply(
        c_pk=good.c_pk, s_pk=good.s_pk, signature=DeviceKey.generate().sign(b"not it")
    )

    with pytest.raises(ReplyRejected, match="not signed"):
        fresh.receive_advertise_keys(node, forged)
    assert fresh.advertised == frozenset()
    fresh.receive_advertise_keys(node, good)
    with pytest.raises(ReplyRejected, match="repeated"):
        fresh.receive_advertise_keys(node, good)
    with pytest.raises(ReplyRejected, match="unexpected"):
        fresh.receive_advertise_keys(12345, good)
    assert fresh.advertised == {node}
    assert server.advertised == set(round_.params.ring)


def test_the_server_rejects_a_masked_input_of_the_wrong_size(fed: Federation) -> None:
    round_ = Round(fed, fed.params())
    round_.advertise()
    round_.share_keys()
    server = round_.server
    server.masked_input_requests()
    node = round_.params.ring[0]

    with pytest.raises(ReplyRejected, match="shape"):
        server.receive_masked_input(node, MaskedInputReply(masked=np.zeros(5, dtype=np.uint64)))
    with pytest.raises(ReplyRejected, match="modulo"):
        server.receive_masked_input(
            node, MaskedInputReply(masked=np.full(4, 1 << 16, dtype=np.uint64))
        )
    assert server.survivors == frozenset()


def test_server_stages_must_run_in_order(fed: Federation) -> None:
    server = ServerSession(fed.params(), fed.attestations)

    with pytest.raises(StageError):
        server.unmask_requests()
    with pytest.raises(StageError):
        server.result()

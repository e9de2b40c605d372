"""Every message survives its Flower records; a malformed one is a clear MessageError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from client_sdk.secagg import (
    CIPHERTEXT_BYTES,
    AdvertiseKeysReply,
    Attestation,
    DeviceSession,
    MaskedInputReply,
    MaskedInputRequest,
    MessageError,
    NeighbourKeys,
    SetupRequest,
    ShareKeysReply,
    ShareKeysRequest,
    UnmaskReply,
    UnmaskRequest,
)
from tests.secagg.harness import Federation, Round, from_wire, random_vectors, to_wire

BIG = 2**64 - 1  # Flower node ids are uint64

ATT = Attestation(device_key="k" * 43, signature="s" * 86, nonce="n" * 43)
MESSAGES = [
    AdvertiseKeysReply(c_pk=bytes(32), s_pk=b"\x01" * 32, signature=b"\x02" * 64),
    ShareKeysRequest(
        neighbours=(
            NeighbourKeys(BIG, b"\x03" * 32, b"\x04" * 32, b"\x05" * 64, ATT),
            NeighbourKeys(7, b"\x06" * 32, b"\x07" * 32, b"\x08" * 64, ATT),
        )
    ),
    ShareKeysRequest(neighbours=()),
    ShareKeysReply(ids=(BIG, 3), ciphertexts=(b"a" * CIPHERTEXT_BYTES, b"b" * CIPHERTEXT_BYTES)),
    MaskedInputRequest(ids=(5,), ciphertexts=(b"c" * CIPHERTEXT_BYTES,)),
    MaskedInputReply(masked=np.array([0, 1, BIG], dtype=np.uint64)),
    UnmaskRequest(survivors=(1, BIG), dropped=()),
    UnmaskReply(
        mask_owners=(1,), mask_shares=(b"\x00" * 33,), key_owners=(BIG,), key_shares=(b"\x01" * 33,)
    ),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_its_wire_bytes(message: Any) -> None:
    assert from_wire(type(message), to_wire(message)) == message


def test_setup_round_trips_and_other_records_may_ride_along() -> None:
    params = Federation(5, seed=1).params()
    content = SetupRequest(params=params).to_record_dict()
    content["train-config"] = ConfigRecord({"round": 3})

    parsed = SetupRequest.from_record_dict(content)

    assert parsed.params == params and parsed.params.context == params.context


def config(message: Any) -> dict[str, Any]:
    return dict(message.to_record())


GOOD_KEYS = config(MESSAGES[0])
GOOD_SHARE_KEYS = config(MESSAGES[1])
GOOD_UNMASK = config(MESSAGES[7])


@pytest.mark.parametrize(
    ("cls", "fields", "complaint"),
    [
        (AdvertiseKeysReply, {**GOOD_KEYS, "c-pk": b"short"}, "c-pk must be 32 bytes"),
        (AdvertiseKeysReply, {**GOOD_KEYS, "signature": "text"}, "signature must be 64"),
        (AdvertiseKeysReply, {k: v for k, v in GOOD_KEYS.items() if k != "s-pk"}, "exactly"),
        (AdvertiseKeysReply, {**GOOD_KEYS, "extra": 1}, "exactly"),
        (ShareKeysRequest, {**GOOD_SHARE_KEYS, "node-ids": [1, 1]}, "twice"),
        (ShareKeysRequest, {**GOOD_SHARE_KEYS, "node-ids": [1]}, "same length"),
        (ShareKeysRequest, {**GOOD_SHARE_KEYS, "node-ids": [-1, 2]}, r"node-ids\[\] must be"),
        (ShareKeysRequest, {**GOOD_SHARE_KEYS, "node-ids": [True, False]}, "must be an integer"),
        (ShareKeysRequest, {**GOOD_SHARE_KEYS, "node-ids": ["1", "2"]}, "must be an integer"),
        (ShareKeysRequest, {**GOOD_SHARE_KEYS, "device-keys": ["", "x"]}, "short ASCII"),
        (ShareKeysRequest, {**GOOD_SHARE_KEYS, "signatures": b"x" * 64}, "must be a list"),
        (ShareKeysReply, {"recipients": [1], "ciphertexts": [b"x"]}, f"{CIPHERTEXT_BYTES}-byte"),
        (UnmaskRequest, {"survivors": [1, 2], "dropped": "3"}, "must be a list"),
        (UnmaskReply, {**GOOD_UNMASK, "key-owners": [1]}, "both sent"),
        (UnmaskReply, {**GOOD_UNMASK, "mask-shares": []}, "same length"),
    ],
)
def test_a_malformed_field_is_a_clear_error(
    cls: Any, fields: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(MessageError, match=complaint):
        cls.from_record(ConfigRecord(fields))


def test_a_missing_record_or_a_record_of_the_wrong_kind_is_a_clear_error() -> None:
    with pytest.raises(MessageError, match="has no 'secagg-unmask' record"):
        UnmaskRequest.from_record_dict(RecordDict({"other": ConfigRecord({})}))
    with pytest.raises(MessageError, match="must be a ConfigRecord"):
        UnmaskRequest.from_record_dict(RecordDict({"secagg-unmask": ArrayRecord()}))
    with pytest.raises(MessageError, match="must be an ArrayRecord"):
        MaskedInputReply.from_record_dict(RecordDict({"secagg-masked-input": ConfigRecord()}))


@pytest.mark.parametrize(
    "array",
    [
        Array(np.zeros(3, dtype=np.float64)),
        Array(np.zeros((2, 2), dtype=np.uint64)),
        Array(np.zeros(0, dtype=np.uint64)),
        Array(dtype="uint64", shape=(3,), stype="numpy.ndarray", data=b"not numpy"),
        Array(
            dtype="uint64",
            shape=(3,),
            stype="numpy.ndarray",
            data=Array(np.zeros(4, dtype=np.uint64)).data,
        ),
        Array(
            dtype="uint64",
            shape=(3,),
            stype="numpy.ndarray",
            data=Array(np.zeros(3, dtype=np.int64)).data,
        ),
    ],
)
def test_a_malformed_masked_vector_is_a_clear_error(array: Array) -> None:
    with pytest.raises(MessageError, match="masked"):
        MaskedInputReply.from_record(ArrayRecord({"masked": array}))


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("degree", 3, "degree"),
        ("threshold", 2, "majority"),
        ("threshold", True, "integer"),
        ("min-survivors", 3, "min_survivors"),
        ("modulus-bits", 65, "modulus_bits"),
        ("vector-length", 0, "vector_length"),
        ("round", "", "round_label"),
        ("round", "tab\there", "round_label"),
        ("ring", [1, 1, 2, 3, 4], "twice"),
        ("ring", [1, 2], "3 to"),
        ("run-id", 2**64, "run_id"),
    ],
)
def test_bad_round_parameters_are_a_clear_error(field: str, value: object, complaint: str) -> None:
    params_fields = Federation(5, seed=2).params().to_fields()
    fields: dict[str, Any] = {**params_fields, field: value}
    with pytest.raises(MessageError, match=complaint):
        SetupRequest.from_record(ConfigRecord(fields))


def test_every_parameter_changes_the_context_every_key_is_bound_to() -> None:
    fed = Federation(7, seed=2)
    base = fed.params()
    variants = [
        fed.params(run_id=78),
        fed.params(label="train/2"),
        fed.params(ring=tuple(reversed(base.ring))),
        fed.params(degree=4, threshold=3, min_survivors=4),
        fed.params(threshold=base.threshold + 1, min_survivors=base.min_survivors + 1),
        fed.params(min_survivors=base.min_survivors + 1),
        fed.params(modulus_bits=31),
        fed.params(vector_length=9),
    ]
    assert len({base.context, *(v.context for v in variants)}) == len(variants) + 1


def test_a_device_session_round_trips_through_bytes_at_every_stage() -> None:
    fed = Federation(6, vector_length=4, modulus_bits=16, seed=9)
    vectors = random_vectors(fed.devices, length=4, modulus_bits=16, seed=9)
    round_ = Round(fed, fed.params())
    snapshots: list[bytes] = []

    for stage in (round_.advertise, round_.share_keys):
        stage()
        snapshots.extend(round_.state.values())
    round_.masked_input(vectors)
    snapshots.extend(round_.state.values())
    round_.unmask()
    snapshots.extend(round_.state.values())

    assert round_.finish().total is not None
    assert len(snapshots) == 4 * 6
    for data in snapshots:
        session = DeviceSession.from_bytes(data)
        assert session.to_bytes() == data


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:-5],
        lambda d: b"\xff" + d,
        lambda d: d.replace(b'"version":2', b'"version":1'),
        lambda d: d.replace(b'"stage":"shared"', b'"stage":"nowhere"'),
        lambda d: d.replace(b'"s_sk":"', b'"s_sk":"zz'),
        lambda d: d.replace(b'"c_sk":null', b'"c_sk":"00"'),
        lambda d: d.replace(b'"node_id":', b'"node_id":1'),
        lambda d: d.replace(b'"refusal":null', b'"refusal":null,"extra":1'),
    ],
)
def test_damaged_session_bytes_are_a_clear_error(damage: Callable[[bytes], bytes]) -> None:
    fed = Federation(5, vector_length=4, modulus_bits=16, seed=10)
    round_ = Round(fed, fed.params())
    round_.advertise()
    round_.share_keys()
    data = next(iter(round_.state.values()))

    with pytest.raises(MessageError):
        DeviceSession.from_bytes(damage(data))

"""Invariant 1: raw diary entries, notes and timestamps never leave the device.

In the shared consent-gated run (``gated_run``), device 0 holds a real encrypted diary
with planted values (a unique note, a unique sleep duration and step count, a unique
timestamp). Every message it sent was captured at the ClientApp's reply boundary; the
planted values are searched for, in every encoding they could take, in those bytes. The
exact records and fields a device sends are pinned too.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from tests.training.conftest import (
    GATED_ROUNDS,
    PLANTED,
    PLANTED_AT,
    PLANTED_NOTE,
    PLANTED_SLEEP,
    PLANTED_STEPS,
    Simulation,
    trained,
)


def _needles() -> dict[str, list[bytes]]:
    return {
        "note": [PLANTED_NOTE.encode(), PLANTED_NOTE.encode("utf-16-le")],
        "sleep": [
            repr(PLANTED_SLEEP).encode(),
            struct.pack("<d", PLANTED_SLEEP),
            struct.pack("<f", PLANTED_SLEEP),
            struct.pack(">d", PLANTED_SLEEP),
        ],
        "steps": [
            str(PLANTED_STEPS).encode(),
            struct.pack("<i", PLANTED_STEPS),
            struct.pack("<q", PLANTED_STEPS),
        ],
        "timestamp": [
            PLANTED_AT.isoformat().encode(),
            b"2026-02-03T21:17:29",
            str(int(PLANTED_AT.timestamp())).encode(),
        ],
    }


def _sent_by(simulation: Simulation, index: int) -> list[dict[str, Any]]:
    return [row for row in simulation.replies() if row["partition"] == index]


def test_the_planted_device_took_part_with_its_real_diary(gated_run: Simulation) -> None:
    assert trained(gated_run.replies(), PLANTED) == list(range(1, GATED_ROUNDS + 1))


def test_no_planted_value_appears_in_any_message_the_device_sent(gated_run: Simulation) -> None:
    payloads = [base64.b64decode(row["payload"]) for row in _sent_by(gated_run, PLANTED)]

    # one attestation; per round: keys, shares, the masked input, the unmasking shares
    assert len(payloads) == 1 + 4 * GATED_ROUNDS
    for name, needles in _needles().items():
        for needle in needles:
            assert not any(needle in payload for payload in payloads), name


def test_the_attestation_reply_holds_only_the_device_key_and_signature(
    gated_run: Simulation,
) -> None:
    sent = _sent_by(gated_run, PLANTED)
    attestations = [row for row in sent if row["message_type"] == "query.attest"]

    assert [row["records"] for row in attestations] == [
        {"attestation": ["ConfigRecord", ["device_key", "signature"]]}
    ]


def test_a_training_reply_holds_only_the_masked_input(gated_run: Simulation) -> None:
    updates = [row for row in _sent_by(gated_run, PLANTED) if row["message_type"] == "train"]

    assert [row["records"] for row in updates] == [
        {"secagg-masked-input": ["ArrayRecord", ["masked"]]}
    ] * GATED_ROUNDS


def test_every_device_sends_the_same_records_and_fields(gated_run: Simulation) -> None:
    shapes = {
        (row["message_type"], tuple((k, v[0], tuple(v[1])) for k, v in row["records"].items()))
        for row in gated_run.replies()
        if not row.get("error") and not row.get("raised")
    }

    secagg = "query.secagg"
    assert shapes == {
        ("query.attest", (("attestation", "ConfigRecord", ("device_key", "signature")),)),
        (secagg, (("secagg-advertise-keys", "ConfigRecord", ("c-pk", "s-pk", "signature")),)),
        (secagg, (("secagg-encrypted-shares", "ConfigRecord", ("ciphertexts", "recipients")),)),
        ("train", (("secagg-masked-input", "ArrayRecord", ("masked",)),)),
        (
            secagg,
            (
                (
                    "secagg-unmask-shares",
                    "ConfigRecord",
                    ("key-owners", "key-shares", "mask-owners", "mask-shares"),
                ),
            ),
        ),
    }

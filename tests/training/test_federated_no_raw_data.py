"""Invariant 1: raw diary entries, notes and timestamps never leave the device.

One simulated device holds a real encrypted diary with planted values (a unique note,
a unique sleep duration and step count, a unique timestamp); a whole run is captured
at the ClientApp's reply boundary and the planted values are searched for, in every
encoding they could take, in the bytes of every message that device sent. The exact
records and fields a device sends are pinned too.
"""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime
from typing import Any

import pytest

from client_sdk import Device, Entry
from client_sdk.simulated import device_folder
from server.simulation import TRAINING_NOTICE
from tests.conftest import ConsentServer
from tests.training.conftest import Simulation, log_key_of, make_simulation, trained

NOTE = "CANARY-note-7f3a9c1e-do-not-leak"
SLEEP = 6.283185
STEPS = 987_654
PLANTED_AT = datetime(2026, 2, 3, 21, 17, 29, tzinfo=UTC)
PLANTED = 0


def _needles() -> dict[str, list[bytes]]:
    return {
        "note": [NOTE.encode(), NOTE.encode("utf-16-le")],
        "sleep": [
            repr(SLEEP).encode(),
            struct.pack("<d", SLEEP),
            struct.pack("<f", SLEEP),
            struct.pack(">d", SLEEP),
        ],
        "steps": [str(STEPS).encode(), struct.pack("<i", STEPS), struct.pack("<q", STEPS)],
        "timestamp": [
            PLANTED_AT.isoformat().encode(),
            b"2026-02-03T21:17:29",
            str(int(PLANTED_AT.timestamp())).encode(),
        ],
    }


def _plant_device(simulation: Simulation) -> None:
    """Give simulated device 0 a real device folder: its own key and encrypted diary."""
    folder = device_folder(simulation.sim_root, PLANTED)
    population = simulation.federation.spec.population()
    entries = list(population.entries_for(PLANTED))
    entries.append(Entry(time=PLANTED_AT, mood=4, note=NOTE, sleep_hours=SLEEP, steps=STEPS))
    with Device.create(
        folder, consent_url=simulation.service.url, log_key=log_key_of(simulation.service)
    ) as device:
        device.diary.log_many(entries)
        device.consent.grant("model-training", notice=TRAINING_NOTICE)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, consent_service: ConsentServer) -> Simulation:
    simulation = make_simulation(
        tmp_path_factory.mktemp("no-raw-data"),
        consent_service,
        devices=4,
        seed=21,
        rounds=2,
        days=40,
        grant=lambda federation: federation.grant(range(1, 4)),
    )
    _plant_device(simulation)
    simulation.run()
    return simulation


def _sent_by(simulation: Simulation, index: int) -> list[dict[str, Any]]:
    return [row for row in simulation.replies() if row["partition"] == index]


def test_the_planted_device_took_part_with_its_real_diary(run: Simulation) -> None:
    assert run.result is not None and run.result.status == "completed"
    assert trained(run.replies(), PLANTED) == [1, 2]


def test_no_planted_value_appears_in_any_message_the_device_sent(run: Simulation) -> None:
    sent = _sent_by(run, PLANTED)
    payloads = [base64.b64decode(row["payload"]) for row in sent]

    assert len(payloads) == 3  # one attestation, two updates
    for name, needles in _needles().items():
        for needle in needles:
            assert not any(needle in payload for payload in payloads), name


def test_the_attestation_reply_holds_only_the_device_key_and_signature(run: Simulation) -> None:
    attestations = [row for row in _sent_by(run, PLANTED) if row["message_type"] == "query.attest"]

    assert [row["records"] for row in attestations] == [
        {"attestation": ["ConfigRecord", ["device_key", "signature"]]}
    ]


def test_a_training_reply_holds_only_the_update_arrays(run: Simulation) -> None:
    updates = [row for row in _sent_by(run, PLANTED) if row["message_type"] == "train"]

    assert [row["records"] for row in updates] == [
        {"update": ["ArrayRecord", ["0", "1", "2", "3"]]}
    ] * 2


def test_every_device_sends_the_same_records_and_fields(run: Simulation) -> None:
    shapes = {
        (row["message_type"], tuple((k, v[0], tuple(v[1])) for k, v in row["records"].items()))
        for row in run.replies()
        if not row.get("error") and not row.get("raised")
    }

    assert shapes == {
        ("query.attest", (("attestation", "ConfigRecord", ("device_key", "signature")),)),
        ("train", (("update", "ArrayRecord", ("0", "1", "2", "3")),)),
    }

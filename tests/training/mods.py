"""Flower mods the training tests wrap around the real ClientApp (they run in Ray workers).

``CaptureReplies`` records, at the ClientApp's reply boundary, every message a device
sends: its record and field names and the serialized bytes of its content.
``FailSome`` raises in the ClientApp for a seeded share of training messages;
``HugeUpdate`` and ``ReplayAttestation`` make one device misbehave.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.serde import recorddict_to_proto

from client_sdk.protocol import ATTESTATION_RECORD, UPDATE_RECORD, sign_attestation


def partition(context: Context) -> int:
    return int(context.node_config["partition-id"])


def describe(reply: Message, context: Context) -> dict[str, Any]:
    """One reply as data: who sent it, its records and fields, and its bytes."""
    described: dict[str, Any] = {
        "partition": partition(context),
        "message_type": reply.metadata.message_type,
        "group_id": reply.metadata.group_id,
        "error": None,
        "records": {},
        "payload": "",
    }
    if reply.has_error():
        described["error"] = [reply.error.code, reply.error.reason]
        described["payload"] = base64.b64encode((reply.error.reason or "").encode()).decode()
        return described
    content = reply.content
    described["records"] = {
        name: [type(record).__name__, sorted(record.keys())] for name, record in content.items()
    }
    raw = recorddict_to_proto(content).SerializeToString() + repr(reply.metadata).encode()
    described["payload"] = base64.b64encode(raw).decode()
    return described


@dataclass(frozen=True)
class CaptureReplies:
    """Append every reply (or the exception raised instead) to ``folder``/<pid>.jsonl."""

    folder: str

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        path = Path(self.folder) / f"{os.getpid()}.jsonl"
        try:
            reply = call_next(message, context)
        except Exception as error:
            record = {
                "partition": partition(context),
                "message_type": message.metadata.message_type,
                "group_id": message.metadata.group_id,
                "raised": type(error).__name__,
            }
            with path.open("a") as stream:
                stream.write(json.dumps(record) + "\n")
            raise
        with path.open("a") as stream:
            stream.write(json.dumps(describe(reply, context)) + "\n")
        return reply


def read_captured(folder: str | Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return rows


@dataclass(frozen=True)
class FailSome:
    """Raise for a seeded share ``rate`` of training messages (by partition and round)."""

    rate: float
    seed: int

    def fails(self, partition_id: int, round_number: int) -> bool:
        return bool(
            np.random.default_rng([self.seed, partition_id, round_number]).random() < self.rate
        )

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if message.metadata.message_type == "train" and self.fails(
            partition(context), int(message.metadata.group_id)
        ):
            raise RuntimeError("injected fault")
        return call_next(message, context)


@dataclass(frozen=True)
class HugeUpdate:
    """The ``victims`` send an update of ``factor`` everywhere instead of their own."""

    victims: frozenset[int]
    factor: float = 1e9

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(message, context)
        if partition(context) not in self.victims or reply.has_error():
            return reply
        if message.metadata.message_type != "train":
            return reply
        arrays = reply.content[UPDATE_RECORD].to_numpy_ndarrays()
        huge = [np.full_like(a, self.factor) for a in arrays]
        return Message(RecordDict({UPDATE_RECORD: ArrayRecord(huge)}), reply_to=message)


@dataclass(frozen=True)
class ReplayAttestation:
    """Device ``victim`` answers the challenge with a signature made for another node."""

    victim: int
    sim_root: str

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(message, context)
        if partition(context) != self.victim or message.metadata.message_type != "query.attest":
            return reply
        from client_sdk.sim.client_app import open_simulated_device

        with open_simulated_device(context, {"sim-root": self.sim_root}) as device:
            fields = sign_attestation(
                device.key,
                run_id=message.metadata.run_id,
                node_id=message.metadata.dst_node_id + 1,
                nonce=str(message.content["challenge"]["nonce"]),
            )
        return Message(RecordDict({ATTESTATION_RECORD: ConfigRecord(fields)}), reply_to=message)

"""Who is behind each Flower node: a signed challenge at the start of a run.

Flower's node ids say nothing about which consenting person a node is. Each node is
sent a fresh random nonce and must sign (run id, node id, nonce) with its device key
(the key its consent statements are signed with). A node whose answer is missing,
malformed or badly signed is left out of the run; so are nodes that present the same
device key, since one person counted twice would double their weight in a round and
break the sensitivity bound the user-level DP guarantee rests on.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from client_sdk.protocol import (
    ATTEST_MESSAGE_TYPE,
    ATTESTATION_FIELDS,
    ATTESTATION_RECORD,
    CHALLENGE_RECORD,
    new_nonce,
    verify_attestation,
)
from client_sdk.secagg import Attestation
from server.messaging import exchange
from server.observers import RunObserver

__all__ = ["Attestations", "attest_nodes", "check_attestation"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attestations:
    """The outcome of attesting a run's nodes."""

    device_keys: dict[int, str]
    """Node id -> verified device key, for the nodes that take part."""
    rejected: dict[int, str] = field(default_factory=dict)
    """Node id -> why it was left out."""
    records: dict[int, Attestation] = field(default_factory=dict)
    """Node id -> its signed attestation (key, signature, nonce): what a secure sum
    forwards to a node's neighbours so they can check its round keys."""

    def node_for(self) -> dict[str, int]:
        """Device key -> node id (keys are unique by construction)."""
        return {key: node for node, key in self.device_keys.items()}


def check_attestation(reply: Message, *, run_id: int, node_id: int, nonce: str) -> str | None:
    """The device key a reply proves, or None if it proves nothing.

    The reply must carry exactly one record, a ConfigRecord ``attestation`` with exactly
    the fields ``device_key`` and ``signature`` (strings), and the signature must verify.
    """
    if reply.has_error() or not reply.has_content():
        return None
    if reply.metadata.src_node_id != node_id:
        return None
    content = reply.content
    if set(content.keys()) != {ATTESTATION_RECORD}:
        return None
    record = content[ATTESTATION_RECORD]
    if not isinstance(record, ConfigRecord) or set(record.keys()) != set(ATTESTATION_FIELDS):
        return None
    device_key, signature = record["device_key"], record["signature"]
    if not isinstance(device_key, str) or not isinstance(signature, str):
        return None
    if not verify_attestation(
        device_key=device_key, signature=signature, run_id=run_id, node_id=node_id, nonce=nonce
    ):
        return None
    return device_key


def attest_nodes(
    grid: Grid,
    node_ids: Iterable[int],
    *,
    timeout: float,
    observers: Sequence[RunObserver] = (),
) -> Attestations:
    """Challenge every node and keep those that prove a unique device key."""
    run_id = grid.run.run_id
    nonces = {node_id: new_nonce() for node_id in node_ids}
    messages = [
        Message(
            RecordDict({CHALLENGE_RECORD: ConfigRecord({"nonce": nonce})}),
            dst_node_id=node_id,
            message_type=ATTEST_MESSAGE_TYPE,
            group_id="attestation",
        )
        for node_id, nonce in nonces.items()
    ]
    replies: dict[int, Message] = {}
    for reply in exchange(
        grid, messages, timeout=timeout, phase="attestation", observers=observers
    ):
        source = reply.metadata.src_node_id
        if source in nonces and source not in replies:
            replies[source] = reply
    claimed: dict[int, Attestation] = {}
    rejected: dict[int, str] = {}
    for node_id, nonce in nonces.items():
        answer = replies.get(node_id)
        if answer is None:
            rejected[node_id] = "no answer to the attestation challenge"
            continue
        device_key = check_attestation(answer, run_id=run_id, node_id=node_id, nonce=nonce)
        if device_key is None:
            rejected[node_id] = "bad attestation"
            continue
        signature = str(answer.content.config_records[ATTESTATION_RECORD]["signature"])
        claimed[node_id] = Attestation(device_key=device_key, signature=signature, nonce=nonce)
    return _unique(claimed, rejected)


def _unique(claimed: Mapping[int, Attestation], rejected: dict[int, str]) -> Attestations:
    counts = Counter(record.device_key for record in claimed.values())
    accepted: dict[int, Attestation] = {}
    for node_id, record in claimed.items():
        if counts[record.device_key] > 1:
            rejected[node_id] = "device key presented by more than one node"
        else:
            accepted[node_id] = record
    for node_id, reason in sorted(rejected.items()):
        log.warning("Node %s left out of the run: %s", node_id, reason)
    return Attestations(
        device_keys={node: record.device_key for node, record in accepted.items()},
        rejected=rejected,
        records=accepted,
    )

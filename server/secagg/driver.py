"""Running one secure-aggregation round over a Flower Grid: four exchanges, one sum.

:class:`ServerSession` knows the protocol; this moves its messages. Stages 0-2 and 4
travel as ``query.secagg`` messages (:data:`client_sdk.protocol.SECAGG_MESSAGE_TYPE`);
stage 3, the masked input, travels in the round's own message (``train`` or
``query.analytics``) together with that round's payload (the global model and its
config, or the week and the queries), so a device computes its contribution and masks
it in one step. A node that does not answer a stage in time, or answers with an error
or a malformed reply, has dropped out from that stage on; the session aborts (and this
raises :class:`~client_sdk.secagg.RoundAborted`) when fewer than the round's
``min_survivors`` remain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, Self, TypeVar

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from numpy.typing import NDArray

from client_sdk.protocol import SECAGG_MESSAGE_TYPE
from client_sdk.secagg import (
    AdvertiseKeysReply,
    Attestation,
    MaskedInputReply,
    MessageError,
    ReplyRejected,
    RoundParams,
    ShareKeysReply,
    UnmaskReply,
)
from server.messaging import exchange
from server.observers import RunObserver
from server.secagg.session import ServerSession

__all__ = ["SecureSum", "secure_sum"]

log = logging.getLogger(__name__)


class _Request(Protocol):
    RECORD: ClassVar[str]

    def to_record(self) -> ConfigRecord: ...

    def to_record_dict(self) -> RecordDict: ...


class _Reply(Protocol):
    @classmethod
    def from_record_dict(cls, content: RecordDict) -> Self: ...


R = TypeVar("R", bound=_Reply)


@dataclass(frozen=True, slots=True)
class SecureSum:
    """What a round revealed: the sum modulo ``2**modulus_bits`` over its survivors."""

    total: NDArray[np.uint64]
    survivors: int
    params: RoundParams


def secure_sum(
    grid: Grid,
    *,
    params: RoundParams,
    attestations: Mapping[int, Attestation],
    input_message_type: str,
    input_content: RecordDict,
    timeout: float,
    observers: Sequence[RunObserver] = (),
) -> SecureSum:
    """Sum the vectors of the nodes of ``params`` (planned with
    :func:`~server.secagg.planning.plan_round`) without seeing any one of them.

    ``attestations`` holds every such node's run attestation; ``input_content`` the
    records every node's stage-3 message carries besides its own masked-input request.
    Raises :class:`RoundAborted` when the round cannot reveal a sum (too few survivors at
    any stage).
    """
    session = ServerSession(params, attestations)
    label = params.round_label

    def stage(
        requests: Mapping[int, _Request],
        *,
        name: str,
        message_type: str,
        reply_type: type[R],
        receive: Callable[[int, R], None],
        payload: Callable[[_Request], RecordDict],
    ) -> None:
        messages = [
            Message(
                payload(request),
                dst_node_id=node,
                message_type=message_type,
                group_id=f"{label}/{name}",
            )
            for node, request in sorted(requests.items())
        ]
        replies = exchange(
            grid, messages, timeout=timeout, phase=f"{label}: {name}", observers=observers
        )
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                log.debug("Node %s answered %s with an error: it drops out", node, name)
                continue
            try:
                receive(node, reply_type.from_record_dict(reply.content))
            except (MessageError, ReplyRejected) as error:
                log.warning("Node %s's %s reply was rejected: %s", node, name, error)

    def own(request: _Request) -> RecordDict:
        return request.to_record_dict()

    def with_input(request: _Request) -> RecordDict:
        content = RecordDict(dict(input_content))
        content[request.RECORD] = request.to_record()
        return content

    stage(
        session.setup_requests(),
        name="keys",
        message_type=SECAGG_MESSAGE_TYPE,
        reply_type=AdvertiseKeysReply,
        receive=session.receive_advertise_keys,
        payload=own,
    )
    stage(
        session.share_keys_requests(),
        name="shares",
        message_type=SECAGG_MESSAGE_TYPE,
        reply_type=ShareKeysReply,
        receive=session.receive_share_keys,
        payload=own,
    )
    stage(
        session.masked_input_requests(),
        name="masked input",
        message_type=input_message_type,
        reply_type=MaskedInputReply,
        receive=session.receive_masked_input,
        payload=with_input,
    )
    stage(
        session.unmask_requests(),
        name="unmask",
        message_type=SECAGG_MESSAGE_TYPE,
        reply_type=UnmaskReply,
        receive=session.receive_unmask,
        payload=own,
    )
    total = session.result()
    return SecureSum(total=total, survivors=len(session.survivors), params=params)

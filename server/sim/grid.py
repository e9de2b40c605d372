"""An in-process Flower Grid for benchmarks and tests: the real ServerApp loop, the real ClientApp.

``InProcessGrid`` implements Flower's ``Grid`` interface by calling the ClientApp
object directly, node after node, in this process: no Ray, no SuperLink, no network,
no serialization. What it measures is moodfed's own logic (attestation, the consent
query over HTTP, accounting, DP-FedAvg, the device's gate and DP-SGD, the release
store), not Flower's transport or Ray's scheduling.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import NUM_PARTITIONS_KEY, PARTITION_ID_KEY, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = ["InProcessGrid"]


class InProcessGrid(Grid):
    """``num_nodes`` virtual SuperNodes running ``client_app`` in this process.

    Node ``i`` has ``partition-id`` ``i`` in its node config, as in Flower's
    Simulation Engine; a ClientApp exception becomes an error reply, as there. Up to
    ``workers`` nodes handle their messages at the same time (threads), as the
    Simulation Engine runs one ClientApp per CPU: a device's waits (its disk, the
    consent service) then overlap with the others' work, as they do on separate phones.
    """

    def __init__(
        self,
        client_app: ClientApp,
        *,
        num_nodes: int,
        run_id: int | None = None,
        workers: int = 1,
    ) -> None:
        self.client_app = client_app
        self.workers = max(1, workers)
        run_id = run_id if run_id is not None else secrets.randbits(63)
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = 1
        TaskIdentity.task_id = 1
        self._run = Run.create_empty(run_id)
        node_ids: list[int] = []
        while len(node_ids) < num_nodes:
            candidate = secrets.randbits(63)
            if candidate > 1 and candidate not in node_ids:
                node_ids.append(candidate)
        self._contexts = {
            node_id: Context(
                run_id=run_id,
                node_id=node_id,
                node_config={PARTITION_ID_KEY: index, NUM_PARTITIONS_KEY: num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for index, node_id in enumerate(node_ids)
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def _deliver(self, message: Message) -> Message:
        context = self._contexts[message.metadata.dst_node_id]
        try:
            return self.client_app(message, context)
        except Exception as error:  # as the Simulation Engine does
            reason = f"{type(error)}:<'{error}'>"
            return Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message
            )

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        batch = list(messages)
        if self.workers == 1:
            replies = [self._deliver(message) for message in batch]
        else:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                replies = list(pool.map(self._deliver, batch))
        ids = [secrets.token_hex(16) for _ in batch]
        self._replies.update(zip(ids, replies, strict=True))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))

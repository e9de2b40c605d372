"""A transcript of everything the server received: each reply's bytes, phase by phase.

An operator (or a test) points ``MOODFED_TRANSCRIPT_DIR`` at a folder and the ServerApp
writes there every reply it receives, as the protobuf bytes Flower carries, one file per
phase. It shows what the server holds: in a secure round, signed keys, encrypted shares,
masked vectors and unmasking shares, never a device's update or contribution in the
clear. It never holds anything the server did not receive.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from flwr.app import Message, RecordDict
from flwr.common import serde
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

from server.observers import RunObserver

__all__ = ["Transcript", "read_transcript"]

_SEPARATOR = b"\n--moodfed-reply--\n"


class Transcript(RunObserver):
    """Appends each phase's replies (source node, then content bytes) to ``folder``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def replies_received(self, phase: str, replies: Sequence[Message]) -> None:
        self._count += 1
        name = re.sub(r"[^A-Za-z0-9.-]+", "_", phase)
        path = self.folder / f"{self._count:05d}-{name}.bin"
        with path.open("wb") as out:
            for reply in replies:
                content = reply.content if reply.has_content() else RecordDict()
                data = serde.recorddict_to_proto(content).SerializeToString()
                out.write(f"{reply.metadata.src_node_id}:".encode() + data + _SEPARATOR)


def read_transcript(folder: str | Path) -> Iterator[tuple[str, int, RecordDict, bytes]]:
    """(phase file, source node, content, raw bytes) for every reply in a transcript."""
    for path in sorted(Path(folder).glob("*.bin")):
        for chunk in path.read_bytes().split(_SEPARATOR):
            if not chunk:
                continue
            node, _, data = chunk.partition(b":")
            proto = ProtoRecordDict()
            proto.ParseFromString(data)
            yield path.stem, int(node), serde.recorddict_from_proto(proto), data

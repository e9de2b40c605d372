"""Sending one phase's messages and collecting the replies, reporting progress as they come.

Flower's ``Grid.send_and_receive`` blocks until every reply or the timeout, silently; a
phase over hundreds of devices then shows nothing for minutes. This pushes, then pulls
until every message is answered or the timeout passes (as ``send_and_receive`` does),
telling the run's observers how many replies are in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from flwr.app import Message
from flwr.serverapp import Grid

from server.observers import RunObserver

__all__ = ["exchange"]

_PULL_INTERVAL = 0.1  # seconds between pulls, as Flower's own grids


def exchange(
    grid: Grid,
    messages: Sequence[Message],
    *,
    timeout: float,
    phase: str,
    observers: Sequence[RunObserver] = (),
) -> list[Message]:
    """Push ``messages``, pull their replies until all are in or ``timeout`` passes.

    Each observer hears ``phase_started(phase, len(messages))`` and then
    ``phase_advanced(n)`` whenever more replies have arrived.
    """
    for observer in observers:
        observer.phase_started(phase, len(messages))
    if not messages:
        return []
    pending = set(grid.push_messages(messages))
    expected = len(pending)
    replies: list[Message] = []
    deadline = time.monotonic() + timeout
    while pending and len(replies) < expected:
        arrived = list(grid.pull_messages(pending))
        if arrived:
            replies.extend(arrived)
            pending.difference_update(reply.metadata.reply_to_message_id for reply in arrived)
            for observer in observers:
                observer.phase_advanced(len(replies))
        if time.monotonic() >= deadline:
            break
        if not arrived:
            time.sleep(_PULL_INTERVAL)
    for observer in observers:
        observer.replies_received(phase, replies)
    return replies

"""Every device's current decision per purpose, in memory, kept in step with the log.

Eligibility asks about thousands of devices at once. Answered by the database, 10,000
keys cost 45-90 ms (an index probe per key, plus the statement's parameters); answered
from a dictionary they cost about a millisecond. The index is a cache of the
``consent_states`` table, never a second source of truth:

- Each answer first reads the log's size (one indexed row). When the log has grown
  since the last answer, the states of the devices with an entry in the new range are
  read again from ``consent_states``; that row is the device's latest state, newer
  than the range if the device has decided again since. A withdrawal acknowledged by
  any worker process is therefore seen by every process's next answer: the ledger
  acknowledges only after the transaction that wrote the state and moved the head has
  committed.
- A log that no longer holds what the index has seen (smaller, or with another root
  at the size the index reflects: a restored backup, a rolled-back copy grown again)
  is read again whole.
- Expiry is judged at answer time, on the service's clock.

Memory: about 150 bytes per (device, purpose) state, 15 MB per 100,000, in each worker.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from sqlalchemy import Connection

from consent import queries

__all__ = ["StateIndex", "is_active"]


def is_active(action: str, expires_epoch: float | None, now: float) -> bool:
    """A state lets its device take part: a grant that has not expired."""
    return action == "grant" and (expires_epoch is None or expires_epoch > now)


class StateIndex:
    """``purpose -> device key -> (action, expires_epoch)``, synced from the database."""

    def __init__(self) -> None:
        self._states: dict[str, dict[str, tuple[str, float | None]]] = {}
        self._size = -1  # the log size the index reflects; -1: never loaded
        self._root: bytes | None = None  # the root the log signed at that size
        self._lock = threading.Lock()

    def sync(self, connection: Connection) -> None:
        """Bring the index up to the log's current head."""
        with self._lock:  # the head read inside: a slower thread never moves it back
            size = queries.head(connection)
            same_log = 0 <= self._size <= size and (
                queries.root_at(connection, self._size) == self._root
            )
            if same_log and size == self._size:
                return
            if same_log:
                rows = queries.changed_states(connection, self._size, size)
            else:
                rows = queries.read_states(connection)
                self._states = {}
            for key, purpose, action, expires in rows:
                self._states.setdefault(purpose, {})[key] = (action, expires)
            self._size, self._root = size, queries.root_at(connection, size)

    def eligible(self, purpose: str, device_keys: Sequence[str], *, now: float) -> list[str]:
        """The keys whose state for ``purpose`` is active at ``now``, in input order."""
        with self._lock:
            states = self._states.get(purpose, {})
            found = [(key, states.get(key)) for key in device_keys]
        return [key for key, state in found if state is not None and is_active(*state, now)]

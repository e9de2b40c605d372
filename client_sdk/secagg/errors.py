"""What can go wrong in a secure-aggregation round, one class per outcome."""

from __future__ import annotations

from client_sdk.errors import SDKError

__all__ = [
    "MessageError",
    "ReplyRejected",
    "RoundAborted",
    "RoundRefused",
    "SecAggError",
    "StageError",
]


class SecAggError(SDKError):
    """Base class of every secure-aggregation error."""


class MessageError(SecAggError, ValueError):
    """A message, a record or the round's parameters are malformed (a field, type or size)."""


class RoundRefused(SecAggError):
    """The device refuses the round: a bad signature, a duplicate key, a neighbour set
    that is not the graph's, a request that breaks the protocol.

    The session is finished: every later call raises this again and it sends nothing more.
    """


class RoundAborted(SecAggError):
    """The server ends the round without a sum (too few survivors, too few shares)."""


class ReplyRejected(SecAggError):
    """The server ignores one device's reply (malformed, unexpected, badly signed).

    The server session is unchanged; the device counts as having dropped out.
    """


class StageError(SecAggError, RuntimeError):
    """A server-session method was called out of order (a bug in the caller)."""

"""What the consent ledger refuses, or cannot do, as domain exceptions.

The ledger raises these and knows nothing of HTTP; :mod:`consent.api.errors` is the
one place that maps each class to a status code. Every message says what was wrong
and, where the caller can act, what to do instead.
"""

from __future__ import annotations

from pydantic import ValidationError

__all__ = [
    "ClockSkewError",
    "ConflictError",
    "InvalidInputError",
    "KeyFileError",
    "LedgerError",
    "LogIntegrityError",
    "MalformedInputError",
    "OutOfRangeError",
    "ReplayedNonceError",
    "SignatureError",
    "StaleStatementError",
    "StorageUnavailableError",
    "UnknownPolicyError",
    "UnknownPurposeError",
    "validation_message",
]


class LedgerError(Exception):
    """Base class of everything the ledger refuses or cannot do; ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedInputError(LedgerError):
    """The input is not the JSON the protocol needs (not JSON, duplicate keys, not an object)."""


class InvalidInputError(LedgerError):
    """Well-formed JSON that breaks the protocol's rules (a field, a time, a limit)."""


class UnknownPurposeError(InvalidInputError):
    """A purpose the service is not configured with."""


class UnknownPolicyError(InvalidInputError):
    """A policy version the service has no receipt fields for."""


class ClockSkewError(InvalidInputError):
    """A statement issued too far from the service's clock."""


class SignatureError(InvalidInputError):
    """The device key did not sign this statement."""


class ConflictError(LedgerError):
    """A valid record that contradicts what the log already holds."""


class ReplayedNonceError(ConflictError):
    """The device already used this nonce: a replay."""


class StaleStatementError(ConflictError):
    """The log already holds a later statement of this device for this purpose."""


class OutOfRangeError(LedgerError):
    """A log position, size or page outside the log as it is now."""


class StorageUnavailableError(LedgerError):
    """The database did not store or answer; retrying later may work."""


class LogIntegrityError(LedgerError):
    """The stored log is damaged (a gap): an operator must run the audit."""


class KeyFileError(LedgerError):
    """The log's signing key file is unusable."""


def validation_message(error: ValidationError) -> str:
    """One readable sentence per pydantic error: where, then what."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "the record"
        text = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            text = "is not a field of the protocol"
        parts.append(f"{where}: {text}")
    return "; ".join(parts)

"""Why a witness refuses to cosign, as domain exceptions (``consent.witness.app`` maps them).

One class per answer C2SP tlog-witness prescribes, so the HTTP status is decided in one
place and the domain knows nothing of HTTP.
"""

from __future__ import annotations

__all__ = [
    "ConflictingSizeError",
    "InconsistentCheckpointError",
    "MalformedRequestError",
    "UnknownLogError",
    "UntrustedCheckpointError",
    "WitnessError",
]


class WitnessError(Exception):
    """Base class of every refusal; ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedRequestError(WitnessError):
    """The body is not an add-checkpoint request, or its old size exceeds the checkpoint's."""


class UnknownLogError(WitnessError):
    """The checkpoint's origin is not a log this witness is configured for."""


class UntrustedCheckpointError(WitnessError):
    """No trusted key of the log signed the checkpoint, or one of its signatures is bad."""


class ConflictingSizeError(WitnessError):
    """The old size is not the size this witness last cosigned (``size``) for the log."""

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


class InconsistentCheckpointError(WitnessError):
    """The checkpoint is not consistent with what the witness cosigned before."""

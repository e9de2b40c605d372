"""Why a run stops or never starts."""

from __future__ import annotations

from typing import Literal

__all__ = ["ConfigurationError", "RunStatus", "RunStopped"]

RunStatus = Literal["running", "completed", "stopped", "failed"]


class ConfigurationError(RuntimeError):
    """The server is not set up to run safely (e.g. no consent service): nothing ran."""


class RunStopped(Exception):
    """A run ends on purpose before its planned rounds (budget, no eligible devices) or
    completes; ``status`` and ``reason`` are recorded with it."""

    def __init__(self, status: RunStatus, reason: str) -> None:
        super().__init__(reason)
        self.status: RunStatus = status
        self.reason = reason

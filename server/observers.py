"""Hooks around a run's phases: progress displays, simulated withdrawals, tests.

An observer overrides the hooks it needs; the others do nothing. Hooks see only what
the server may know, and run on the ServerApp's thread, so they must be quick.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.app import Message

    from server.analytics import AnalyticsReport
    from server.training import RoundReport

__all__ = ["RunObserver"]


class RunObserver:
    """No-op hooks; subclass and override what you need."""

    def phase_started(self, name: str, total: int | None) -> None:
        """A phase began: ``"attestation"``, ``"round 3"``, ``"analytics 2026-03-02"``;
        ``total`` is how many replies it waits for, if known."""

    def phase_advanced(self, done: int) -> None:
        """``done`` replies of the current phase have arrived."""

    def before_round(self, round_number: int) -> None:
        """A training round is about to ask who is eligible."""

    def after_round(self, report: RoundReport) -> None:
        """A training round was published."""

    def after_analytics(self, report: AnalyticsReport) -> None:
        """An analytics week was published."""

    def replies_received(self, phase: str, replies: Sequence[Message]) -> None:
        """Every reply of a phase, as the server received it (for a transcript)."""

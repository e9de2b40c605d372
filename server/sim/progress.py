"""Progress on the console for every phase of ``moodfed train`` and ``moodfed demo``.

Consent decisions, attestation, each round's replies and each analytics week can take
minutes on a busy machine; each gets a bar (rich), so the screen never sits still.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from server.analytics import AnalyticsReport
from server.observers import RunObserver
from server.training import RoundReport

__all__ = ["RunProgress"]


class RunProgress(RunObserver):
    """Bars for the current phase (replies in), the rounds and the analytics weeks."""

    def __init__(self, console: Console, *, rounds: int, weeks: int = 0) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._rounds = rounds
        self._weeks = weeks
        self._phase: TaskID | None = None
        self._round_task: TaskID | None = None
        self._week_task: TaskID | None = None

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def counter(self, description: str, total: int) -> Callable[[int], None]:
        """A bar of its own (e.g. consent decisions); call the result with how many are done."""
        task = self.progress.add_task(description, total=total)

        def advance(done: int) -> None:
            self.progress.update(task, completed=done)

        return advance

    def phase_started(self, name: str, total: int | None) -> None:
        if self._phase is not None:
            self.progress.remove_task(self._phase)
        label = f"  {name}: replies" if name.startswith(("round", "analytics")) else name
        self._phase = self.progress.add_task(label, total=total)

    def phase_advanced(self, done: int) -> None:
        if self._phase is not None:
            self.progress.update(self._phase, completed=done)

    def before_round(self, round_number: int) -> None:
        if self._round_task is None:
            self._round_task = self.progress.add_task("training rounds", total=self._rounds)
        self.progress.update(self._round_task, description=f"training round {round_number}")

    def after_round(self, report: RoundReport) -> None:
        mae = "n/a" if report.holdout_mae is None else f"{report.holdout_mae:.3f}"
        if self._round_task is not None:
            self.progress.update(
                self._round_task,
                advance=1,
                description=f"training round {report.round}: ε={report.epsilon:.3f} MAE={mae}",
            )

    def after_analytics(self, report: AnalyticsReport) -> None:
        if self._week_task is None:
            self._week_task = self.progress.add_task("analytics weeks", total=self._weeks)
        self.progress.update(
            self._week_task,
            advance=1,
            description=f"analytics week of {report.period}: ε={report.epsilon_after:.3f}",
        )

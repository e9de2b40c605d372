"""What an import found: the good entries, and every bad row with its line and reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from client_sdk.entry import Entry

__all__ = ["ImportReport", "RowError"]


@dataclass(frozen=True, slots=True)
class RowError:
    """One row (or sample) that could not be imported.

    ``line`` is the 1-based line in the source file where the row starts; ``index`` is
    the 0-based position among the data rows (the CSV rows after the header, or the
    elements of the JSON array).
    """

    line: int
    index: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ImportReport:
    """The outcome of parsing one export: good rows are kept, bad rows are explained.

    ``entries`` are sorted by time. ``logged`` and ``skipped_duplicates`` are filled in
    by ``Diary.import_daylio`` / ``Diary.import_state_of_mind`` (0 when only parsed).
    """

    source: str
    rows: int
    entries: list[Entry]
    errors: list[RowError]
    warnings: list[str] = field(default_factory=list)
    logged: int = 0
    skipped_duplicates: int = 0

    @property
    def imported(self) -> int:
        """How many rows became entries."""
        return len(self.entries)

    @property
    def failed(self) -> int:
        """How many rows were rejected (each is in ``errors``)."""
        return len(self.errors)

    def summary(self) -> str:
        """One line for a log or a UI toast."""
        text = f"{self.source}: {self.rows} rows, {self.imported} imported, {self.failed} failed"
        if self.skipped_duplicates:
            text += f", {self.skipped_duplicates} already in the diary"
        return text

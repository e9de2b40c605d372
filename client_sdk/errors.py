"""Exceptions raised by the client SDK: one base class, one subclass per thing that can go wrong."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "DiaryClosedError",
    "DiaryCorruptError",
    "DiaryError",
    "DiaryImportError",
    "EntryNotFoundError",
    "InvalidArgumentError",
    "InvalidEntryError",
    "KeyFileError",
    "PassphraseRequiredError",
    "SDKError",
    "WrongPassphraseError",
]


class SDKError(Exception):
    """Base class of every exception the SDK raises on purpose.

    An app can catch this one class around any SDK call; anything else escaping the SDK
    is a bug.
    """


class KeyFileError(SDKError):
    """A key file is missing, malformed, of the wrong kind, or cannot be written."""


class WrongPassphraseError(KeyFileError):
    """The passphrase does not open this sealed key file (or the file was altered)."""


class PassphraseRequiredError(KeyFileError):
    """The key file is sealed with a passphrase and none was given."""


class InvalidArgumentError(SDKError, ValueError):
    """An argument has a value the SDK cannot use (the message says which and why)."""


class InvalidEntryError(InvalidArgumentError):
    """A diary entry failed validation; ``field`` names the first offending field.

    ``fields`` lists every offending field, in the order pydantic reported them.
    """

    def __init__(self, message: str, *, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.fields: tuple[str, ...] = tuple(fields)

    @property
    def field(self) -> str | None:
        """The first offending field, or None when the entry as a whole is wrong."""
        return self.fields[0] if self.fields else None


class DiaryError(SDKError):
    """Something is wrong with a diary as a whole (not with one entry)."""


class DiaryClosedError(DiaryError):
    """The diary was closed or erased; open it again (or create a new one) to use it."""


class DiaryCorruptError(DiaryError):
    """The diary file cannot be read with its key: it was altered or is not a moodfed diary."""


class EntryNotFoundError(SDKError, KeyError):
    """No entry with this id is in the diary."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "entry not found"


class DiaryImportError(SDKError):
    """A whole import failed (not a Daylio / State of Mind file, undecodable, unreadable).

    Nothing is imported when this is raised. Bad rows in an otherwise good file are not
    raised but reported in the ``ImportReport``.
    """

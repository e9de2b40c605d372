"""Reading an export (a path, its bytes, or its text) into text; each failure a DiaryImportError.

A ``str`` or ``os.PathLike`` names a file, as for ``open()`` and pandas; ``bytes`` are the
file's bytes; the export's decoded content comes through the importers' ``text=``
keyword only, so a file name can never be parsed as content nor content opened as a file.
"""

from __future__ import annotations

import codecs
import os
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from client_sdk.errors import DiaryImportError, InvalidArgumentError

#: What an importer's first argument may be: a file name or path, or the file's bytes.
Source = str | os.PathLike[str] | bytes | bytearray | memoryview

_SHOWN_PATH = 120


def read_source(source: Source | None, *, text: str | None, what: str, call: str) -> str:
    """Return the export's text from exactly one of ``source`` (path or bytes) and ``text``.

    ``call`` names the public function (e.g. ``"import_daylio"``) for the error messages.
    UTF-8 (with or without BOM) and UTF-16 with a BOM are accepted; anything else
    undecodable is fatal.
    """
    if source is None and text is None:
        raise InvalidArgumentError(
            f"{call}() needs a file (a path or the file's bytes) or text=..., got neither"
        )
    if source is not None and text is not None:
        raise InvalidArgumentError(
            f"{call}() takes a file (a path or the file's bytes) or text=..., not both"
        )
    if text is not None:
        if not isinstance(text, str):
            raise DiaryImportError(
                f"{call}(text=...) takes the {what} export's content as a str, "
                f"not {type(text).__name__}; pass a path or bytes as the first argument"
            )
        return text.removeprefix("\ufeff")
    if isinstance(source, str | os.PathLike):
        data = _read_file(source, what=what, call=call)
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        raise DiaryImportError(
            f"{call}() reads a file named by a str or os.PathLike, or the file's bytes, "
            f"not {type(source).__name__}; pass the content itself as text=..."
        )
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DiaryImportError(
            f"the {what} file is not UTF-8 text (undecodable byte at offset {exc.start})"
        ) from exc


def _read_file(source: str | os.PathLike[str], *, what: str, call: str) -> bytes:
    """The bytes of the file ``source`` names; any failure names the path."""
    try:
        name = os.fspath(source)
    except TypeError as exc:  # an os.PathLike whose __fspath__ returns something else
        raise DiaryImportError(
            f"{call}() got a path-like object that is not a path: {exc}"
        ) from exc
    if not isinstance(name, str):
        raise DiaryImportError(f"{call}() reads a str path, not {type(name).__name__}")
    shown = _shown(name)
    hint = ""
    if "\n" in name or "\r" in name or "," in name or "[" in name:
        hint = f"; this looks like the export's content, not a file name: use {call}(text=...)"
    try:
        path = Path(name)
        if path.is_dir():
            raise DiaryImportError(f"{shown} is a directory, not a {what} file")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DiaryImportError(f"no {what} file at {shown}{hint}") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL character in the name
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DiaryImportError(f"cannot read the {what} file {shown}: {reason}{hint}") from exc


def _shown(name: str) -> str:
    """The path for a message: quoted, and cut short when it is long (content by mistake)."""
    if len(name) <= _SHOWN_PATH:
        return repr(name)
    return f"{name[:_SHOWN_PATH]!r}... ({len(name)} characters)"


def resolve_tz(tz: tzinfo | str) -> tzinfo:
    """Accept a tzinfo or an IANA name such as "Europe/Berlin"."""
    if isinstance(tz, tzinfo):
        return tz
    if isinstance(tz, str):
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidArgumentError(f"unknown time zone {tz!r}") from exc
    raise InvalidArgumentError(f"tz must be a tzinfo or an IANA zone name, not {tz!r}")


def line_of(text: str, offset: int) -> int:
    """1-based line number of a character offset."""
    return text.count("\n", 0, offset) + 1

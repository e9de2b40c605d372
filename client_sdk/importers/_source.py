"""Reading an export (a path, bytes or text) into text, with every failure a DiaryImportError."""

from __future__ import annotations

import codecs
import os
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from client_sdk.errors import DiaryImportError, InvalidArgumentError

Source = str | bytes | os.PathLike[str]


def read_text(source: Source, *, what: str) -> str:
    """Return the export's text; a ``str`` is the content itself, never a file name.

    UTF-8 (with or without BOM) and UTF-16 with a BOM are accepted; anything else
    undecodable is fatal.
    """
    if isinstance(source, str):
        return source.removeprefix("\ufeff")
    if isinstance(source, os.PathLike):
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise DiaryImportError(f"cannot read the {what} file {source}: {exc}") from exc
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        raise DiaryImportError(
            f"a {what} source is a pathlib.Path, bytes or text, not {type(source).__name__}"
        )
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DiaryImportError(
            f"the {what} file is not UTF-8 text (undecodable byte at offset {exc.start})"
        ) from exc


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

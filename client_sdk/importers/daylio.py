"""Daylio CSV export -> diary entries, tolerant of every export variant Daylio has shipped.

Handled: the current header ``full_date,date,weekday,time,mood,activities,note_title,note``
and the older ``year,date,weekday,time,mood,activities,note`` (whose ``date`` is like
"Nov 22"), an optional ``scales`` column anywhere, 12-hour ("9:05 pm") and 24-hour
("21:05") times, activities joined by " | ", HTML notes, newest-first rows, a UTF-8 BOM,
and renamed or custom moods through ``mood_map``. Daylio writes local wall-clock times
without a zone; ``tz`` says which zone they were in.

>>> text = "full_date,date,weekday,time,mood,activities,note_title,note\\n"
>>> text += '2026-11-22,November 22,Sunday,9:05 pm,rad,friends | music,,"Great <b>day</b>"\\n'
>>> report = import_daylio(text=text)
>>> e = report.entries[0]
>>> e.time.isoformat(), e.mood, e.activities, e.note
('2026-11-22T21:05:00+00:00', 5, ['friends', 'music'], 'Great day')
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, tzinfo
from html.parser import HTMLParser
from typing import Final, overload

from client_sdk.entry import Entry
from client_sdk.errors import DiaryImportError, InvalidArgumentError
from client_sdk.importers._source import Source, read_source, resolve_tz
from client_sdk.importers.report import ImportReport, RowError

__all__ = ["DEFAULT_MOOD_MAP", "import_daylio", "parse_daylio_text"]

DEFAULT_MOOD_MAP: Final[Mapping[str, int]] = {"rad": 5, "good": 4, "meh": 3, "bad": 2, "awful": 1}

CURRENT_COLUMNS: Final = (
    "full_date",
    "date",
    "weekday",
    "time",
    "mood",
    "activities",
    "note_title",
    "note",
)
LEGACY_COLUMNS: Final = ("year", "date", "weekday", "time", "mood", "activities", "note")
OPTIONAL_COLUMNS: Final = frozenset({"scales"})

_MONTHS: Final = {
    name: number
    for number, full in enumerate(
        (
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ),
        start=1,
    )
    for name in (full, full[:3])
} | {"sept": 9}
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_MONTH_DAY = re.compile(r"([a-z]+)\.?\s+(\d{1,2})(?:st|nd|rd|th)?", re.ASCII | re.IGNORECASE)
_DAY_MONTH = re.compile(r"(\d{1,2})(?:st|nd|rd|th)?\.?\s+([a-z]+)\.?", re.ASCII | re.IGNORECASE)
_YEAR = re.compile(r"\d{4}", re.ASCII)
_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?(am|pm)?", re.ASCII)


@overload
def import_daylio(
    source: Source,
    *,
    tz: tzinfo | str = ...,
    mood_map: Mapping[str, int] | None = ...,
) -> ImportReport: ...


@overload
def import_daylio(
    *,
    text: str,
    tz: tzinfo | str = ...,
    mood_map: Mapping[str, int] | None = ...,
) -> ImportReport: ...


def import_daylio(
    source: Source | None = None,
    *,
    text: str | None = None,
    tz: tzinfo | str = UTC,
    mood_map: Mapping[str, int] | None = None,
) -> ImportReport:
    """Parse a Daylio CSV export; bad rows are reported, a non-Daylio file raises.

    ``source`` names the file (a ``str`` or ``os.PathLike``, as for ``open()``) or holds
    its ``bytes``; CSV text already in memory is passed as ``text=`` instead. ``mood_map``
    adds to or overrides the default moods (rad=5, good=4, meh=3, bad=2, awful=1),
    case-insensitively. Raises ``DiaryImportError`` when the file cannot be read or is
    not a Daylio export at all.
    """
    return _import_daylio(source, text=text, tz=tz, mood_map=mood_map)


def _import_daylio(
    source: Source | None,
    *,
    text: str | None,
    tz: tzinfo | str,
    mood_map: Mapping[str, int] | None,
) -> ImportReport:
    """``import_daylio`` without the overloads, for callers that forward both arguments."""
    zone = resolve_tz(tz)
    moods = _mood_table(mood_map)
    content = read_source(source, text=text, what="Daylio", call="import_daylio")
    return parse_daylio_text(content, tz=zone, moods=moods)


def parse_daylio_text(text: str, *, tz: tzinfo, moods: Mapping[str, int]) -> ImportReport:
    """Parse decoded Daylio CSV text (``moods`` as built by ``import_daylio``)."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header: list[str] | None = None
    columns: tuple[str, ...] = ()
    warnings: list[str] = []
    parsed: list[Entry] = []
    errors: list[RowError] = []
    rows = 0
    previous_line = 0
    try:
        for row in reader:
            line, previous_line = previous_line + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in row]
                columns = _check_header(header, text, warnings)
                continue
            index, rows = rows, rows + 1
            if len(row) != len(header):
                reason = f"expected {len(header)} fields, found {len(row)}"
                errors.append(RowError(line=line, index=index, reason=reason))
                continue
            values = dict(zip(header, row, strict=True))
            try:
                parsed.append(_parse_row(values, columns=columns, tz=tz, moods=moods))
            except (ValueError, OverflowError) as exc:
                reason = str(exc) or type(exc).__name__
                errors.append(RowError(line=line, index=index, reason=reason))
    except csv.Error as exc:
        raise DiaryImportError(f"not a readable CSV file (line {reader.line_num}): {exc}") from exc
    if header is None:
        raise DiaryImportError("the Daylio file is empty (no header row)")
    parsed.sort(key=lambda entry: entry.time)
    return ImportReport(
        source="daylio", rows=rows, entries=parsed, errors=errors, warnings=warnings
    )


def _mood_table(mood_map: Mapping[str, int] | None) -> dict[str, int]:
    table = dict(DEFAULT_MOOD_MAP)
    if mood_map is None:
        return table
    if not isinstance(mood_map, Mapping):
        raise InvalidArgumentError("mood_map must be a mapping of mood name -> 1..5")
    for name, level in mood_map.items():
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgumentError(f"mood_map key {name!r} is not a mood name")
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 5:
            raise InvalidArgumentError(f"mood_map[{name!r}] must be an integer 1..5")
        table[_mood_key(name)] = level
    return table


def _mood_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _check_header(header: list[str], text: str, warnings: list[str]) -> tuple[str, ...]:
    present = set(header)
    if len(present) != len(header):
        raise DiaryImportError("not a Daylio export: the header repeats a column")
    for variant in (CURRENT_COLUMNS, LEGACY_COLUMNS):
        if present.issuperset(variant):
            extra = [
                name for name in header if name not in variant and name not in OPTIONAL_COLUMNS
            ]
            if extra:
                warnings.append(f"ignored unknown column(s): {', '.join(extra)}")
            return variant
    hint = ""
    if "\n" not in text.strip() and "," not in text:
        hint = " (a file name? pass the path itself as the first argument, not as text=)"
    expected = ",".join(CURRENT_COLUMNS)
    raise DiaryImportError(
        f"not a Daylio export: unknown header {','.join(header)[:200]!r}; "
        f"expected {expected!r} or the older {','.join(LEGACY_COLUMNS)!r}{hint}"
    )


def _parse_row(
    values: Mapping[str, str],
    *,
    columns: tuple[str, ...],
    tz: tzinfo,
    moods: Mapping[str, int],
) -> Entry:
    if "full_date" in columns:
        day = _iso_date(values["full_date"])
        note = _join_note(_html_to_text(values["note_title"]), _html_to_text(values["note"]))
    else:
        day = _legacy_date(values["year"], values["date"])
        note = _html_to_text(values["note"])
    when = datetime.combine(day, _clock(values["time"]), tzinfo=tz)
    return Entry(
        time=when,
        mood=_mood(values["mood"], moods),
        activities=[part.strip() for part in values["activities"].split("|") if part.strip()],
        note=note,
    )


def _iso_date(value: str) -> date:
    match = _ISO_DATE.fullmatch(value.strip())
    if not match:
        raise ValueError(f"full_date: {value!r} is not a YYYY-MM-DD date")
    try:
        return date(*(int(part) for part in match.groups()))
    except ValueError as exc:
        raise ValueError(f"full_date: {value!r} is not a real date ({exc})") from None


def _legacy_date(year: str, value: str) -> date:
    if not _YEAR.fullmatch(year.strip()):
        raise ValueError(f"year: {year!r} is not a four-digit year")
    text = " ".join(value.split())
    if match := _MONTH_DAY.fullmatch(text):
        month_name, day_text = match.groups()
    elif match := _DAY_MONTH.fullmatch(text):
        day_text, month_name = match.groups()
    else:
        raise ValueError(f"date: {value!r} is not like 'Nov 22'")
    month = _MONTHS.get(month_name.lower())
    if month is None:
        raise ValueError(f"date: unknown month {month_name!r} in {value!r}")
    try:
        return date(int(year), month, int(day_text))
    except ValueError as exc:
        raise ValueError(f"date: {value!r} {year} is not a real date ({exc})") from None


def _clock(value: str) -> time:
    compact = "".join(value.split()).lower().replace(".", "")
    match = _TIME.fullmatch(compact)
    if not match:
        raise ValueError(f"time: {value!r} is not a time like '21:05' or '9:05 pm'")
    hour, minute = int(match[1]), int(match[2])
    second = int(match[3]) if match[3] else 0
    if match[4]:
        if not 1 <= hour <= 12:
            raise ValueError(f"time: {value!r} has hour {hour} on a 12-hour clock")
        hour = hour % 12 + (12 if match[4] == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"time: {value!r} is not a valid time of day")
    return time(hour, minute, second)


def _mood(value: str, moods: Mapping[str, int]) -> int:
    key = _mood_key(value)
    if key in moods:
        return moods[key]
    if key in {"1", "2", "3", "4", "5"}:
        return int(key)
    known = ", ".join(sorted(moods, key=lambda name: (-moods[name], name)))
    raise ValueError(f"mood: unknown mood {value!r} (known: {known}; pass mood_map to add it)")


def _join_note(title: str, body: str) -> str:
    return "\n".join(part for part in (title, body) if part)


class _TextExtractor(HTMLParser):
    """Collects an HTML fragment's text: tags dropped, entities decoded, <br> as newline."""

    _BLOCKS: Final = frozenset(
        {"p", "div", "li", "ul", "ol", "blockquote", "tr", "h1", "h2", "h3", "h4", "h5", "h6"}
    )
    _SKIP: Final = frozenset({"script", "style"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag == "br" or tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


_TAG = re.compile(r"<[^>]*>")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def _html_to_text(value: str) -> str:
    if "<" not in value and "&" not in value:
        return value.strip()
    extractor = _TextExtractor()
    try:
        extractor.feed(value)
        extractor.close()
        text = "".join(extractor.parts)
    except (AssertionError, ValueError):  # _markupbase asserts on odd "<![" sections
        text = html.unescape(_TAG.sub("", value))
    text = "\n".join(line.rstrip() for line in text.replace("\xa0", " ").split("\n"))
    return _MANY_NEWLINES.sub("\n\n", text).strip()

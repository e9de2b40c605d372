"""Apple Health State of Mind samples (a JSON array) -> diary entries.

Each sample is an object with ``startDate`` (ISO 8601), optional ``endDate``,
``valence`` (-1..1) and/or ``valenceClassification`` (an ``HKStateOfMind``
``ValenceClassification`` name such as "slightlyPleasant", or its raw value 1..7),
``labels`` (emotions, e.g. "happy"), ``associations`` (life areas, e.g. "work"), and
``kind`` ("momentaryEmotion" | "dailyMood", or 1 | 2). Unknown keys are ignored. The 1-5
mood is derived from the valence (or, without one, from the classification), and the
entry keeps the sample's own valence. ``kind`` is validated but not stored: an ``Entry``
has no such field.

>>> text = ('[{"startDate": "2026-11-22T08:00:00Z", "valence": 0.6,'
...         ' "labels": ["happy"], "associations": ["family"]}]')
>>> report = import_state_of_mind(text=text)
>>> e = report.entries[0]
>>> e.mood, e.valence, e.emotions, e.activities
(4, 0.6, ['happy'], ['family'])
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, overload

from client_sdk.entry import Entry, valence_to_mood
from client_sdk.errors import DiaryImportError
from client_sdk.importers._source import Source, line_of, read_source, resolve_tz
from client_sdk.importers.report import ImportReport, RowError

__all__ = ["VALENCE_CLASSIFICATIONS", "import_state_of_mind", "parse_state_of_mind_text"]

#: HKStateOfMind.ValenceClassification raw values, by (lower-cased) case name.
VALENCE_CLASSIFICATIONS: Final = {
    "veryunpleasant": 1,
    "unpleasant": 2,
    "slightlyunpleasant": 3,
    "neutral": 4,
    "slightlypleasant": 5,
    "pleasant": 6,
    "verypleasant": 7,
}
_KINDS: Final = {"momentaryemotion": 1, "dailymood": 2}
_WHITESPACE = re.compile(r"[ \t\n\r]*")


@overload
def import_state_of_mind(source: Source, *, tz: tzinfo | str = ...) -> ImportReport: ...


@overload
def import_state_of_mind(*, text: str, tz: tzinfo | str = ...) -> ImportReport: ...


def import_state_of_mind(
    source: Source | None = None, *, text: str | None = None, tz: tzinfo | str = UTC
) -> ImportReport:
    """Parse a JSON array of State of Mind samples; bad samples are reported by index.

    ``source`` names the file (a ``str`` or ``os.PathLike``, as for ``open()``) or holds
    its ``bytes``; JSON text already in memory is passed as ``text=`` instead. Dates
    without an offset are taken to be in ``tz``. Raises ``DiaryImportError`` (importing
    nothing) when the file cannot be read, or its text is not JSON or not an array.
    """
    return _import_state_of_mind(source, text=text, tz=tz)


def _import_state_of_mind(
    source: Source | None, *, text: str | None, tz: tzinfo | str
) -> ImportReport:
    """``import_state_of_mind`` without the overloads, for callers that forward both."""
    zone = resolve_tz(tz)
    content = read_source(source, text=text, what="State of Mind", call="import_state_of_mind")
    return parse_state_of_mind_text(content, tz=zone)


def parse_state_of_mind_text(text: str, *, tz: tzinfo) -> ImportReport:
    """Parse decoded State of Mind JSON text."""
    text = text.removeprefix("\ufeff")
    entries: list[Entry] = []
    errors: list[RowError] = []
    rows = 0
    for index, (offset, sample) in enumerate(_array_elements(text)):
        rows += 1
        try:
            entries.append(_parse_sample(sample, tz=tz))
        except (ValueError, OverflowError) as exc:
            reason = f"sample {index}: {exc}"
            errors.append(RowError(line=line_of(text, offset), index=index, reason=reason))
    entries.sort(key=lambda entry: entry.time)
    return ImportReport(source="state_of_mind", rows=rows, entries=entries, errors=errors)


def _array_elements(text: str) -> Iterator[tuple[int, Any]]:
    """Yield (offset, value) for each element of a top-level JSON array.

    Decoding element by element gives each sample's line number for the report; any
    syntax error is fatal (raised before the caller returns, so nothing is imported).
    """
    decoder = json.JSONDecoder()

    def skip(pos: int) -> int:
        match = _WHITESPACE.match(text, pos)
        return match.end() if match else pos

    def fatal(message: str, pos: int) -> DiaryImportError:
        return DiaryImportError(f"not State of Mind JSON: {message} (line {line_of(text, pos)})")

    pos = skip(0)
    if pos == len(text):
        raise DiaryImportError("the State of Mind file is empty")
    if text[pos] != "[":
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise DiaryImportError(f"not JSON: {exc}") from exc
        raise DiaryImportError(
            f"expected a JSON array of State of Mind samples, got {_json_type(value)}"
        )
    pos = skip(pos + 1)
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            start = pos
            try:
                value, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise DiaryImportError(f"not JSON: {exc}") from exc
            except RecursionError as exc:
                raise fatal("nested too deeply", start) from exc
            yield start, value
            pos = skip(pos)
            if text.startswith(",", pos):
                pos = skip(pos + 1)
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                raise fatal("expected ',' or ']' after an array element", pos)
    if skip(pos) != len(text):
        raise fatal("extra data after the array", pos)


def _json_type(value: Any) -> str:
    """The JSON type of ``value`` with its article, for messages ("an object")."""
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
    }
    return names.get(type(value), "a number")


def _parse_sample(sample: Any, *, tz: tzinfo) -> Entry:
    if not isinstance(sample, dict):
        raise ValueError(f"expected an object, got {_json_type(sample)}")
    if sample.get("startDate") is None:
        raise ValueError("startDate: missing")
    start = _datetime(sample["startDate"], "startDate", tz=tz)
    end = sample.get("endDate")
    if end is not None and _datetime(end, "endDate", tz=tz) < start:
        raise ValueError("endDate: before startDate")
    _kind(sample.get("kind"))
    valence = _valence(sample.get("valence"))
    classification = _classification(sample.get("valenceClassification"))
    if valence is None:
        if classification is None:
            raise ValueError("needs a valence or a valenceClassification")
        valence = (classification - 4) / 3
    return Entry(
        time=start,
        mood=valence_to_mood(valence),
        valence=valence,
        emotions=_labels(sample, "labels"),
        activities=_labels(sample, "associations"),
    )


def _datetime(value: Any, key: str, *, tz: tzinfo) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected an ISO 8601 string, got {_json_type(value)}")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:  # Health exports also write "2026-11-22 21:05:00 +0100"
            parsed = datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z")
        except ValueError:
            raise ValueError(f"{key}: {value[:64]!r} is not an ISO 8601 date-time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


def _valence(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"valence: expected a number, got {_json_type(value)}")
    number = float(value)
    if not math.isfinite(number) or not -1.0 <= number <= 1.0:
        raise ValueError(f"valence: {value!r} is outside -1..1")
    return number


def _classification(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 7:
        return value
    if isinstance(value, str):
        number = VALENCE_CLASSIFICATIONS.get(value.replace("_", "").replace(" ", "").lower())
        if number is not None:
            return number
    raise ValueError(f"valenceClassification: unknown value {str(value)[:64]!r}")


def _kind(value: Any) -> None:
    if value is None or (
        isinstance(value, int) and not isinstance(value, bool) and value in (1, 2)
    ):
        return
    if isinstance(value, str) and value.lower() in _KINDS:
        return
    raise ValueError(f"kind: unknown value {str(value)[:64]!r} (momentaryEmotion or dailyMood)")


def _labels(sample: dict[str, Any], key: str) -> list[str]:
    value = sample.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{key}: expected a list of strings")
    return value

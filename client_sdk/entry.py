"""The diary entry: one mood check-in, validated at the SDK boundary.

>>> from datetime import datetime, timezone
>>> e = Entry(time=datetime(2026, 11, 22, 21, 5, tzinfo=timezone.utc), mood=4)
>>> e.valence
0.5
>>> Entry(time=e.time, mood=6)
Traceback (most recent call last):
...
client_sdk.errors.InvalidEntryError: invalid entry: mood: Input should be less than or equal to 5
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any, Final

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from client_sdk.errors import InvalidEntryError

__all__ = ["MAX_LABELS", "MAX_LABEL_LENGTH", "Entry", "mood_to_valence", "valence_to_mood"]

MAX_LABELS: Final = 64
MAX_LABEL_LENGTH: Final = 200


def mood_to_valence(mood: int) -> float:
    """Map Daylio's 1-5 mood onto Apple's -1..1 valence: (mood - 3) / 2."""
    return (mood - 3) / 2


def valence_to_mood(valence: float) -> int:
    """Map a -1..1 valence onto the 1-5 mood scale (nearest level, halves round up)."""
    level = math.floor(2.0 * valence + 3.5)
    return min(5, max(1, level))


class Entry(BaseModel):
    """One mood check-in.

    ``time`` must carry a timezone (the entry's local day is ``time.date()``);
    ``mood`` is Daylio's 1 (awful) .. 5 (rad); ``valence`` is Apple State of Mind's
    -1 (very unpleasant) .. 1 (very pleasant) and defaults to ``(mood - 3) / 2``;
    ``emotions`` and ``activities`` are free labels; ``sleep_hours`` is the sleep of the
    night before this entry's day (as Apple Health attributes sleep to the wake day).
    Constructing an invalid entry raises ``InvalidEntryError`` naming the field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    time: AwareDatetime
    mood: int = Field(ge=1, le=5)
    valence: float = Field(ge=-1.0, le=1.0)
    emotions: list[str] = Field(default_factory=list, max_length=MAX_LABELS)
    activities: list[str] = Field(default_factory=list, max_length=MAX_LABELS)
    sleep_hours: float | None = Field(default=None, ge=0.0, le=24.0)
    steps: int | None = Field(default=None, ge=0)
    note: str = ""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _entry_error(exc) from exc

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Entry:
        """Validate a plain mapping (e.g. parsed JSON) into an entry."""
        if not isinstance(data, Mapping):
            raise InvalidEntryError(f"an entry must be a mapping, not {type(data).__name__}")
        return cls(**{str(k): v for k, v in data.items()})

    @model_validator(mode="before")
    @classmethod
    def _derive_valence(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("valence") is None:
            mood = _as_int(data.get("mood"))
            # A bad mood is reported on "mood"; 0.0 only keeps "valence" out of the message.
            valence = mood_to_valence(mood) if mood is not None and 1 <= mood <= 5 else 0.0
            data = {**data, "valence": valence}
        return data

    @field_validator("mood", "steps", mode="before")
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected an integer, not a boolean")
        return value

    @field_validator("emotions", "activities", mode="after")
    @classmethod
    def _clean_labels(cls, labels: list[str]) -> list[str]:
        cleaned = [label.strip() for label in labels]
        if any(not label for label in cleaned):
            raise ValueError("labels must not be empty")
        if any(len(label) > MAX_LABEL_LENGTH for label in cleaned):
            raise ValueError(f"labels must be at most {MAX_LABEL_LENGTH} characters")
        return cleaned


def _as_int(value: Any) -> int | None:
    """The integer pydantic's lax mode would read from ``value``, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _entry_error(exc: ValidationError) -> InvalidEntryError:
    errors = exc.errors(include_url=False, include_input=False)
    fields = [".".join(str(part) for part in err["loc"]) or "entry" for err in errors]
    details = "; ".join(f"{field}: {err['msg']}" for field, err in zip(fields, errors, strict=True))
    return InvalidEntryError(f"invalid entry: {details}", fields=fields)

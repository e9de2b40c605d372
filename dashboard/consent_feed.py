"""Consent counts for the dashboard, from the public consent log, verified before use.

The dashboard reads the log over HTTP like any outside auditor: it opens the latest
checkpoint with the log's verifier key (pinned in ``MOODFED_CONSENT_LOG_KEY``; fetched
from the service itself otherwise, which only proves the service agrees with itself),
fetches every entry up to the checkpoint's size, checks every device signature, and
recomputes the RFC 9162 tree against the signed checkpoint (:mod:`consent.verify`, the
verifier the audit and the devices use). Only then does it count, per purpose and day,
the grants in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd

from consent.note import Checkpoint, NoteError, NoteVerifier
from consent.statement import SignedRecord, parse_time
from consent.verify import (
    CheckpointError,
    VerificationError,
    open_signed_checkpoint,
    verify_entries,
)

__all__ = [
    "ConsentLog",
    "ConsentUnreachableError",
    "ConsentVerificationError",
    "active_grants_by_day",
    "fetch_consent_log",
]

_PAGE = 1000  # the service's largest page of entries


class ConsentUnreachableError(RuntimeError):
    """The consent service did not answer (or answered with an error)."""


class ConsentVerificationError(RuntimeError):
    """The consent log's answers do not verify: its figures must not be shown."""


@dataclass(frozen=True, slots=True)
class ConsentLog:
    """A verified copy of the consent log up to its latest checkpoint."""

    checkpoint: Checkpoint
    records: tuple[SignedRecord, ...]
    key_pinned: bool


def _get(client: httpx.Client, path: str, **params: Any) -> httpx.Response:
    try:
        response = client.get(path, params=params or None)
    except httpx.HTTPError as error:
        raise ConsentUnreachableError(f"{client.base_url}{path}: {error}") from error
    if response.status_code != 200:
        raise ConsentUnreachableError(
            f"{client.base_url}{path} answered {response.status_code}: {response.text[:200]}"
        )
    return response


def fetch_consent_log(
    url: str, *, log_key: str = "", timeout: float = 5.0, max_entries: int = 200_000
) -> ConsentLog:
    """Fetch and verify the whole log up to its latest checkpoint (see the module docstring)."""
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as client:
        key = log_key or _get(client, "/v1/log/key").text.strip()
        try:
            verifier = NoteVerifier(key)
        except NoteError as error:
            raise ConsentVerificationError(f"the checkpoint does not verify: {error}") from error
        try:
            checkpoint = open_signed_checkpoint(_get(client, "/v1/log/checkpoint").text, verifier)
        except CheckpointError as error:
            raise ConsentVerificationError(str(error)) from error
        if checkpoint.size > max_entries:
            raise ConsentVerificationError(
                f"the log has {checkpoint.size} entries, more than the {max_entries} this "
                "dashboard is configured to verify (MOODFED_CONSENT_MAX_ENTRIES)"
            )
        raw: list[Any] = []
        for start in range(0, checkpoint.size, _PAGE):
            end = min(start + _PAGE, checkpoint.size)
            raw.extend(_get(client, "/v1/log/entries", start=start, end=end).json())
    try:
        records = verify_entries(raw, checkpoint)
    except VerificationError as error:
        raise ConsentVerificationError(str(error)) from None
    return ConsentLog(checkpoint, records, key_pinned=bool(log_key))


def active_grants_by_day(
    records: Sequence[SignedRecord], *, until: date | None = None
) -> pd.DataFrame:
    """Columns ``day``, ``purpose``, ``active_grants``: grants in force at the end of each day.

    A device's grant for a purpose is in force from its record until its next record for
    that purpose (a withdrawal or a new grant) or its expiry, whichever is first.
    """
    last_day = until or datetime.now(UTC).date()
    intervals: dict[str, list[tuple[datetime, datetime]]] = {}
    latest: dict[tuple[str, str], tuple[str, datetime, datetime | None]] = {}
    far = datetime.max.replace(tzinfo=UTC)

    def close(key: tuple[str, str], at: datetime) -> None:
        action, since, expires = latest[key]
        if action == "grant":
            end = min(at, expires or far)
            if end > since:
                intervals.setdefault(key[1], []).append((since, end))

    for record in records:
        statement = record.statement
        key = (statement.device_key, statement.purpose)
        issued = parse_time(statement.issued_at)
        if key in latest:
            close(key, issued)
        expires = parse_time(statement.expires_at) if statement.expires_at else None
        latest[key] = (statement.action, issued, expires)
        intervals.setdefault(statement.purpose, [])
    for key in latest:
        close(key, far)
    frames = []
    for purpose, spans in sorted(intervals.items()):
        if not spans:
            continue
        first_day = min(start for start, _ in spans).date()
        days = pd.date_range(first_day, max(first_day, last_day), freq="D")
        ends_of_day = np.array(
            [
                datetime.combine(d.date() + timedelta(days=1), datetime.min.time(), UTC).timestamp()
                for d in days
            ]
        )
        starts = np.sort([start.timestamp() for start, _ in spans])
        stops = np.sort([min(stop, far - timedelta(days=1)).timestamp() for _, stop in spans])
        active = np.searchsorted(starts, ends_of_day, side="right") - np.searchsorted(
            stops, ends_of_day, side="right"
        )
        frames.append(pd.DataFrame({"day": days, "purpose": purpose, "active_grants": active}))
    if not frames:
        return pd.DataFrame(columns=["day", "purpose", "active_grants"])
    return pd.concat(frames, ignore_index=True)

"""The on-device mood diary: a SQLite file whose entries are encrypted at rest.

Layout. ``<name>`` is a SQLite database (WAL mode) with one row per entry:
``(id, day, payload)``. ``payload`` is a ``SecretBox`` (XSalsa20-Poly1305) blob of the
whole entry as JSON (time, mood, valence, labels, sleep, steps, note, and the row's id so
that rows cannot be swapped), padded to a multiple of 256 bytes before encryption so the
blob's size does not give away the note's length. The 32-byte diary key lives in a
separate 0600 key file (``<name>.key`` by default), optionally sealed with a passphrase
by the same code that seals the device key (``client_sdk.keys.write_secret_file``).

What stays in plaintext, and why. ``id`` is a random 128-bit hex string (reveals
nothing); ``day`` is the entry's UTC day (days since 1970-01-01), so that a range read
fetches and decrypts only the days it needs. Someone holding the diary file without
the key therefore learns how many entries were logged on which UTC days (the logging
rhythm and the total), and the padded blob sizes; not the exact times, moods, valences,
labels, notes, sleep or steps. A personal diary is small enough (a few thousand rows)
that decrypting everything on each read would also be fast: if the day pattern is
judged sensitive, drop the column and filter after decryption; the file format has a
version number for that.

Erasure (GDPR Art. 17). ``erase()`` overwrites the database, its -wal/-shm files and the
key file with zeros / random bytes before unlinking them. On flash storage an in-place
overwrite is not guaranteed to reach the old cells; deleting the key is what makes any
surviving copy unreadable (crypto-shredding). ``delete()`` and ``update()`` use SQLite's
``secure_delete`` and truncate the WAL, so an old version does not linger in the files.

>>> import tempfile, pathlib
>>> from datetime import datetime, timezone
>>> with tempfile.TemporaryDirectory() as tmp, Diary.open(pathlib.Path(tmp) / "d.db") as d:
...     entry_id = d.log({"time": datetime(2026, 11, 22, 21, 5, tzinfo=timezone.utc), "mood": 4})
...     [e.mood for e in d.read()], len(d)
([4], 1)
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import secrets
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, overload

import nacl.exceptions
import nacl.secret

from client_sdk.entry import Entry
from client_sdk.errors import (
    DiaryClosedError,
    DiaryCorruptError,
    EntryNotFoundError,
    InvalidArgumentError,
    InvalidEntryError,
    KeyFileError,
)
from client_sdk.importers import ImportReport
from client_sdk.importers._source import Source
from client_sdk.importers.daylio import _import_daylio
from client_sdk.importers.state_of_mind import _import_state_of_mind
from client_sdk.keys import _fsync_directory, read_secret_file, write_secret_file

__all__ = ["DIARY_KEY_KIND", "Diary", "default_key_path"]

DIARY_KEY_KIND: Final = "diary-key"
DIARY_FORMAT: Final = "moodfed-diary"
DIARY_VERSION: Final = 1
EXPORT_FORMAT: Final = "moodfed-diary-export"
CSV_COLUMNS: Final = (
    "id",
    "time",
    "mood",
    "valence",
    "emotions",
    "activities",
    "sleep_hours",
    "steps",
    "note",
)
_PAD_TO: Final = 256
_KEY_CHECK: Final = b"moodfed-diary-key-check-v1"
_EPOCH: Final = date(1970, 1, 1)
_SCHEMA: Final = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE entries (id TEXT PRIMARY KEY, day INTEGER NOT NULL, payload BLOB NOT NULL)",
    "CREATE INDEX entries_by_day ON entries (day)",
)
_SIDE_FILES: Final = ("-wal", "-shm", "-journal")


def default_key_path(path: str | os.PathLike[str]) -> Path:
    """Where the diary key lives unless told otherwise: ``<diary file>.key``."""
    path = Path(path)
    return path.with_name(path.name + ".key")


def _utc_day(moment: datetime) -> int:
    return (moment.astimezone(UTC).date() - _EPOCH).days


def _canonical(entry: Entry) -> str:
    """A comparison key: the same check-in gives the same string whatever its offset."""
    data = entry.model_dump(mode="json")
    data["time"] = entry.time.astimezone(UTC).isoformat()
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


class Diary:
    """An encrypted, local diary of mood entries. Open it with ``Diary.open``.

    Safe to share between threads (one lock); several processes may open the same file
    (SQLite WAL). Every write validates first, so bad input changes nothing.
    """

    def __init__(
        self, *, connection: sqlite3.Connection, key: bytes, path: Path, key_path: Path
    ) -> None:
        self._conn: sqlite3.Connection | None = connection
        self._box: nacl.secret.SecretBox | None = nacl.secret.SecretBox(key)
        self._path = path
        self._key_path = key_path
        self._lock = threading.RLock()
        self._closed_reason = ""

    # -- opening and closing -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        passphrase: str | None = None,
        key_path: str | os.PathLike[str] | None = None,
    ) -> Diary:
        """Open the diary at ``path``, creating it (and its key file) if absent.

        With ``passphrase`` a new key file is sealed with it, and an existing sealed one
        is opened with it (``WrongPassphraseError`` if it does not fit). A diary whose key
        file is missing is never given a new key: that would orphan its entries.
        """
        path = Path(path)
        key_path = default_key_path(path) if key_path is None else Path(key_path)
        created_key = False
        if key_path.exists():
            key = read_secret_file(key_path, kind=DIARY_KEY_KIND, passphrase=passphrase)
            if len(key) != nacl.secret.SecretBox.KEY_SIZE:
                raise KeyFileError(f"{key_path} does not hold a 32-byte diary key")
        elif path.exists() and path.stat().st_size > 0:
            raise KeyFileError(
                f"the diary {path} exists but its key file {key_path} is missing; "
                "its entries cannot be read without it"
            )
        else:
            key = secrets.token_bytes(nacl.secret.SecretBox.KEY_SIZE)
            write_secret_file(key_path, key, kind=DIARY_KEY_KIND, passphrase=passphrase)
            created_key = True
        try:
            connection = cls._connect(path, nacl.secret.SecretBox(key))
        except BaseException:
            if created_key:
                with contextlib.suppress(OSError):
                    key_path.unlink()
            raise
        return cls(connection=connection, key=key, path=path, key_path=key_path)

    @staticmethod
    def _connect(path: Path, box: nacl.secret.SecretBox) -> sqlite3.Connection:
        if not path.exists():
            # Created 0600 before SQLite touches it; SQLite gives -wal/-shm the same mode.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=5.0
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA secure_delete=ON")
            tables = {
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if not tables:
                connection.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    connection.execute(statement)
                connection.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [
                        ("format", DIARY_FORMAT),
                        ("version", DIARY_VERSION),
                        ("key_check", bytes(box.encrypt(_KEY_CHECK))),
                    ],
                )
                connection.execute("COMMIT")
            elif not {"meta", "entries"} <= tables:
                raise DiaryCorruptError(f"{path} is not a moodfed diary")
            meta = dict(connection.execute("SELECT name, value FROM meta"))
            if meta.get("format") != DIARY_FORMAT:
                raise DiaryCorruptError(f"{path} is not a moodfed diary")
            if meta.get("version") != DIARY_VERSION:
                raise DiaryCorruptError(f"{path} has unsupported version {meta.get('version')!r}")
            try:
                if box.decrypt(meta.get("key_check", b"")) != _KEY_CHECK:
                    raise nacl.exceptions.CryptoError("key check mismatch")
            except (nacl.exceptions.CryptoError, TypeError, ValueError) as exc:
                raise KeyFileError(f"the key file does not belong to the diary {path}") from exc
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise DiaryCorruptError(f"{path} is not a readable SQLite diary: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        return connection

    @property
    def path(self) -> Path:
        """The diary database file."""
        return self._path

    @property
    def key_path(self) -> Path:
        """The key file that unlocks it."""
        return self._key_path

    @property
    def closed(self) -> bool:
        """True once ``close()`` or ``erase()`` was called."""
        return self._conn is None

    def close(self) -> None:
        """Close the database; further calls raise ``DiaryClosedError``. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._box = None
                self._closed_reason = "this diary was closed; open it again to use it"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"Diary({str(self._path)!r}, {state})"

    def _require_open(self) -> tuple[sqlite3.Connection, nacl.secret.SecretBox]:
        if self._conn is None or self._box is None:
            raise DiaryClosedError(self._closed_reason)
        return self._conn, self._box

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            connection, _ = self._require_open()
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _forget_old_versions(self) -> None:
        # Old page images of a deleted/updated row may sit in the WAL until a checkpoint.
        connection, _ = self._require_open()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- encryption ----------------------------------------------------------------------

    def _seal(self, entry_id: str, entry: Entry) -> bytes:
        _, box = self._require_open()
        document = {"v": DIARY_VERSION, "id": entry_id, "entry": entry.model_dump(mode="json")}
        plain = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        plain += b" " * (-len(plain) % _PAD_TO)  # JSON ignores trailing whitespace
        return bytes(box.encrypt(plain))

    def _unseal(self, entry_id: str, day: int, payload: bytes) -> Entry:
        _, box = self._require_open()
        try:
            document = json.loads(box.decrypt(payload))
            entry = Entry.from_mapping(document["entry"])
            if document.get("id") != entry_id or _utc_day(entry.time) != day:
                raise ValueError("payload belongs to another row")
        except (nacl.exceptions.CryptoError, ValueError, KeyError, TypeError) as exc:
            raise DiaryCorruptError(f"entry {entry_id} cannot be read: {exc}") from exc
        return entry

    # -- entries ---------------------------------------------------------------------------

    @staticmethod
    def _validate(entry: Entry | Mapping[str, Any]) -> Entry:
        if isinstance(entry, Entry):
            # Re-validate: model_copy(update=...) and model_construct skip validation.
            return Entry.from_mapping(entry.model_dump())
        if isinstance(entry, Mapping):
            return Entry.from_mapping(entry)
        raise InvalidEntryError(f"expected an Entry or a mapping, not {type(entry).__name__}")

    def log(self, entry: Entry | Mapping[str, Any]) -> str:
        """Add one entry; returns its id. Invalid input raises ``InvalidEntryError``."""
        return self.log_many([entry])[0]

    def log_many(self, entries: Iterable[Entry | Mapping[str, Any]]) -> list[str]:
        """Add entries in one transaction: all are validated first, then all written."""
        valid = [self._validate(entry) for entry in entries]
        ids = [uuid.uuid4().hex for _ in valid]
        with self._transaction() as connection:
            connection.executemany(
                "INSERT INTO entries (id, day, payload) VALUES (?, ?, ?)",
                [
                    (entry_id, _utc_day(entry.time), self._seal(entry_id, entry))
                    for entry_id, entry in zip(ids, valid, strict=True)
                ],
            )
        return ids

    def items(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> list[tuple[str, Entry]]:
        """``(id, entry)`` pairs with ``start <= time < end``, ordered by time."""
        for name, bound in (("start", start), ("end", end)):
            if bound is not None and (not isinstance(bound, datetime) or bound.utcoffset() is None):
                raise InvalidArgumentError(f"{name} must be a timezone-aware datetime")
        low = _utc_day(start) if start is not None else -(2**62)
        high = _utc_day(end) if end is not None else 2**62
        with self._lock:
            connection, _ = self._require_open()
            rows = connection.execute(
                "SELECT rowid, id, day, payload FROM entries WHERE day BETWEEN ? AND ?",
                (low, high),
            ).fetchall()
            found = [
                (rowid, entry_id, self._unseal(entry_id, day, payload))
                for rowid, entry_id, day, payload in rows
            ]
        found = [
            item
            for item in found
            if (start is None or item[2].time >= start) and (end is None or item[2].time < end)
        ]
        found.sort(key=lambda item: (item[2].time, item[0]))
        return [(entry_id, entry) for _, entry_id, entry in found]

    def read(self, start: datetime | None = None, end: datetime | None = None) -> list[Entry]:
        """Entries with ``start <= time < end`` (either bound optional), ordered by time."""
        return [entry for _, entry in self.items(start, end)]

    def get(self, entry_id: str) -> Entry:
        """The entry with this id; ``EntryNotFoundError`` if there is none."""
        with self._lock:
            connection, _ = self._require_open()
            row = connection.execute(
                "SELECT day, payload FROM entries WHERE id = ?", (entry_id,)
            ).fetchone()
            if row is None:
                raise EntryNotFoundError(f"no entry with id {entry_id!r}")
            return self._unseal(entry_id, row[0], row[1])

    def update(self, entry_id: str, entry: Entry | Mapping[str, Any]) -> None:
        """Replace the entry with this id (validated first; nothing changes on error)."""
        valid = self._validate(entry)
        with self._lock:  # the checkpoint runs after the transaction, under the lock
            with self._transaction() as connection:
                cursor = connection.execute(
                    "UPDATE entries SET day = ?, payload = ? WHERE id = ?",
                    (_utc_day(valid.time), self._seal(entry_id, valid), entry_id),
                )
                if cursor.rowcount == 0:
                    raise EntryNotFoundError(f"no entry with id {entry_id!r}")
            self._forget_old_versions()

    def delete(self, entry_id: str) -> None:
        """Remove the entry with this id; ``EntryNotFoundError`` if there is none."""
        with self._lock:  # the checkpoint runs after the transaction, under the lock
            with self._transaction() as connection:
                cursor = connection.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
                if cursor.rowcount == 0:
                    raise EntryNotFoundError(f"no entry with id {entry_id!r}")
            self._forget_old_versions()

    def __len__(self) -> int:
        with self._lock:
            connection, _ = self._require_open()
            return int(connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def __contains__(self, entry_id: object) -> bool:
        with self._lock:
            connection, _ = self._require_open()
            query = "SELECT 1 FROM entries WHERE id = ?"
            return connection.execute(query, (entry_id,)).fetchone() is not None

    # -- portability (GDPR Art. 20) ---------------------------------------------------------

    def export_json(self) -> str:
        """Every entry as readable JSON (the user's own data, to take elsewhere)."""
        document = {
            "format": EXPORT_FORMAT,
            "version": DIARY_VERSION,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "entries": [
                {"id": entry_id, **entry.model_dump(mode="json")}
                for entry_id, entry in self.items()
            ],
        }
        return json.dumps(document, ensure_ascii=False, indent=2)

    def export_csv(self) -> str:
        """Every entry as CSV, one row each; labels joined by " | " as Daylio does."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for entry_id, entry in self.items():
            writer.writerow(
                [
                    entry_id,
                    entry.time.isoformat(),
                    entry.mood,
                    entry.valence,
                    _cell(" | ".join(entry.emotions)),
                    _cell(" | ".join(entry.activities)),
                    "" if entry.sleep_hours is None else entry.sleep_hours,
                    "" if entry.steps is None else entry.steps,
                    _cell(entry.note),
                ]
            )
        return out.getvalue()

    # -- erasure (GDPR Art. 17) ---------------------------------------------------------------

    def erase(self) -> None:
        """Destroy the diary: overwrite and delete its files and its key. Irreversible.

        Afterwards every method raises ``DiaryClosedError``.
        """
        with self._lock:
            self.close()
            self._closed_reason = "this diary was erased; open a new one to keep a diary"
            self.destroy(self._path, key_path=self._key_path)

    @staticmethod
    def destroy(
        path: str | os.PathLike[str], *, key_path: str | os.PathLike[str] | None = None
    ) -> None:
        """Erase a diary's files without opening it (e.g. when the passphrase is lost)."""
        path = Path(path)
        key_path = default_key_path(path) if key_path is None else Path(key_path)
        for target in [path, *(Path(f"{path}{suffix}") for suffix in _SIDE_FILES)]:
            _shred(target, random_fill=False)
        _shred(key_path, random_fill=True)
        _fsync_directory(path.parent)
        if key_path.parent != path.parent:
            _fsync_directory(key_path.parent)

    # -- imports ---------------------------------------------------------------------------

    @overload
    def import_daylio(
        self,
        source: Source,
        *,
        tz: tzinfo | str = ...,
        mood_map: Mapping[str, int] | None = ...,
        skip_duplicates: bool = ...,
    ) -> ImportReport: ...

    @overload
    def import_daylio(
        self,
        *,
        text: str,
        tz: tzinfo | str = ...,
        mood_map: Mapping[str, int] | None = ...,
        skip_duplicates: bool = ...,
    ) -> ImportReport: ...

    def import_daylio(
        self,
        source: Source | None = None,
        *,
        text: str | None = None,
        tz: tzinfo | str = UTC,
        mood_map: Mapping[str, int] | None = None,
        skip_duplicates: bool = True,
    ) -> ImportReport:
        """Import a Daylio CSV export: good rows in one transaction, bad rows reported.

        ``source`` names the export file (``str`` or ``os.PathLike``) or holds its
        ``bytes``; CSV text already in memory goes in ``text=``. With ``skip_duplicates``
        (default) an entry already in the diary is not logged again, so importing the
        same export twice is harmless. A ``DiaryImportError`` logs nothing.
        """
        report = _import_daylio(source, text=text, tz=tz, mood_map=mood_map)
        return self._log_report(report, skip_duplicates=skip_duplicates)

    @overload
    def import_state_of_mind(
        self, source: Source, *, tz: tzinfo | str = ..., skip_duplicates: bool = ...
    ) -> ImportReport: ...

    @overload
    def import_state_of_mind(
        self, *, text: str, tz: tzinfo | str = ..., skip_duplicates: bool = ...
    ) -> ImportReport: ...

    def import_state_of_mind(
        self,
        source: Source | None = None,
        *,
        text: str | None = None,
        tz: tzinfo | str = UTC,
        skip_duplicates: bool = True,
    ) -> ImportReport:
        """Import Apple Health State of Mind samples (a JSON file, or ``text=``) as
        ``import_daylio`` does: good samples in one transaction, bad ones reported."""
        report = _import_state_of_mind(source, text=text, tz=tz)
        return self._log_report(report, skip_duplicates=skip_duplicates)

    def _log_report(self, report: ImportReport, *, skip_duplicates: bool) -> ImportReport:
        with self._lock:
            new = list(report.entries)
            if skip_duplicates and new:
                start = min(entry.time for entry in new)
                end = max(entry.time for entry in new) + timedelta(microseconds=1)
                existing = Counter(_canonical(entry) for entry in self.read(start, end))
                kept = []
                for entry in new:
                    key = _canonical(entry)
                    if existing[key] > 0:
                        existing[key] -= 1
                    else:
                        kept.append(entry)
                new = kept
            self.log_many(new)
        return dataclasses.replace(
            report, logged=len(new), skipped_duplicates=report.imported - len(new)
        )


def _cell(text: str) -> str:
    """Quote text a spreadsheet would run as a formula (CSV injection, OWASP)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _shred(path: Path, *, random_fill: bool) -> None:
    """Overwrite a file's bytes, flush them to disk, then unlink it (absent: nothing)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        remaining = os.fstat(fd).st_size
        while remaining > 0:
            size = min(1 << 20, remaining)
            remaining -= os.write(fd, secrets.token_bytes(size) if random_fill else bytes(size))
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()

"""Login throttling per user name and per source address, with exponential backoff.

Every password attempt is first *admitted*. In one serialized transaction the throttle
checks that neither the user name nor the source is locked, and records the attempt as a
failure of both before the password is checked, so parallel attempts cannot outrun the
allowance; a success then clears both. A refused attempt never reaches argon2id.

After ``free_attempts`` failures in a row a key is locked for ``backoff_seconds``,
doubling with each further failure up to ``max_lockout_seconds``; a key forgets its
failures ``reset_seconds`` after the last one. The state is a small table (a SQLite file
by default, or PostgreSQL), shared by every session and process that points at it and
kept across restarts, so ``moodfed dashboard lockouts`` and ``unlock`` can list and clear
it while the dashboard runs.
"""

from __future__ import annotations

import ipaddress
import os
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    create_engine,
    delete,
    event,
    insert,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.engine import make_url

__all__ = [
    "LOCAL_SOURCE",
    "Admitted",
    "LockoutRecord",
    "LoginThrottle",
    "Refused",
    "ThrottlePolicy",
    "source_key",
    "strict_source_key",
    "user_key",
]

Kind = Literal["user", "source"]

LOCAL_SOURCE: Final = "local"  # loopback, or no client address known
UNKNOWN_SOURCE: Final = "unknown"  # an address Streamlit gave that does not parse
_MAX_USER_KEY: Final = 128
_PG_LOCK_KEY: Final = 0x6D6F6F64  # "mood": serializes throttle transactions on PostgreSQL

_metadata = MetaData()
_failures = Table(
    "dashboard_login_failure",
    _metadata,
    Column("kind", String(8), primary_key=True),
    Column("key", String(160), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("refused", Integer, nullable=False),
    Column("last_failure", Float, nullable=False),
    Column("locked_until", Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """How many failures are free, and how long each further one locks the key."""

    free_attempts: int = 5
    backoff_seconds: float = 1.0
    max_lockout_seconds: float = 900.0
    reset_seconds: float = 86_400.0

    def __post_init__(self) -> None:
        if self.free_attempts < 1:
            raise ValueError("free_attempts must be at least 1")
        if not 0 < self.backoff_seconds <= self.max_lockout_seconds:
            raise ValueError("need 0 < backoff_seconds <= max_lockout_seconds")
        if self.reset_seconds <= 0:
            raise ValueError("reset_seconds must be positive")

    def lockout(self, failures: int) -> float:
        """Seconds a key stays locked after ``failures`` failures in a row.

        >>> [ThrottlePolicy().lockout(n) for n in (4, 5, 6, 7, 40)]
        [0.0, 1.0, 2.0, 4.0, 900.0]
        """
        if failures < self.free_attempts:
            return 0.0
        exponent = min(failures - self.free_attempts, 60)
        return float(min(self.backoff_seconds * 2.0**exponent, self.max_lockout_seconds))


@dataclass(frozen=True, slots=True)
class Admitted:
    """The password may be checked; these counts hold if it turns out wrong."""

    user: str
    source: str
    user_failures: int
    source_failures: int


@dataclass(frozen=True, slots=True)
class Refused:
    """Locked: the password must not be checked. ``locked`` names what is locked."""

    user: str
    source: str
    retry_after: float
    locked: tuple[Kind, ...]


@dataclass(frozen=True, slots=True)
class LockoutRecord:
    """One row an operator sees: a user name or source with recent failures."""

    kind: Kind
    key: str
    failures: int
    refused: int
    last_failure: float
    locked_until: float

    def locked_at(self, now: float) -> bool:
        return self.locked_until > now


def user_key(user: str) -> str:
    """The user name as the throttle counts it: case and Unicode forms folded, bounded.

    >>> user_key("  Analyst "), user_key("")
    ('analyst', '(empty)')
    """
    folded = unicodedata.normalize("NFKC", user).casefold().strip()
    return folded[:_MAX_USER_KEY] or "(empty)"


def source_key(address: str | None) -> str:
    """The source as the throttle counts it: an IPv4 address, an IPv6 /64, or ``local``.

    One host usually holds a whole IPv6 /64, so that is one source. Loopback (and no
    address at all, as Streamlit reports for localhost) is ``local``.

    >>> source_key("2001:db8::1"), source_key("::ffff:192.0.2.7"), source_key(None)
    ('2001:db8::/64', '192.0.2.7', 'local')
    """
    if not address:
        return LOCAL_SOURCE
    try:
        return strict_source_key(address)
    except ValueError:
        return UNKNOWN_SOURCE


def strict_source_key(address: str) -> str:
    """:func:`source_key` for an operator's input: an address that does not parse is an error."""
    if address.strip() == LOCAL_SOURCE:
        return LOCAL_SOURCE
    parsed = ipaddress.ip_address(address.strip())
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if parsed.is_loopback:
        return LOCAL_SOURCE
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def _sqlite_driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE itself (the documented recipe).
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(connection: Connection) -> None:
    # Take the write lock up front: the read-check-write of an admission is atomic
    # across every process sharing the file.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _state_engine(url: str) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ValueError(f"the login state must be a SQLite file path, got {url!r}")
        path = Path(database)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():  # user names and addresses: readable by the owner only
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_driver_autocommit)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if backend == "postgresql":
        return create_engine(parsed, pool_pre_ping=True)
    raise ValueError(f"the login state must be SQLite or PostgreSQL, not {backend}")


def _record(row: Any) -> LockoutRecord:
    return LockoutRecord(
        kind=row.kind,
        key=row.key,
        failures=int(row.failures),
        refused=int(row.refused),
        last_failure=float(row.last_failure),
        locked_until=float(row.locked_until),
    )


class LoginThrottle:
    """Admits or refuses password attempts; shared through its database (see the module)."""

    def __init__(
        self,
        url: str,
        *,
        policy: ThrottlePolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy or ThrottlePolicy()
        self._clock = clock  # wall time: locks outlive a restart
        self.engine = _state_engine(url)
        with self._transaction() as connection:  # serialized: no race between creators
            _metadata.create_all(connection)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                lock = text("SELECT pg_advisory_xact_lock(:key)")
                connection.execute(lock, {"key": _PG_LOCK_KEY})
            yield connection

    def _forget_old(self, connection: Connection, now: float) -> None:
        connection.execute(
            delete(_failures).where(
                _failures.c.locked_until <= now,
                _failures.c.last_failure < now - self.policy.reset_seconds,
            )
        )

    def admit(self, *, user: str, source: str | None) -> Admitted | Refused:
        """Refuse if the user name or the source is locked; else count this attempt as failed.

        Call :meth:`succeeded` when the password was right. Nothing is written for a
        refused attempt but the ``refused`` count of the locked keys.
        """
        keys: tuple[tuple[Kind, str], ...] = (
            ("user", user_key(user)),
            ("source", source_key(source)),
        )
        now = self._clock()
        with self._transaction() as connection:
            self._forget_old(connection, now)
            matches = or_(*(and_(_failures.c.kind == k, _failures.c.key == v) for k, v in keys))
            found = connection.execute(select(_failures).where(matches))
            rows = {(r.kind, r.key): _record(r) for r in found}
            locked = [rows[key] for key in keys if key in rows and rows[key].locked_at(now)]
            if locked:
                for row in locked:
                    connection.execute(
                        update(_failures)
                        .where(_failures.c.kind == row.kind, _failures.c.key == row.key)
                        .values(refused=row.refused + 1)
                    )
                return Refused(
                    user=keys[0][1],
                    source=keys[1][1],
                    retry_after=max(row.locked_until for row in locked) - now,
                    locked=tuple(row.kind for row in locked),
                )
            counts: dict[Kind, int] = {}
            for kind, key in keys:
                previous = rows.get((kind, key))
                failures = (previous.failures if previous else 0) + 1
                lockout = self.policy.lockout(failures)
                values = {
                    "failures": failures,
                    "last_failure": now,
                    "locked_until": now + lockout if lockout else 0.0,
                }
                if previous is None:
                    first = insert(_failures).values(kind=kind, key=key, refused=0, **values)
                    connection.execute(first)
                else:
                    connection.execute(
                        update(_failures)
                        .where(_failures.c.kind == kind, _failures.c.key == key)
                        .values(**values)
                    )
                counts[kind] = failures
        return Admitted(
            user=keys[0][1],
            source=keys[1][1],
            user_failures=counts["user"],
            source_failures=counts["source"],
        )

    def succeeded(self, *, user: str, source: str | None) -> None:
        """The password was right: forget the failures of this user name and this source."""
        with self._transaction() as connection:
            connection.execute(
                delete(_failures).where(
                    or_(
                        and_(_failures.c.kind == "user", _failures.c.key == user_key(user)),
                        and_(_failures.c.kind == "source", _failures.c.key == source_key(source)),
                    )
                )
            )

    def lockouts(self) -> list[LockoutRecord]:
        """Every user name and source with failures not yet forgotten, locked ones first."""
        now = self._clock()
        with self._transaction() as connection:
            self._forget_old(connection, now)
            rows = [_record(r) for r in connection.execute(select(_failures))]
        return sorted(rows, key=lambda r: (not r.locked_at(now), r.kind, r.key))

    def unlock(
        self, *, user: str | None = None, source: str | None = None, everything: bool = False
    ) -> list[LockoutRecord]:
        """Clear the failures of a user name, a source (:func:`strict_source_key`), or all.

        Returns what was cleared. Raises ValueError (and clears nothing) when told
        nothing, or when ``source`` is not an address.
        """
        conditions = []
        if user is not None:
            conditions.append(and_(_failures.c.kind == "user", _failures.c.key == user_key(user)))
        if source is not None:
            key = strict_source_key(source)
            conditions.append(and_(_failures.c.kind == "source", _failures.c.key == key))
        if everything:
            if conditions:
                raise ValueError("give either everything, or a user and/or a source")
        elif not conditions:
            raise ValueError("say what to unlock: a user, a source, or everything")
        where = or_(*conditions) if conditions else true()
        with self._transaction() as connection:
            cleared = [_record(r) for r in connection.execute(select(_failures).where(where))]
            connection.execute(delete(_failures).where(where))
        return cleared

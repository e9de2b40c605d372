"""The consent ledger: validate signed records, append them in batches, prove it.

No HTTP here (``consent.api`` is the thin layer on top, and maps the domain errors of
:mod:`consent.errors` to statuses) and no SQL outside the queries below. Appends are
grouped: every record waiting when a batch starts gets a consecutive index, is written
with the materialized state and one new signed checkpoint in a single transaction, and
only then is acknowledged. One fsync and one signature serve the whole batch, which is
where the throughput comes from.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import nacl.signing
from pydantic import ValidationError
from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlmodel import col

from consent import queries
from consent.encoding import b64encode
from consent.errors import (
    ClockSkewError,
    InvalidInputError,
    KeyFileError,
    LedgerError,
    LogIntegrityError,
    MalformedInputError,
    OutOfRangeError,
    ReplayedNonceError,
    SignatureError,
    StaleStatementError,
    StorageUnavailableError,
    UnknownPolicyError,
    UnknownPurposeError,
    validation_message,
)
from consent.merkle import MerkleTree, hash_leaf
from consent.models import (
    ConsistencyProof,
    DeviceState,
    InclusionProof,
    PurposeDecision,
    PurposeState,
    Receipt,
)
from consent.note import Checkpoint, NoteSigner, format_checkpoint
from consent.secret_files import SecretFileError, load_or_create_seed_file
from consent.settings import ConsentSettings, Policy
from consent.state_index import StateIndex, is_active
from consent.statement import (
    SignedRecord,
    StatementError,
    canonical_record,
    canonical_statement,
    check_device_key,
    check_device_keys,
    parse_json_strict,
    verify_record_signature,
)
from consent.store import (
    ConsentState,
    LogEntry,
    LogHead,
    WriterLock,
    create_engine,
)

__all__ = [
    "AcceptedRecord",
    "Ledger",
    "LedgerError",
    "load_or_create_log_key",
    "storage_unavailable",
]

Clock = Callable[[], datetime]

log = logging.getLogger("moodfed.consent")

_P = ParamSpec("_P")
_T = TypeVar("_T")


def storage_unavailable(error: Exception, doing: str) -> StorageUnavailableError:
    """A generic refusal for the client; the database's own words go to the log only.

    SQLAlchemy's messages carry the SQL statement, its parameters and a help link:
    internals a client has no use for and an attacker does.
    """
    detail = " ".join(str(error).split())
    log.error(
        "the ledger's database failed to %s: %s: %.1000s",
        doing,
        type(error).__name__,
        detail,
    )
    return StorageUnavailableError(
        f"the ledger could not {doing}: its database is unavailable; retry later"
    )


def _reads(doing: str) -> Callable[[Callable[_P, _T]], Callable[_P, _T]]:
    """Turn a database failure inside a read into :class:`StorageUnavailableError`."""

    def decorate(method: Callable[_P, _T]) -> Callable[_P, _T]:
        @functools.wraps(method)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            try:
                return method(*args, **kwargs)
            except SQLAlchemyError as exc:
                raise storage_unavailable(exc, doing) from exc

        return wrapper

    return decorate


def load_or_create_log_key(path: Path) -> nacl.signing.SigningKey:
    """The log's Ed25519 key: a 32-byte seed in a file only its owner can read (0600)."""
    try:
        seed = load_or_create_seed_file(path, name="log key file")
    except SecretFileError as error:
        raise KeyFileError(str(error)) from error
    return nacl.signing.SigningKey(seed)


@dataclass(frozen=True, slots=True)
class AcceptedRecord:
    """A record that passed every check that needs no database.

    ``issued_epoch`` and ``expires_epoch``: the statement's times as POSIX seconds,
    parsed once here rather than again by every step of the append.
    """

    record: SignedRecord
    leaf: bytes
    leaf_hash: bytes
    issued_epoch: float
    expires_epoch: float | None


@dataclass(slots=True)
class _Pending:
    accepted: AcceptedRecord
    index: int = -1
    error: LedgerError | None = None


class Ledger:
    """The ledger over one database; safe to use from several threads and processes.

    ``clock`` is the service's notion of now (skew window, expiry of grants); tests
    pass one they can move.
    """

    def __init__(self, settings: ConsentSettings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.purposes = frozenset(settings.purposes)
        self.policies: dict[str, Policy] = settings.policies
        self.clock: Clock = clock or _utc_now
        url = settings.resolved_database_url
        self.reader = create_engine(url)
        self.writer = create_engine(url, immediate=True)
        self.signer = NoteSigner(
            settings.log_origin, load_or_create_log_key(settings.resolved_key_file)
        )
        self.tree = MerkleTree()
        self._tree_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writer_lock = WriterLock(url)  # across processes (SQLite)
        self._states = StateIndex()
        self._ensure_initial_checkpoint()

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier_key

    def close(self) -> None:
        self.reader.dispose()
        self.writer.dispose()
        self._writer_lock.close()

    # -- validation that needs no database ---------------------------------------

    def accept(self, body: bytes | dict[str, Any]) -> AcceptedRecord:
        """Parse and check a signed record; raise a :class:`LedgerError` subclass if it is bad."""
        try:
            raw = parse_json_strict(body) if isinstance(body, bytes) else body
            if not isinstance(raw, dict):
                raise StatementError("the body must be a JSON object {statement, signature}")
            record = SignedRecord.model_validate(raw)
        except StatementError as exc:
            raise MalformedInputError(str(exc)) from None
        except ValidationError as exc:
            raise InvalidInputError(validation_message(exc)) from None
        statement = record.statement
        self._check_purpose(statement.purpose)
        if statement.policy_version not in self.policies:
            known = ", ".join(sorted(self.policies))
            raise UnknownPolicyError(
                f"unknown policy_version {statement.policy_version!r}; known: {known}"
            )
        now = self.clock().timestamp()
        issued = statement.issued.timestamp()
        ahead = issued - now
        behind, future = self.settings.clock_skew_seconds, self.settings.future_skew_seconds
        if ahead > future or -ahead > behind:
            when = "in the future" if ahead > 0 else "in the past"
            raise ClockSkewError(
                f"issued_at is {abs(ahead):.0f} s from the service's clock, {when} (allowed: "
                f"{future} s ahead, {behind} s behind); check the device's clock"
            )
        expires = None if statement.expires is None else statement.expires.timestamp()
        if expires is not None and expires <= now:
            raise InvalidInputError("expires_at is in the past")
        # The statement's JCS bytes once: signed over, and framed into the leaf.
        try:
            signed = canonical_statement(statement)
            verify_record_signature(record, signed)
        except StatementError as exc:
            raise SignatureError(str(exc)) from None
        leaf = canonical_record(record, signed)
        return AcceptedRecord(
            record=record,
            leaf=leaf,
            leaf_hash=hash_leaf(leaf),
            issued_epoch=issued,
            expires_epoch=expires,
        )

    def _check_purpose(self, purpose: str) -> None:
        if purpose not in self.purposes:
            known = ", ".join(sorted(self.purposes))
            raise UnknownPurposeError(f"unknown purpose {purpose!r}; known: {known}")

    # -- appends ---------------------------------------------------------------------

    def append_batch(self, batch: Sequence[AcceptedRecord]) -> list[Receipt | LedgerError]:
        """Append records in one transaction; one receipt or one refusal per record.

        A refusal (a replayed nonce, a stale statement) is returned in the record's
        place; a database failure raises :class:`StorageUnavailableError` and nothing of
        the batch is written.
        """
        pending = [_Pending(accepted) for accepted in batch]
        now = self.clock().timestamp()
        try:
            with self._write_lock, self._writer_lock.held(), self.writer.connect() as connection:
                transaction = connection.begin()
                start = queries.head(connection, lock=True)
                self._refuse_replays_and_stale(connection, pending, now)
                good = [p for p in pending if p.error is None]
                if not good:
                    transaction.rollback()
                    return [p.error for p in pending if p.error is not None]
                with self._tree_lock:
                    self._sync_tree(connection, start)
                    try:
                        note = self._write(connection, good, now)
                        transaction.commit()
                    except BaseException:
                        self.tree.truncate(start)
                        raise
                # Still under the write lock: no other batch can truncate the tree.
                size = start + len(good)
                receipts = {id(p): self._receipt(p, note, size) for p in good}
        except SQLAlchemyError as exc:
            raise storage_unavailable(exc, "store the record") from exc
        return [p.error if p.error is not None else receipts[id(p)] for p in pending]

    def _refuse_replays_and_stale(
        self, connection: Connection, pending: list[_Pending], now: float
    ) -> None:
        """Refuse a reused nonce, and a statement older than the device's latest one.

        The latest statement ranks at the time it was logged when it was dated later
        (``issued_epoch`` is stored capped at the log's clock, and read capped at now for
        rows stored before the cap): a grant dated ahead of the service's clock never
        out-ranks the withdrawal its device signs afterwards.
        """
        statements = [p.accepted.record.statement for p in pending]
        pairs = {(s.device_key, s.nonce) for s in statements}
        logged, states = queries.device_history(connection, sorted(pairs))
        used = logged & pairs
        latest = {(key, purpose): min(issued, now) for key, purpose, issued in states}
        for p, s in zip(pending, statements, strict=True):
            if (s.device_key, s.nonce) in used:
                p.error = ReplayedNonceError("this nonce was already used by this device")
                continue
            issued = p.accepted.issued_epoch
            if issued < latest.get((s.device_key, s.purpose), float("-inf")):
                p.error = StaleStatementError(
                    f"a later statement for {s.purpose!r} is already in the ledger; "
                    "sign a new statement with the current time"
                )
                continue
            used.add((s.device_key, s.nonce))
            latest[(s.device_key, s.purpose)] = min(issued, now)

    def _write(self, connection: Connection, good: list[_Pending], now: float) -> str:
        entries: list[tuple[Any, ...]] = []
        states: dict[tuple[str, str], tuple[Any, ...]] = {}
        for p in good:
            s, accepted = p.accepted.record.statement, p.accepted
            p.index = self.tree.append(accepted.leaf_hash)
            entries.append(
                (
                    p.index,
                    s.device_key,
                    s.purpose,
                    s.action,
                    s.nonce,
                    s.issued_at,
                    accepted.leaf,
                    accepted.leaf_hash,
                )
            )
            # In STATE_COLUMNS order. The rank of this decision (issued_epoch): when it
            # was issued, or logged if that is earlier (see _refuse_replays_and_stale).
            states[(s.device_key, s.purpose)] = (
                s.device_key,
                s.purpose,
                s.action,
                s.issued_at,
                min(accepted.issued_epoch, now),
                s.expires_at,
                accepted.expires_epoch,
                s.policy_version,
                p.index,
            )
        size = self.tree.size
        note = self._sign(size)
        queries.insert_entries(connection, entries)
        queries.upsert_states(connection, list(states.values()))
        queries.insert_checkpoint(connection, size, self.tree.root(size), note)
        queries.set_head(connection, size, note)
        return note

    def _sign(self, size: int) -> str:
        checkpoint = Checkpoint(self.settings.log_origin, size, self.tree.root(size))
        return self.signer.sign(format_checkpoint(checkpoint))

    def _receipt(self, p: _Pending, note: str, size: int) -> Receipt:
        s = p.accepted.record.statement
        policy = self.policies[s.policy_version]
        return Receipt(
            index=p.index,
            tree_size=size,
            leaf_hash=b64encode(p.accepted.leaf_hash),
            inclusion_proof=[b64encode(h) for h in self.tree.inclusion_proof(p.index, size)],
            checkpoint=note,
            log_origin=self.settings.log_origin,
            receipt_version="KI-CR-v1.1.0",
            consent_timestamp=s.issued_at,
            pii_principal_id=s.device_key,
            controller=policy.controller,
            jurisdiction=policy.jurisdiction,
            language=policy.language,
            policy_version=s.policy_version,
            policy_url=policy.policy_url,
            notice_sha256=s.notice_sha256,
            purposes=[
                PurposeDecision(
                    purpose=s.purpose,
                    action=s.action,
                    consent_type="explicit",
                    expires_at=s.expires_at,
                )
            ],
            data_categories=policy.data_categories,
            recipients=policy.recipients,
            retention=policy.retention,
            withdrawal_method=policy.withdrawal_method,
        )

    # -- the tree cache ------------------------------------------------------------

    def _sync_tree(self, connection: Connection, size: int) -> None:
        """Bring the in-memory tree to ``size`` leaves (other processes may have appended).

        A tree whose root is not the one the log signed at the tree's size (the database
        was rolled back under the service, and perhaps grew again) is rebuilt from the
        stored leaves: never extended with another history's leaves, and never signed.
        """
        if self.tree.size > size:
            self.tree.truncate(size)
        if self.tree.size and queries.root_at(connection, self.tree.size) != self.tree.root():
            log.warning(
                "The stored log no longer holds the %d entries this process had seen: "
                "reading its tree again (was the database restored or rolled back?)",
                self.tree.size,
            )
            self.tree.truncate(0)
        if self.tree.size < size:
            for leaf_hash in queries.leaf_hashes(connection, self.tree.size, size):
                self.tree.append(leaf_hash)
            if self.tree.size != size:
                raise LogIntegrityError("the log has a gap: run `moodfed consent audit`")

    def _tree_at_least(self, size: int) -> MerkleTree:
        if self.tree.size < size:
            with self._tree_lock, Session(self.reader) as session:
                if self.tree.size < size:
                    self._sync_tree(session.connection(), self._head(session).size)
        return self.tree

    def _ensure_initial_checkpoint(self) -> None:
        with self._writer_lock.held(), Session(self.writer) as session:
            head = self._head(session, lock=True)
            if not head.note:
                note = self._sign(0)
                queries.insert_checkpoint(session.connection(), 0, self.tree.root(0), note)
                queries.set_head(session.connection(), 0, note)
                session.commit()
            else:
                with self._tree_lock:
                    self._sync_tree(session.connection(), head.size)

    # -- reads ---------------------------------------------------------------------

    @staticmethod
    def _head(session: Session, *, lock: bool = False) -> LogHead:
        query = select(LogHead).where(col(LogHead.id) == 1)
        return session.execute(query.with_for_update() if lock else query).scalar_one()

    @_reads("read the checkpoint")
    def checkpoint(self) -> str:
        """The latest signed checkpoint note."""
        with Session(self.reader) as session:
            return self._head(session).note

    @_reads("read the log's size")
    def size(self) -> int:
        with Session(self.reader) as session:
            return self._head(session).size

    @_reads("read the log")
    def inclusion_proof(self, index: int, size: int) -> InclusionProof:
        self._check_range(size)
        if not 0 <= index < size:
            raise OutOfRangeError(f"index must be in 0..size-1, got index={index} size={size}")
        tree = self._tree_at_least(size)
        return InclusionProof(
            index=index,
            tree_size=size,
            leaf_hash=b64encode(tree.leaf_hash(index)),
            audit_path=[b64encode(h) for h in tree.inclusion_proof(index, size)],
        )

    @_reads("read the log")
    def consistency_proof(self, old: int, new: int) -> ConsistencyProof:
        self._check_range(new)
        if not 0 <= old <= new:
            raise OutOfRangeError(f"need 0 <= old <= new, got old={old} new={new}")
        tree = self._tree_at_least(new)
        return ConsistencyProof(
            old=old, new=new, proof=[b64encode(h) for h in tree.consistency_proof(old, new)]
        )

    def _check_range(self, size: int) -> None:
        current = self.size()
        if not 0 <= size <= current:
            raise OutOfRangeError(f"size must be between 0 and the log's size {current}")

    @_reads("read the log")
    def entries(self, start: int, end: int) -> list[Any]:
        """The signed records ``start`` to ``end`` (exclusive) as JSON values, as logged."""
        current = self.size()
        if not 0 <= start <= end <= current:
            raise OutOfRangeError(f"need 0 <= start <= end <= {current} (the log's size)")
        if end - start > self.settings.max_entries_per_page:
            limit = self.settings.max_entries_per_page
            raise OutOfRangeError(f"at most {limit} entries per request")
        with Session(self.reader) as session:
            rows = session.execute(
                select(col(LogEntry.leaf))
                .where(col(LogEntry.index) >= start, col(LogEntry.index) < end)
                .order_by(col(LogEntry.index))
            ).scalars()
            return [parse_json_strict(leaf) for leaf in rows]

    @_reads("read the device's state")
    def state(self, device_key: str) -> DeviceState:
        """The current decision per purpose, from the materialized state."""
        try:
            check_device_key(device_key)
        except StatementError as exc:
            raise InvalidInputError(str(exc)) from None
        now = self.clock().timestamp()
        with Session(self.reader) as session:
            rows = session.execute(
                select(ConsentState).where(col(ConsentState.device_key) == device_key)
            ).scalars()
            purposes = {
                row.purpose: PurposeState(
                    action=_action(row.action),
                    issued_at=row.issued_at,
                    expires_at=row.expires_at,
                    policy_version=row.policy_version,
                    index=row.index,
                    active=is_active(row.action, row.expires_epoch, now),
                )
                for row in rows
            }
        return DeviceState(device_key=device_key, purposes=purposes)

    @_reads("read eligibility")
    def eligible(self, purpose: str, device_keys: Sequence[str]) -> list[str]:
        """The keys whose latest record for ``purpose`` is an unexpired grant, in input order."""
        limit = self.settings.max_eligibility_keys
        if len(device_keys) > limit:
            raise InvalidInputError(f"at most {limit} device keys a query")
        self._check_purpose(purpose)
        try:
            check_device_keys(list(device_keys))
        except StatementError as exc:
            raise InvalidInputError(str(exc)) from None
        now = self.clock().timestamp()
        with Session(self.reader) as session:
            self._states.sync(session.connection())
        return self._states.eligible(purpose, list(dict.fromkeys(device_keys)), now=now)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _action(action: str) -> Literal["grant", "withdraw"]:
    if action not in ("grant", "withdraw"):
        raise LogIntegrityError(f"a stored action is {action!r}: run `moodfed consent audit`")
    return "grant" if action == "grant" else "withdraw"

"""``moodfed consent audit``: recompute the whole log from its stored rows.

Every leaf is re-derived from the stored record (and its device signature checked),
the tree is rebuilt, every stored checkpoint's signature and its root against the
rebuilt tree are verified (with :mod:`consent.verify`, as the dashboard and the
devices do), and the materialized state is replayed. The first bad index is named, so
an operator knows where a row was changed.

A log that was rolled back (its newest entries, checkpoints and head deleted together)
is self-consistent, so only a checkpoint kept outside the database can catch it: each
trusted checkpoint (a file an auditor kept, or a witness's latest cosigned one) must be
signed by the log, no larger than the stored log, and its root must be the root of the
stored log's first entries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from consent.encoding import b64encode
from consent.merkle import MerkleTree, hash_leaf
from consent.note import NoteVerifier
from consent.statement import canonical_record
from consent.store import ConsentState, LogCheckpoint, LogEntry, LogHead, create_engine
from consent.verify import (
    CheckpointError,
    EntryError,
    VerificationError,
    open_signed_checkpoint,
    signed_record,
    verify_tree,
)

__all__ = ["AuditReport", "audit_log"]


@dataclass
class AuditReport:
    size: int = 0
    checkpoints: int = 0
    root: str = ""
    problems: list[str] = field(default_factory=list)
    first_bad_index: int | None = None
    trusted_sizes: list[int] = field(default_factory=list)
    """The sizes of the trusted checkpoints the stored log was found consistent with."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, message: str, *, index: int | None = None) -> None:
        if index is not None and self.first_bad_index is None:
            self.first_bad_index = index
        self.problems.append(message)


def _rows(session: Session) -> Iterator[LogEntry]:
    last = -1
    while True:
        page = (
            session.execute(
                select(LogEntry)
                .where(col(LogEntry.index) > last)
                .order_by(col(LogEntry.index))
                .limit(5000)
            )
            .scalars()
            .all()
        )
        if not page:
            return
        yield from page
        last = page[-1].index
        session.expunge_all()


def _check_entry(row: LogEntry, report: AuditReport) -> None:
    i = row.index
    if hash_leaf(row.leaf) != row.leaf_hash:
        report.fail(f"index {i}: stored leaf hash does not match the stored record", index=i)
        return
    try:
        record = signed_record(row.leaf)
    except EntryError as exc:
        report.fail(
            f"index {i}: the stored record is not a validly signed record: {exc.reason}", index=i
        )
        return
    if canonical_record(record) != row.leaf:
        report.fail(f"index {i}: the stored record is not in canonical (JCS) form", index=i)
    s = record.statement
    columns = (row.device_key, row.purpose, row.action, row.nonce, row.issued_at)
    if columns != (s.device_key, s.purpose, s.action, s.nonce, s.issued_at):
        report.fail(f"index {i}: the row's columns disagree with its signed record", index=i)


def _check_trusted(
    note: str, source: str, verifier: NoteVerifier, tree: MerkleTree, report: AuditReport
) -> None:
    """The stored log must extend a checkpoint the log signed and someone kept."""
    try:
        trusted = open_signed_checkpoint(note, verifier)
    except CheckpointError as exc:
        report.fail(f"the trusted checkpoint {source} does not verify: {exc.reason}")
        return
    if trusted.size > tree.size:
        report.fail(
            f"ROLLBACK: the trusted checkpoint {source} is signed for {trusted.size} entries "
            f"but only {tree.size} are stored; entries {tree.size}-{trusted.size - 1} were "
            "removed (the log was rolled back or truncated)",
            index=tree.size,
        )
        return
    try:
        verify_tree(tree, trusted)
    except VerificationError:
        report.fail(
            f"FORK: the stored log is inconsistent with the trusted checkpoint {source} "
            f"(size {trusted.size}): its first {trusted.size} entries do not hash to the root "
            "the log signed, so its history was rewritten"
        )
        return
    report.trusted_sizes.append(trusted.size)


def audit_log(
    database_url: str, verifier_key: str, *, trusted_checkpoints: Sequence[tuple[str, str]] = ()
) -> AuditReport:
    """Audit the log at ``database_url`` against the log's published verifier key.

    ``trusted_checkpoints`` are ``(source, signed note)`` pairs kept outside the database
    (a file, a witness): the stored log must be at least as large as each and
    consistent with it, or the audit fails naming a rollback or a fork.
    """
    report = AuditReport()
    verifier = NoteVerifier(verifier_key)
    engine = create_engine(database_url)
    tree = MerkleTree()
    latest: dict[tuple[str, str], tuple[str, int]] = {}
    with Session(engine) as session:
        for row in _rows(session):
            if row.index != tree.size:
                report.fail(
                    f"index {tree.size}: missing (next stored is {row.index})", index=tree.size
                )
                break
            _check_entry(row, report)
            tree.append(hash_leaf(row.leaf))
            latest[(row.device_key, row.purpose)] = (row.action, row.index)
        report.size = tree.size
        report.root = b64encode(tree.root())
        head = session.execute(select(LogHead).where(col(LogHead.id) == 1)).scalar_one()
        if head.size != tree.size:
            report.fail(
                f"the head says size {head.size} but {tree.size} entries are stored",
                index=min(head.size, tree.size),
            )
        checkpoints = session.execute(select(LogCheckpoint).order_by(col(LogCheckpoint.size)))
        for cp in checkpoints.scalars():
            report.checkpoints += 1
            try:
                signed = open_signed_checkpoint(cp.note, verifier)
            except CheckpointError as exc:
                report.fail(f"checkpoint {cp.size}: {exc.reason}")
                continue
            if signed.size != cp.size or signed.root_hash != cp.root_hash:
                report.fail(f"checkpoint {cp.size}: its columns disagree with its signed note")
            if signed.size > tree.size:
                report.fail(f"checkpoint {cp.size}: signed for more entries than are stored")
                continue
            try:
                verify_tree(tree, signed)
            except VerificationError:
                report.fail(
                    f"checkpoint {signed.size}: the stored entries no longer match the root "
                    f"the log signed; an entry below index {signed.size} was changed",
                    index=None if report.first_bad_index is not None else signed.size - 1,
                )
        states = {
            (s.device_key, s.purpose): (s.action, s.index)
            for s in session.execute(select(ConsentState)).scalars()
        }
    engine.dispose()
    for source, note in trusted_checkpoints:
        _check_trusted(note, source, verifier, tree, report)
    for key in sorted(set(states) | set(latest)):
        if states.get(key) != latest.get(key):
            index = (latest.get(key) or states.get(key) or ("", None))[1]
            report.fail(
                f"consent state of {key[0]} for {key[1]} disagrees with the log", index=index
            )
    return report

"""One verifier for the consent log: records -> tree -> checkpoint, and receipts.

The audit (over the database's rows), the dashboard (over the public log) and the
device SDK (over its own receipts) all check the log with these functions, so there is
one reading of the protocol to get right. No I/O and no web or database imports: the
caller fetches, this module decides.

- A checkpoint is trusted only if the caller's verifier key signed it
  (:func:`open_signed_checkpoint`).
- Log verification: every entry is a validly signed record (:func:`signed_record`), the
  tree rebuilt from the entries has the signed root (:func:`verify_tree`,
  :func:`verify_entries`).
- Receipt verification: the checkpoint's signature, the inclusion of exactly the record
  sent, the receipt's fields against the statement (:func:`verify_receipt`), and each
  new checkpoint extending the last one seen (:func:`verify_append_only`).
- Witnesses: at least k of the known witnesses cosigned the checkpoint (C2SP
  tlog-cosignature, :func:`verify_cosignatures`, :func:`open_witnessed_checkpoint`).

>>> from consent.merkle import MerkleTree
>>> from consent.note import Checkpoint
>>> tree = MerkleTree([hash_leaf(b"a"), hash_leaf(b"b")])
>>> verify_tree(tree, Checkpoint("example.org/log", 2, tree.root(2)))
>>> verify_tree(tree, Checkpoint("example.org/log", 1, tree.root(2)))
Traceback (most recent call last):
consent.verify.VerificationError: the entries do not hash to the checkpoint's root
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from consent.encoding import b64decode
from consent.merkle import (
    MerkleTree,
    ProofError,
    hash_leaf,
    verify_consistency,
    verify_inclusion,
)
from consent.models import ConsistencyProof, Receipt
from consent.note import Checkpoint, NoteError, NoteVerifier, open_checkpoint
from consent.statement import (
    SignedRecord,
    StatementError,
    canonical_record,
    parse_json_strict,
    verify_record_signature,
)
from consent.witness.cosignature import Cosignature, CosignatureVerifier, split_note

__all__ = [
    "BadCosignatureError",
    "CheckpointError",
    "ConsistencyError",
    "EntryError",
    "InclusionError",
    "VerificationError",
    "WitnessQuorumError",
    "open_signed_checkpoint",
    "open_witnessed_checkpoint",
    "record_leaf_hash",
    "signed_record",
    "verify_append_only",
    "verify_cosignatures",
    "verify_entries",
    "verify_receipt",
    "verify_tree",
]


class VerificationError(ValueError):
    """An answer from the log does not verify: do not trust it.

    ``reason`` is the underlying cause alone (without this module's sentence), for
    callers that phrase the failure their own way.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason


class CheckpointError(VerificationError):
    """The checkpoint is malformed or not signed by the expected log key."""


class EntryError(VerificationError):
    """A log entry is not a validly signed consent record."""


class InclusionError(VerificationError):
    """An inclusion proof does not lead from the leaf to the signed root."""


class ConsistencyError(VerificationError):
    """Two checkpoints do not describe one append-only log: the log forked or rewrote itself."""


class BadCosignatureError(VerificationError):
    """A known witness's cosignature line on the checkpoint does not verify."""


class WitnessQuorumError(VerificationError):
    """Fewer known witnesses cosigned the checkpoint than required."""

    def __init__(self, message: str, *, found: int, required: int) -> None:
        super().__init__(message)
        self.found = found
        self.required = required


def open_signed_checkpoint(
    note: str, verifier: NoteVerifier, *, origin: str | None = None
) -> Checkpoint:
    """The checkpoint a signed note vouches for, if ``verifier``'s key signed it."""
    try:
        return open_checkpoint(note, verifier, origin=origin)
    except NoteError as exc:
        raise CheckpointError(f"the checkpoint does not verify: {exc}", reason=str(exc)) from None


def record_leaf_hash(record: SignedRecord) -> bytes:
    """The log's leaf hash of a record: ``SHA-256(0x00 || JCS(record))``."""
    return hash_leaf(canonical_record(record))


def signed_record(entry: object) -> SignedRecord:
    """Parse one log entry (its leaf bytes or its JSON value); check the device's signature."""
    try:
        raw = parse_json_strict(entry) if isinstance(entry, bytes) else entry
        record = SignedRecord.model_validate(raw)
        verify_record_signature(record)
    except (ValueError, StatementError) as exc:  # pydantic's ValidationError is a ValueError
        raise EntryError(
            f"a log entry is not a valid signed record: {exc}", reason=str(exc)
        ) from None
    return record


def verify_tree(tree: MerkleTree, checkpoint: Checkpoint) -> None:
    """Raise unless the tree's first ``checkpoint.size`` leaves hash to the signed root."""
    if checkpoint.size > tree.size:
        raise VerificationError(
            f"the checkpoint is signed for {checkpoint.size} entries but {tree.size} are known"
        )
    if not hmac.compare_digest(tree.root(checkpoint.size), checkpoint.root_hash):
        raise VerificationError("the entries do not hash to the checkpoint's root")


def verify_entries(entries: Sequence[object], checkpoint: Checkpoint) -> tuple[SignedRecord, ...]:
    """Check a whole log against its signed checkpoint; return the verified records."""
    if len(entries) != checkpoint.size:
        raise VerificationError(
            f"the log served {len(entries)} entries for a checkpoint of {checkpoint.size}"
        )
    records = tuple(signed_record(entry) for entry in entries)
    verify_tree(MerkleTree(record_leaf_hash(record) for record in records), checkpoint)
    return records


def verify_receipt(receipt: Receipt, *, record: SignedRecord, verifier: NoteVerifier) -> Checkpoint:
    """Check a receipt proves the log holds exactly ``record``; return its checkpoint.

    The checkpoint must be signed by ``verifier``'s key, name the receipt's tree size,
    and its root must be reached from the leaf of ``record`` by the inclusion proof;
    the receipt's device, notice and decision must be the statement's.
    """
    checkpoint = open_signed_checkpoint(receipt.checkpoint, verifier)
    if checkpoint.size != receipt.tree_size:
        raise VerificationError("the receipt's tree size is not its checkpoint's")
    leaf_hash = record_leaf_hash(record)
    try:
        claimed = b64decode(receipt.leaf_hash)
        proof = [b64decode(h) for h in receipt.inclusion_proof]
    except ValueError as exc:
        raise VerificationError(f"the receipt is malformed: {exc}", reason=str(exc)) from None
    if claimed != leaf_hash:
        raise VerificationError("the receipt is for a different record than the one sent")
    try:
        verify_inclusion(
            index=receipt.index,
            size=checkpoint.size,
            leaf_hash=leaf_hash,
            proof=proof,
            root=checkpoint.root_hash,
        )
    except ProofError as exc:
        raise InclusionError(
            f"the inclusion proof does not verify: {exc}", reason=str(exc)
        ) from None
    s = record.statement
    decided = [(d.purpose, d.action) for d in receipt.purposes]
    if (
        receipt.pii_principal_id != s.device_key
        or receipt.notice_sha256 != s.notice_sha256
        or decided != [(s.purpose, s.action)]
    ):
        raise VerificationError("the receipt's fields do not match the statement signed")
    return checkpoint


def verify_append_only(old: Checkpoint, new: Checkpoint, proof: ConsistencyProof) -> None:
    """Raise :class:`ConsistencyError` unless ``new`` extends ``old`` (RFC 9162 2.1.4.2)."""
    try:
        if old.origin != new.origin:
            raise ProofError(f"the checkpoints are of two logs, {old.origin} and {new.origin}")
        if (proof.old, proof.new) != (old.size, new.size):
            raise ProofError(
                f"the proof is for sizes {proof.old} to {proof.new}, not {old.size} to {new.size}"
            )
        verify_consistency(
            old_size=old.size,
            new_size=new.size,
            old_root=old.root_hash,
            new_root=new.root_hash,
            proof=[b64decode(h) for h in proof.proof],
        )
    except ValueError as exc:  # ProofError, or a hash that is not base64
        raise ConsistencyError(
            f"checkpoint {new.size} does not extend checkpoint {old.size}: {exc}", reason=str(exc)
        ) from None


def verify_cosignatures(
    note: str, witnesses: Sequence[CosignatureVerifier], *, quorum: int
) -> tuple[Cosignature, ...]:
    """The known witnesses' verified cosignatures on a checkpoint note, at least ``quorum``.

    Lines by unknown keys are ignored; a line by a known witness that does not verify
    rejects the note (:class:`BadCosignatureError`); too few known witnesses raise
    :class:`WitnessQuorumError`. A witness listed twice counts once.
    """
    try:
        text, lines = split_note(note)
    except NoteError as exc:
        raise CheckpointError(f"the checkpoint is malformed: {exc}", reason=str(exc)) from None
    found: dict[tuple[str, bytes], Cosignature] = {}
    for witness in witnesses:
        try:
            cosignature = witness.find(text, lines)
        except NoteError as exc:
            raise BadCosignatureError(
                f"the checkpoint's witness cosignature does not verify: {exc}", reason=str(exc)
            ) from None
        if cosignature is not None:
            found[(cosignature.name, cosignature.key_id)] = cosignature
    if len(found) < quorum:
        known = ", ".join(sorted({w.name for w in witnesses})) or "none"
        raise WitnessQuorumError(
            f"the checkpoint carries {len(found)} of the {quorum} witness cosignatures "
            f"required (known witnesses: {known})",
            found=len(found),
            required=quorum,
        )
    return tuple(found.values())


def open_witnessed_checkpoint(
    note: str,
    verifier: NoteVerifier,
    witnesses: Sequence[CosignatureVerifier],
    *,
    quorum: int,
) -> tuple[Checkpoint, tuple[Cosignature, ...]]:
    """The checkpoint a note vouches for, signed by the log and cosigned by ``quorum`` witnesses."""
    checkpoint = open_signed_checkpoint(note, verifier)
    return checkpoint, verify_cosignatures(note, witnesses, quorum=quorum)

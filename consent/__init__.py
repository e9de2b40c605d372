"""The consent ledger: signed statements in an append-only, verifiable Merkle log.

The verification half (``merkle``, ``note``, ``statement``, ``verify``), the wire models
(``models``) and the domain errors (``errors``) import no web or database code, so a
device can ``from consent import verify_receipt, Receipt`` cheaply; the service half
(``create_app``, ``Ledger``, ``audit_log``, the settings) is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consent.encoding import b64decode, b64encode, b64url_decode, b64url_encode
from consent.errors import (
    ClockSkewError,
    ConflictError,
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
)
from consent.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    ProofError,
    hash_children,
    hash_leaf,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from consent.models import (
    ConsistencyProof,
    Controller,
    DeviceState,
    EligibilityRequest,
    EligibilityResponse,
    InclusionProof,
    PurposeDecision,
    PurposeState,
    Receipt,
)
from consent.note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    format_checkpoint,
    open_checkpoint,
    parse_checkpoint,
)
from consent.statement import (
    SignedRecord,
    Statement,
    StatementError,
    canonical_record,
    canonical_statement,
    format_time,
    parse_time,
    verify_record_signature,
)
from consent.verify import (
    CheckpointError,
    ConsistencyError,
    EntryError,
    InclusionError,
    VerificationError,
    open_signed_checkpoint,
    record_leaf_hash,
    signed_record,
    verify_append_only,
    verify_entries,
    verify_receipt,
    verify_tree,
)

if TYPE_CHECKING:
    from consent.api import create_app
    from consent.audit import AuditReport, audit_log
    from consent.ledger import Ledger
    from consent.settings import ConsentSettings, Policy

_LAZY = {
    "create_app": "consent.api",
    "AuditReport": "consent.audit",
    "audit_log": "consent.audit",
    "Ledger": "consent.ledger",
    "ConsentSettings": "consent.settings",
    "Policy": "consent.settings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'consent' has no attribute {name!r}")


__all__ = [
    "EMPTY_ROOT",
    "AuditReport",
    "Checkpoint",
    "CheckpointError",
    "ClockSkewError",
    "ConflictError",
    "ConsentSettings",
    "ConsistencyError",
    "ConsistencyProof",
    "Controller",
    "DeviceState",
    "EligibilityRequest",
    "EligibilityResponse",
    "EntryError",
    "InclusionError",
    "InclusionProof",
    "InvalidInputError",
    "KeyFileError",
    "Ledger",
    "LedgerError",
    "LogIntegrityError",
    "MalformedInputError",
    "MerkleTree",
    "NoteError",
    "NoteSigner",
    "NoteVerifier",
    "OutOfRangeError",
    "Policy",
    "ProofError",
    "PurposeDecision",
    "PurposeState",
    "Receipt",
    "ReplayedNonceError",
    "SignatureError",
    "SignedRecord",
    "StaleStatementError",
    "Statement",
    "StatementError",
    "StorageUnavailableError",
    "UnknownPolicyError",
    "UnknownPurposeError",
    "VerificationError",
    "audit_log",
    "b64decode",
    "b64encode",
    "b64url_decode",
    "b64url_encode",
    "canonical_record",
    "canonical_statement",
    "create_app",
    "format_checkpoint",
    "format_time",
    "hash_children",
    "hash_leaf",
    "open_checkpoint",
    "open_signed_checkpoint",
    "parse_checkpoint",
    "parse_time",
    "record_leaf_hash",
    "root_from_inclusion_proof",
    "signed_record",
    "verify_append_only",
    "verify_consistency",
    "verify_entries",
    "verify_inclusion",
    "verify_receipt",
    "verify_record_signature",
    "verify_tree",
]

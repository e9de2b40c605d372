"""The consent ledger: signed statements in an append-only, verifiable Merkle log.

The verification half (``merkle``, ``note``, ``statement``) imports no web or
database code, so a device can ``from consent import verify_inclusion`` cheaply;
the service half is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consent.encoding import b64decode, b64encode, b64url_decode, b64url_encode
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

if TYPE_CHECKING:
    from consent.api import create_app
    from consent.audit import AuditReport, audit_log
    from consent.ledger import Ledger, LedgerError
    from consent.settings import ConsentSettings, Policy

_LAZY = {
    "create_app": "consent.api",
    "AuditReport": "consent.audit",
    "audit_log": "consent.audit",
    "Ledger": "consent.ledger",
    "LedgerError": "consent.ledger",
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
    "ConsentSettings",
    "Ledger",
    "LedgerError",
    "MerkleTree",
    "NoteError",
    "NoteSigner",
    "NoteVerifier",
    "Policy",
    "ProofError",
    "SignedRecord",
    "Statement",
    "StatementError",
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
    "parse_checkpoint",
    "parse_time",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
    "verify_record_signature",
]

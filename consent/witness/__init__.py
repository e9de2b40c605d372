"""A transparency-log witness (C2SP tlog-witness, tlog-cosignature) and the log's client of it.

A witness cosigns a log's checkpoint only when it is consistent with the last one it
cosigned for that log, so a log that rolls back or forks is refused by every witness
that saw its past. The wire format and cosignatures (``protocol``, ``cosignature``) are
pure and light, for devices; the witness service (``Witness``, ``create_witness_app``,
its store and settings) and the log's client (``Witnessing``, ``WitnessClient``) are
loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consent.witness.cosignature import (
    COSIGNATURE_V1,
    Cosignature,
    CosignatureError,
    CosignatureSigner,
    CosignatureVerifier,
    cosignature_key_id,
    cosigned_message,
    split_note,
    verify_log_signatures,
)
from consent.witness.errors import (
    ConflictingSizeError,
    InconsistentCheckpointError,
    MalformedRequestError,
    UnknownLogError,
    UntrustedCheckpointError,
    WitnessError,
)
from consent.witness.protocol import (
    TLOG_SIZE,
    AddCheckpoint,
    ProtocolError,
    format_add_checkpoint,
    format_size,
    origin_hash,
    parse_add_checkpoint,
    parse_size,
)

if TYPE_CHECKING:
    from consent.witness.app import create_witness_app, witness_from_settings
    from consent.witness.client import (
        CosignedCheckpoint,
        WitnessAheadError,
        WitnessClient,
        WitnessClientError,
        Witnessing,
        WitnessRefusedError,
        WitnessUnreachableError,
        append_cosignatures,
        fetch_witness_checkpoint,
        http_checkpoint_source,
        http_proof_source,
        proof_source,
    )
    from consent.witness.keys import WitnessKeyError, load_or_create_witness_key
    from consent.witness.settings import WitnessSettings
    from consent.witness.store import WitnessStore
    from consent.witness.witness import Witness

_LAZY = {
    "create_witness_app": "consent.witness.app",
    "witness_from_settings": "consent.witness.app",
    "CosignedCheckpoint": "consent.witness.client",
    "WitnessAheadError": "consent.witness.client",
    "WitnessClient": "consent.witness.client",
    "WitnessClientError": "consent.witness.client",
    "WitnessRefusedError": "consent.witness.client",
    "WitnessUnreachableError": "consent.witness.client",
    "Witnessing": "consent.witness.client",
    "append_cosignatures": "consent.witness.client",
    "fetch_witness_checkpoint": "consent.witness.client",
    "http_checkpoint_source": "consent.witness.client",
    "http_proof_source": "consent.witness.client",
    "proof_source": "consent.witness.client",
    "WitnessKeyError": "consent.witness.keys",
    "load_or_create_witness_key": "consent.witness.keys",
    "WitnessSettings": "consent.witness.settings",
    "WitnessStore": "consent.witness.store",
    "Witness": "consent.witness.witness",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'consent.witness' has no attribute {name!r}")


__all__ = [
    "COSIGNATURE_V1",
    "TLOG_SIZE",
    "AddCheckpoint",
    "ConflictingSizeError",
    "Cosignature",
    "CosignatureError",
    "CosignatureSigner",
    "CosignatureVerifier",
    "CosignedCheckpoint",
    "InconsistentCheckpointError",
    "MalformedRequestError",
    "ProtocolError",
    "UnknownLogError",
    "UntrustedCheckpointError",
    "Witness",
    "WitnessAheadError",
    "WitnessClient",
    "WitnessClientError",
    "WitnessError",
    "WitnessKeyError",
    "WitnessRefusedError",
    "WitnessSettings",
    "WitnessStore",
    "WitnessUnreachableError",
    "Witnessing",
    "append_cosignatures",
    "cosignature_key_id",
    "cosigned_message",
    "create_witness_app",
    "fetch_witness_checkpoint",
    "format_add_checkpoint",
    "format_size",
    "http_checkpoint_source",
    "http_proof_source",
    "load_or_create_witness_key",
    "origin_hash",
    "parse_add_checkpoint",
    "parse_size",
    "proof_source",
    "split_note",
    "verify_log_signatures",
    "witness_from_settings",
]

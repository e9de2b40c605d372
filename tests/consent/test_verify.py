"""consent.verify, the one verifier of the audit, the dashboard and the SDK: accepts an
honest log and receipt, rejects every changed one."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from consent.ledger import Ledger
from consent.merkle import MerkleTree, hash_leaf
from consent.models import ConsistencyProof, Receipt
from consent.note import Checkpoint, NoteSigner, NoteVerifier, format_checkpoint
from consent.settings import ConsentSettings
from consent.statement import SignedRecord
from consent.store import migrate
from consent.verify import (
    CheckpointError,
    ConsistencyError,
    EntryError,
    InclusionError,
    VerificationError,
    open_signed_checkpoint,
    verify_append_only,
    verify_entries,
    verify_receipt,
    verify_tree,
)
from tests.consent.signing import Signer

ORIGIN = "moodfed.local/consent-log"
LOG_KEY = NoteSigner(ORIGIN, nacl.signing.SigningKey.generate())
VERIFIER = NoteVerifier(LOG_KEY.verifier_key)


def leaves(n: int, tag: bytes = b"") -> list[bytes]:
    return [hash_leaf(tag + i.to_bytes(4, "big")) for i in range(n)]


def signed(tree: MerkleTree, size: int) -> Checkpoint:
    note = LOG_KEY.sign(format_checkpoint(Checkpoint(ORIGIN, size, tree.root(size))))
    return open_signed_checkpoint(note, VERIFIER)


def b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 40), data=st.data())
def test_a_tree_matches_its_checkpoints_and_no_changed_tree_does(size: int, data: Any) -> None:
    hashes = leaves(size)
    tree = MerkleTree(hashes)
    at = data.draw(st.integers(1, size), label="checkpoint size")
    verify_tree(tree, signed(tree, at))
    changed = data.draw(st.integers(0, at - 1), label="changed leaf")
    forged = MerkleTree([*hashes[:changed], hash_leaf(b"forged"), *hashes[changed + 1 :]])
    with pytest.raises(VerificationError, match="do not hash to the checkpoint's root"):
        verify_tree(forged, signed(tree, at))


@settings(max_examples=60, deadline=None)
@given(new=st.integers(0, 40), data=st.data())
def test_every_honest_extension_verifies_and_a_fork_does_not(new: int, data: Any) -> None:
    old = data.draw(st.integers(0, new), label="old size")
    tree = MerkleTree(leaves(new))
    proof = ConsistencyProof(old=old, new=new, proof=b64(tree.consistency_proof(old, new)))
    verify_append_only(signed(tree, old), signed(tree, new), proof)
    if old == 0:
        return  # every log extends the empty one
    fork = MerkleTree(leaves(new, tag=b"fork"))
    forked = ConsistencyProof(old=old, new=new, proof=b64(fork.consistency_proof(old, new)))
    with pytest.raises(ConsistencyError):
        verify_append_only(signed(tree, old), signed(fork, new), forked)


def test_a_proof_for_other_sizes_is_not_accepted() -> None:
    tree = MerkleTree(leaves(8))
    proof = ConsistencyProof(old=3, new=8, proof=b64(tree.consistency_proof(3, 8)))
    with pytest.raises(ConsistencyError, match="sizes 3 to 8, not 4 to 8"):
        verify_append_only(signed(tree, 4), signed(tree, 8), proof)


def signed_log(n: int) -> tuple[list[dict[str, Any]], Checkpoint]:
    records = [Signer().record("grant") for _ in range(n)]
    tree = MerkleTree(hash_leaf(rfc8785.dumps(r)) for r in records)
    return records, signed(tree, n)


def test_an_honest_log_verifies_into_its_records() -> None:
    records, checkpoint = signed_log(5)
    verified = verify_entries(records, checkpoint)
    assert verified == tuple(SignedRecord.model_validate(r) for r in records)


def test_a_log_missing_an_entry_is_rejected() -> None:
    records, checkpoint = signed_log(5)
    with pytest.raises(VerificationError, match="served 4 entries for a checkpoint of 5"):
        verify_entries(records[:4], checkpoint)


def test_a_log_with_a_changed_entry_is_rejected() -> None:
    records, checkpoint = signed_log(5)
    records[2]["statement"]["action"] = "withdraw"
    with pytest.raises(EntryError, match="signature does not verify"):
        verify_entries(records, checkpoint)


def test_a_log_in_another_order_is_rejected() -> None:
    records, checkpoint = signed_log(5)
    records[1], records[3] = records[3], records[1]
    with pytest.raises(VerificationError, match="do not hash to the checkpoint's root"):
        verify_entries(records, checkpoint)


def test_a_checkpoint_signed_by_another_key_is_rejected() -> None:
    tree = MerkleTree(leaves(3))
    other = NoteSigner(ORIGIN, nacl.signing.SigningKey.generate())
    note = other.sign(format_checkpoint(Checkpoint(ORIGIN, 3, tree.root())))
    with pytest.raises(CheckpointError, match="does not verify") as refused:
        open_signed_checkpoint(note, VERIFIER)
    assert "no signature by" in refused.value.reason


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    migrate(url)
    ledger = Ledger(ConsentSettings(data_dir=tmp_path, database_url=url))
    yield ledger
    ledger.close()


def receipt_for(ledger: Ledger, record: dict[str, Any]) -> Receipt:
    [receipt] = ledger.append_batch([ledger.accept(rfc8785.dumps(record))])
    assert isinstance(receipt, Receipt)
    return receipt


def test_a_receipt_proves_exactly_the_record_sent(ledger: Ledger) -> None:
    for _ in range(3):
        receipt_for(ledger, Signer().record("grant"))
    record = Signer().record("grant")
    receipt = receipt_for(ledger, record)
    verifier = NoteVerifier(ledger.verifier_key)
    checkpoint = verify_receipt(
        receipt, record=SignedRecord.model_validate(record), verifier=verifier
    )
    assert (checkpoint.size, checkpoint.origin) == (4, ORIGIN)

    other = SignedRecord.model_validate(Signer().record("grant"))
    with pytest.raises(VerificationError, match="different record than the one sent"):
        verify_receipt(receipt, record=other, verifier=verifier)
    moved = receipt.model_copy(update={"index": 1})
    with pytest.raises(InclusionError, match="does not lead to the root"):
        verify_receipt(moved, record=SignedRecord.model_validate(record), verifier=verifier)
    resized = receipt.model_copy(update={"tree_size": 3})
    with pytest.raises(VerificationError, match="tree size is not its checkpoint's"):
        verify_receipt(resized, record=SignedRecord.model_validate(record), verifier=verifier)
    with pytest.raises(CheckpointError):
        verify_receipt(receipt, record=SignedRecord.model_validate(record), verifier=VERIFIER)

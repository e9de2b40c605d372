"""C2SP signed notes and checkpoints, against the Go sumdb/note published example."""

from __future__ import annotations

import base64

import nacl.signing
import pytest

from consent.merkle import EMPTY_ROOT
from consent.note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    format_checkpoint,
    open_checkpoint,
    parse_checkpoint,
)

# golang.org/x/mod/sumdb/note: the package documentation's example key pair and note.
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def go_signer() -> NoteSigner:
    seed = base64.b64decode(GO_SIGNER_KEY.split("+", 4)[4])[1:]
    return NoteSigner("PeterNeumann", nacl.signing.SigningKey(seed))


def test_signing_reproduces_the_published_go_note_byte_for_byte() -> None:
    signer = go_signer()
    assert signer.verifier_key == GO_VERIFIER_KEY
    assert signer.sign(GO_TEXT) == GO_NOTE


def test_the_published_go_note_verifies() -> None:
    assert NoteVerifier(GO_VERIFIER_KEY).open(GO_NOTE) == GO_TEXT


@pytest.mark.parametrize(
    "tampered",
    [
        GO_NOTE.replace("cryptography", "cryptographY"),
        GO_NOTE.replace("x08go", "x08gp"),
        GO_NOTE.replace("\n\n—", "\n—"),
        GO_NOTE.rstrip("\n"),
        GO_NOTE.replace("PeterNeumann x", "PeterNeuman x"),  # unknown key only: nothing verifies
        GO_NOTE
        + "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAA=\n",
        GO_NOTE.replace("problem,", "problem,\x07"),
    ],
)
def test_any_change_to_a_signed_note_is_rejected(tampered: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier(GO_VERIFIER_KEY).open(tampered)


def test_signatures_by_unknown_keys_are_ignored() -> None:
    other = NoteSigner("someone.else/log", nacl.signing.SigningKey.generate())
    cosigned = GO_NOTE + other.sign(GO_TEXT).split("\n\n", 1)[1]
    assert NoteVerifier(GO_VERIFIER_KEY).open(cosigned) == GO_TEXT


@pytest.mark.parametrize(
    "key",
    [
        GO_VERIFIER_KEY.replace("c74f20a3", "c74f20a4"),  # wrong key id
        GO_VERIFIER_KEY.replace("+ARpc", "+AhRpc"),  # wrong algorithm byte
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        GO_VERIFIER_KEY[:-4],
    ],
)
def test_malformed_verifier_keys_are_rejected(key: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier(key)


def test_checkpoint_round_trips_through_a_signed_note() -> None:
    signer = NoteSigner("moodfed.test/log", nacl.signing.SigningKey.generate())
    checkpoint = Checkpoint("moodfed.test/log", 7, EMPTY_ROOT)
    body = format_checkpoint(checkpoint)
    assert body == f"moodfed.test/log\n7\n{base64.b64encode(EMPTY_ROOT).decode()}\n"
    note = signer.sign(body)
    assert open_checkpoint(note, NoteVerifier(signer.verifier_key)) == checkpoint
    with pytest.raises(NoteError, match="expected"):
        open_checkpoint(note, NoteVerifier(signer.verifier_key), origin="another/log")


@pytest.mark.parametrize(
    "body",
    [
        "log\n",
        "log\nseven\nAAAA\n",
        "log\n07\n" + base64.b64encode(EMPTY_ROOT).decode() + "\n",
        "log\n7\nAAAA\n",
        "\n7\n" + base64.b64encode(EMPTY_ROOT).decode() + "\n",
    ],
)
def test_malformed_checkpoints_are_rejected(body: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint(body)

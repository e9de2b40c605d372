"""C2SP tlog-cosignature v1 with Ed25519 (signature type 0x04), with no I/O.

A witness's cosignature is one more signed-note signature line on a checkpoint:
``— <name> base64(key ID || timestamp || signature)``, where the key ID is
``SHA-256(name || 0x0A || 0x04 || public key)[:4]``, the timestamp is a big-endian u64 of
POSIX seconds, and the Ed25519 signature is over ``cosignature/v1\\n``, ``time <t>\\n``
and the checkpoint's whole note text. Unlike the log's own note signature it says
*when*, and that the witness saw nothing inconsistent with it up to then.

Shared by the witness (which signs), the log (which checks what witnesses answer) and
the device SDK (which counts known witnesses on a checkpoint).

>>> root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
>>> text = f"example.com/behind-the-sofa\\n20852163\\n{root}\\n"
>>> print(cosigned_message(text, 1679315147).decode(), end="")
cosignature/v1
time 1679315147
example.com/behind-the-sofa
20852163
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from consent.encoding import b64decode, b64encode
from consent.note import (
    NoteError,
    NoteVerifier,
    check_key_name,
    parse_verifier_key,
    split_signature_lines,
)

__all__ = [
    "COSIGNATURE_V1",
    "MAX_TIMESTAMP",
    "Cosignature",
    "CosignatureError",
    "CosignatureSigner",
    "CosignatureVerifier",
    "SignatureLine",
    "cosignature_key_id",
    "cosigned_message",
    "split_note",
    "verify_log_signatures",
]

COSIGNATURE_V1 = b"\x04"
MAX_TIMESTAMP = (1 << 63) - 1
_HEADER = b"cosignature/v1\n"
_BLOB = 4 + 8 + 64  # key ID, timestamp, Ed25519 signature


class CosignatureError(NoteError):
    """A cosignature, or a witness's verifier key, is malformed or does not verify."""


@dataclass(frozen=True, slots=True)
class SignatureLine:
    """One ``— <name> <base64>`` line of a signed note, decoded."""

    name: str
    key_id: bytes
    signature: bytes  # what follows the key ID
    line: str  # the line as written, newline included


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A verified cosignature: which witness, and when it vouched for the checkpoint."""

    name: str
    key_id: bytes
    timestamp: int
    line: str


def cosignature_key_id(name: str, public_key: bytes) -> bytes:
    """``SHA-256(name || "\\n" || 0x04 || public key)[:4]``: the key ID of an Ed25519 cosigner."""
    return hashlib.sha256(name.encode() + b"\n" + COSIGNATURE_V1 + public_key).digest()[:4]


def cosigned_message(text: str, timestamp: int) -> bytes:
    """The bytes a witness signs: the header line, the time line, then the note text."""
    if not text.endswith("\n"):
        raise CosignatureError("a checkpoint's note text ends with a newline")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CosignatureError(f"a cosignature's timestamp is 0..2^63-1, not {timestamp}")
    return _HEADER + f"time {timestamp}\n".encode() + text.encode()


def split_note(note: str) -> tuple[str, list[SignatureLine]]:
    """A signed note's text (final newline included) and its decoded signature lines.

    The form is read by :func:`consent.note.split_signature_lines`, as for the log's own
    signature; here every line must also decode to at least a key ID.
    """
    text, found = split_signature_lines(note)
    lines = []
    for name, blob in found:
        try:
            raw = b64decode(blob)
        except ValueError:
            raise NoteError(f"a signature by {name} is not base64") from None
        if len(raw) < 4:
            raise NoteError(f"a signature by {name} is too short to hold a key ID")
        lines.append(SignatureLine(name, raw[:4], raw[4:], f"— {name} {blob}\n"))
    return text, lines


def verify_log_signatures(note: str, verifiers: Sequence[NoteVerifier]) -> str:
    """The note's text if at least one trusted log key signed it and none failed.

    Signatures by other keys (witnesses included) are ignored; a line that names a
    trusted key but does not verify rejects the note (C2SP signed-note).
    """
    text, lines = split_note(note)
    verified = 0
    for verifier in verifiers:
        if any(ln.name == verifier.name and ln.key_id == verifier.key_id for ln in lines):
            verifier.open(note)  # raises NoteError when that signature does not verify
            verified += 1
    if not verified:
        names = ", ".join(sorted({v.name for v in verifiers})) or "no key"
        raise NoteError(f"the note has no signature by a trusted key ({names})")
    return text


class CosignatureSigner:
    """A witness's Ed25519 key, signing cosignature/v1 lines."""

    def __init__(self, name: str, signing_key: nacl.signing.SigningKey) -> None:
        check_key_name(name, error=CosignatureError)
        self.name = name
        self._key = signing_key
        self.public_key = bytes(signing_key.verify_key)
        self.key_id = cosignature_key_id(name, self.public_key)
        self.verifier_key = (
            f"{name}+{self.key_id.hex()}+{b64encode(COSIGNATURE_V1 + self.public_key)}"
        )

    def cosign(self, text: str, *, timestamp: int) -> str:
        """The signature line cosigning note ``text`` at ``timestamp`` (never zero)."""
        if timestamp == 0:
            raise CosignatureError("a witness's cosignature never has a zero timestamp")
        signature = self._key.sign(cosigned_message(text, timestamp)).signature
        blob = self.key_id + timestamp.to_bytes(8, "big") + signature
        return f"— {self.name} {b64encode(blob)}\n"


class CosignatureVerifier:
    """Checks one witness's cosignature; built from its vkey ``name+keyid+base64(0x04||key)``."""

    def __init__(self, verifier_key: str) -> None:
        self.name, self.key_id, self.public_key = parse_verifier_key(
            verifier_key,
            key_type=COSIGNATURE_V1,
            label="witness verifier key",
            kind="cosignature/v1 key (type 0x04)",
            error=CosignatureError,
        )
        self.verifier_key = verifier_key
        self._key = nacl.signing.VerifyKey(self.public_key)

    def find(self, text: str, lines: Sequence[SignatureLine]) -> Cosignature | None:
        """This witness's cosignature among ``lines`` on note ``text``; None if it has none.

        A line with this witness's name and key ID that does not verify raises: a
        note carrying a bad signature by a known key is rejected whole.
        """
        found = None
        for line in lines:
            if line.name != self.name or line.key_id != self.key_id:
                continue
            if len(line.signature) != _BLOB - 4:
                raise CosignatureError(f"the cosignature by {self.name} has the wrong length")
            timestamp = int.from_bytes(line.signature[:8], "big")
            try:
                self._key.verify(cosigned_message(text, timestamp), line.signature[8:])
            except (nacl.exceptions.BadSignatureError, ValueError):
                raise CosignatureError(f"the cosignature by {self.name} does not verify") from None
            found = found or Cosignature(self.name, self.key_id, timestamp, line.line)
        return found

    def open(self, note: str) -> Cosignature:
        """This witness's verified cosignature on a signed note; raise if it has none."""
        text, lines = split_note(note)
        found = self.find(text, lines)
        if found is None:
            raise CosignatureError(f"the note has no cosignature by {self.name}")
        return found

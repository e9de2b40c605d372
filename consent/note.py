"""C2SP signed notes (Ed25519) and tlog-checkpoint bodies, with no I/O.

The log signs each checkpoint as a signed note; devices and auditors verify it
against the log's published verifier key (``name+keyid+base64(0x01||pubkey)``).
Shared by the service, the audit command and the device SDK.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from consent.encoding import b64decode, b64encode

__all__ = [
    "Checkpoint",
    "NoteError",
    "NoteSigner",
    "NoteVerifier",
    "check_key_name",
    "format_checkpoint",
    "open_checkpoint",
    "parse_checkpoint",
    "parse_verifier_key",
    "split_signature_lines",
]

_ED25519 = b"\x01"
_MAX_NOTE = 1 << 16  # room for far more than the 16 signatures the spec asks
_NAME = re.compile(r"[^\s+]+")
_SIGNATURE_LINE = re.compile(r"— (\S+) ([A-Za-z0-9+/=]+)\n")


class NoteError(ValueError):
    """A note, checkpoint or key is malformed or its signature does not verify."""


def split_signature_lines(note: str) -> tuple[str, list[tuple[str, str]]]:
    """A signed note's text (final newline included) and its ``(name, base64)`` lines.

    Checks the form only: a bounded size, no control characters but newlines, the text,
    the last blank line, then one or more well-formed signature lines and nothing else.
    What the signatures hold is for the caller (a log key, a witness's cosignature).
    """
    if len(note) > _MAX_NOTE:
        raise NoteError("the note is too large")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("the note contains control characters")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("a signed note is text, a blank line, then signature lines")
    text, signatures = note[: split + 1], note[split + 2 :]
    lines = _SIGNATURE_LINE.findall(signatures)
    if not lines or "".join(f"— {n} {s}\n" for n, s in lines) != signatures:
        raise NoteError("the note's signature lines are malformed")
    return text, lines


def _key_id(name: str, public_key: bytes, key_type: bytes = _ED25519) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + key_type + public_key).digest()[:4]


def check_key_name(name: str, *, error: type[NoteError] = NoteError) -> None:
    """Raise ``error`` unless ``name`` is a signed-note key name: no spaces, no '+'."""
    if not _NAME.fullmatch(name):
        raise error(f"key name {name!r} must be non-empty, with no spaces or '+'")


def parse_verifier_key(
    verifier_key: str,
    *,
    key_type: bytes = _ED25519,
    label: str = "verifier key",
    kind: str = "signed-note key",
    error: type[NoteError] = NoteError,
) -> tuple[str, bytes, bytes]:
    """The name, key ID and Ed25519 public key of a vkey ``name+keyid+base64(type||key)``.

    The one reader of C2SP verifier keys: the log's (``key_type`` 0x01) here, a
    witness's (0x04, tlog-cosignature) in :mod:`consent.witness.cosignature`, whose
    messages say "witness verifier key" (``label``) and name the key ``kind``. Raises
    ``error`` when the form, the type byte, the length or the key ID is wrong.
    """
    parts = verifier_key.split("+", 2)
    if len(parts) != 3:
        raise error(f"a {label} has the form name+keyid+base64key")
    name, key_id_hex, material = parts
    check_key_name(name, error=error)
    try:
        raw = b64decode(material)
        key_id = bytes.fromhex(key_id_hex)
    except ValueError as exc:
        raise error(f"{label} is malformed: {exc}") from None
    if len(key_id_hex) != 8 or len(raw) != 33 or raw[:1] != key_type:
        raise error(f"{label} is not an Ed25519 {kind}")
    if _key_id(name, raw[1:], key_type) != key_id:
        raise error(f"{label}'s id does not match its name and key")
    return name, key_id, raw[1:]


class NoteVerifier:
    """Checks one Ed25519 key's signature on a signed note."""

    def __init__(self, verifier_key: str) -> None:
        self.name, self.key_id, self.public_key = parse_verifier_key(verifier_key)
        self._key = nacl.signing.VerifyKey(self.public_key)

    def open(self, note: str) -> str:
        """Return the note's text if this key signed it; raise :class:`NoteError` otherwise.

        Signatures by other keys are ignored, as the spec asks; a bad signature by
        this key rejects the whole note.
        """
        text, lines = split_signature_lines(note)
        verified = False
        for name, blob in lines:
            try:
                raw = b64decode(blob)
            except ValueError:
                raise NoteError("a note signature is not base64") from None
            if name != self.name or raw[:4] != self.key_id:
                continue
            try:
                self._key.verify(text.encode(), raw[4:])
            except (nacl.exceptions.BadSignatureError, ValueError):
                raise NoteError(f"the signature by {self.name} does not verify") from None
            verified = True
        if not verified:
            raise NoteError(f"the note has no signature by {self.name}")
        return text


class NoteSigner:
    """Signs notes with the log's Ed25519 key."""

    def __init__(self, name: str, signing_key: nacl.signing.SigningKey) -> None:
        check_key_name(name)
        self.name = name
        self._key = signing_key
        public_key = bytes(signing_key.verify_key)
        self.key_id = _key_id(name, public_key)
        self.verifier_key = f"{name}+{self.key_id.hex()}+{b64encode(_ED25519 + public_key)}"

    def sign(self, text: str) -> str:
        if not text.endswith("\n"):
            raise NoteError("note text must end with a newline")
        signature = self._key.sign(text.encode()).signature
        return f"{text}\n— {self.name} {b64encode(self.key_id + signature)}\n"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tlog-checkpoint: the log's origin, its size and its root hash."""

    origin: str
    size: int
    root_hash: bytes


def format_checkpoint(checkpoint: Checkpoint) -> str:
    """The checkpoint body: origin, decimal size and base64 root, one per line."""
    return f"{checkpoint.origin}\n{checkpoint.size}\n{b64encode(checkpoint.root_hash)}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body (extension lines after the root are allowed and ignored)."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint has an origin, a size and a root hash, one per line")
    origin, size, root = lines[0], lines[1], lines[2]
    if not origin or not size.isdigit() or (size != "0" and size.startswith("0")):
        raise NoteError("the checkpoint's origin or size is malformed")
    try:
        root_hash = b64decode(root, length=32)
    except ValueError as exc:
        raise NoteError(f"the checkpoint's root hash is malformed: {exc}") from None
    return Checkpoint(origin=origin, size=int(size), root_hash=root_hash)


def open_checkpoint(note: str, verifier: NoteVerifier, *, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note and return the checkpoint it vouches for."""
    checkpoint = parse_checkpoint(verifier.open(note))
    expected = verifier.name if origin is None else origin
    if checkpoint.origin != expected:
        raise NoteError(f"checkpoint is for log {checkpoint.origin!r}, expected {expected!r}")
    return checkpoint

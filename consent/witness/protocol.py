"""The C2SP tlog-witness wire format, with no I/O: add-checkpoint bodies and size answers.

An add-checkpoint request body is an ``old <size>`` line, zero to 63 consistency proof
lines (one base64 hash each), an empty line, then the signed checkpoint note. A 409
answer is the witness's latest cosigned size and a newline, as ``text/x.tlog.size``; a
200 answer is one or more note signature lines (the cosignatures).

>>> body = format_add_checkpoint(old_size=0, proof=[], note="log\\n0\\nroot\\n\\n— log sig\\n")
>>> body.decode()
'old 0\\n\\nlog\\n0\\nroot\\n\\n— log sig\\n'
>>> parse_add_checkpoint(body).old_size
0
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from consent.encoding import b64decode, b64encode
from consent.merkle import HASH_SIZE

__all__ = [
    "MAX_PROOF_LINES",
    "TLOG_SIZE",
    "AddCheckpoint",
    "ProtocolError",
    "format_add_checkpoint",
    "format_size",
    "origin_hash",
    "parse_add_checkpoint",
    "parse_size",
]

TLOG_SIZE = "text/x.tlog.size"
MAX_PROOF_LINES = 63
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")  # below 10^19: a u64, as every tree size is
_OLD = re.compile(r"old (0|[1-9][0-9]{0,18})")


class ProtocolError(ValueError):
    """A request or answer does not follow the tlog-witness format."""


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """A parsed add-checkpoint request: the size the log thinks the witness holds, the
    consistency proof from it, and the signed checkpoint note (still unverified)."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str


def format_add_checkpoint(*, old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The request body of ``POST <prefix>/add-checkpoint``."""
    if old_size < 0:
        raise ProtocolError("the old size is not negative")
    if len(proof) > MAX_PROOF_LINES:
        raise ProtocolError(f"at most {MAX_PROOF_LINES} consistency proof lines")
    if any(len(h) != HASH_SIZE for h in proof):
        raise ProtocolError(f"each consistency proof hash has {HASH_SIZE} bytes")
    lines = [f"old {old_size}\n", *(f"{b64encode(h)}\n" for h in proof), "\n", note]
    return "".join(lines).encode()


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse an add-checkpoint body strictly; raise :class:`ProtocolError` saying what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("the body is not UTF-8") from None
    head, blank, note = text.partition("\n\n")
    if not blank:
        raise ProtocolError("the body needs an old size line, proof lines, an empty line")
    lines = head.split("\n")
    if not _OLD.fullmatch(lines[0]):
        raise ProtocolError("the first line must be 'old <size>' in decimal with no leading zeroes")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise ProtocolError(f"at most {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for number, line in enumerate(lines[1:], start=1):
        try:
            proof.append(b64decode(line, length=HASH_SIZE))
        except ValueError as exc:
            raise ProtocolError(f"consistency proof line {number} is not a hash: {exc}") from None
    if not note:
        raise ProtocolError("the checkpoint is missing after the empty line")
    return AddCheckpoint(old_size=int(lines[0][4:]), proof=tuple(proof), note=note)


def format_size(size: int) -> str:
    """A ``text/x.tlog.size`` body: the size in decimal and a newline."""
    return f"{size}\n"


def parse_size(body: str) -> int:
    """Read a ``text/x.tlog.size`` body (a 409 answer)."""
    if not body.endswith("\n") or not _SIZE.fullmatch(body[:-1]):
        raise ProtocolError(f"not a tree size line: {body[:40]!r}")
    return int(body[:-1])


def origin_hash(origin: str) -> str:
    """Lowercase hex SHA-256 of a log's origin: its path on a witness's monitoring prefix."""
    return hashlib.sha256(origin.encode()).hexdigest()

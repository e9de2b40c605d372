"""The protocol's two base64 alphabets, decoded strictly.

Log hashes travel in standard base64 (as in C2SP checkpoints); keys, nonces and
signatures in base64url without padding (they travel in URLs). Strict decoding
matters: a lenient decoder would let two spellings name one key.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["b64decode", "b64encode", "b64url_decode", "b64url_encode"]

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """base64url without padding.

    >>> b64url_encode(b"\\xfb\\xff")
    '-_8'
    """
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, length: int | None = None) -> bytes:
    """Decode unpadded base64url; reject padding, other alphabets and non-canonical forms."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:
        raise ValueError("not canonical base64url (stray bits in the last character)")
    if length is not None and len(data) != length:
        raise ValueError(f"decodes to {len(data)} bytes, expected {length}")
    return data


def b64encode(data: bytes) -> str:
    """Standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, *, length: int | None = None) -> bytes:
    """Decode standard padded base64, strictly (no whitespace, no stray characters)."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError) as exc:
        raise ValueError("not standard base64") from exc
    if b64encode(data) != text:
        raise ValueError("not canonical standard base64")
    if length is not None and len(data) != length:
        raise ValueError(f"decodes to {len(data)} bytes, expected {length}")
    return data

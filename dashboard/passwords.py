"""Analyst passwords as argon2id hashes (libsodium's ``crypto_pwhash_str`` through PyNaCl)."""

from __future__ import annotations

import nacl.exceptions
import nacl.pwhash

__all__ = ["hash_password", "verify_password"]


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` in the modular crypt format (``$argon2id$...``).

    Uses libsodium's interactive limits (64 MiB, 2 passes): what a login page can afford.

    >>> verify_password(hash_password("correct horse"), "correct horse")
    True
    """
    if not password:
        raise ValueError("the password must not be empty")
    return nacl.pwhash.argon2id.str(password.encode("utf-8")).decode("ascii")


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches ``password_hash``.

    libsodium recomputes the hash and compares in constant time; a malformed hash or a
    wrong password both answer False, so the caller cannot tell them apart either.

    >>> verify_password(hash_password("a"), "b"), verify_password("not a hash", "a")
    (False, False)
    """
    if not password_hash or not password:
        return False
    try:
        return bool(nacl.pwhash.verify(password_hash.encode("ascii"), password.encode("utf-8")))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
        return False

"""Analyst passwords as argon2id hashes (libsodium's ``crypto_pwhash_str`` through PyNaCl)."""

from __future__ import annotations

import threading
from typing import Final

import nacl.exceptions
import nacl.pwhash

__all__ = ["MAX_CONCURRENT_VERIFICATIONS", "hash_password", "verify_password"]

# Each verification takes 64 MiB: however many sessions submit at once, a process holds
# at most this many (the others wait their turn).
MAX_CONCURRENT_VERIFICATIONS: Final = 2
_verification_slots = threading.BoundedSemaphore(MAX_CONCURRENT_VERIFICATIONS)


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
    wrong password both answer False, so the caller cannot tell them apart either. At
    most :data:`MAX_CONCURRENT_VERIFICATIONS` run at once in a process.

    >>> verify_password(hash_password("a"), "b"), verify_password("not a hash", "a")
    (False, False)
    """
    if not password_hash or not password:
        return False
    try:
        with _verification_slots:
            return bool(nacl.pwhash.verify(password_hash.encode("ascii"), password.encode("utf-8")))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
        return False

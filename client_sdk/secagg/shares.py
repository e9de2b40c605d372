"""Shamir shares of a device's two round secrets, and their encryption to each neighbour.

Sharing is textbook Shamir over the prime field ``GF(p)``, ``p = 2**256 + 297`` (the
least prime above ``2**256``, so any 32-byte secret is one field element): a random
polynomial of degree ``t - 1`` (coefficients from ``secrets``, the OS's CSPRNG) with
the secret as constant term, evaluated at each holder's x-coordinate (its 1-based ring
position); any ``t`` shares rebuild it by Lagrange interpolation at 0, fewer reveal
nothing. This is the one primitive written here rather than taken from a library:
pycryptodome's ``Crypto.Protocol.SecretSharing.Shamir`` (which Flower's
``secure_aggregation.crypto.shamir`` wraps, with PKCS#7 padding that turns a 32-byte
secret into three 16-byte chunks and a thread pool per call) does its ``GF(2**128)``
multiplications bit by bit in pure Python: splitting a device's two secrets among 110
neighbours with ``t = 44`` took 146 ms on this machine and rebuilding one 16-byte chunk
from 44 shares 41 ms (a 500-device round would spend tens of seconds of server time on
interpolation); with Python's integers the same split takes 0.7 ms and rebuilding a
whole 32-byte secret 0.3 ms.

Shares travel to their holder encrypted with ChaCha20-Poly1305 (``cryptography``),
under the per-direction key of :func:`client_sdk.secagg.keys.share_key`, a random
12-byte nonce, and associated data naming the round's context digest, the sender and
the recipient; the plaintext repeats the two node ids, as in Bell et al.

>>> secret = bytes(range(32))
>>> shares = split_secret(secret, threshold=3, xs=[1, 2, 3, 4, 5])
>>> combine_shares([(5, shares[4]), (2, shares[1]), (4, shares[3])], threshold=3) == secret
True
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

__all__ = [
    "CIPHERTEXT_BYTES",
    "PRIME",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "combine_shares",
    "decode_share",
    "decrypt_shares",
    "encode_share",
    "encrypt_shares",
    "split_secret",
]

PRIME: Final = 2**256 + 297
SECRET_BYTES: Final = 32
SHARE_BYTES: Final = 33
_NONCE_BYTES: Final = 12
_ID_BYTES: Final = 8
_AD_LABEL: Final = b"moodfed-secagg-shares-v1"
_PLAINTEXT_BYTES: Final = 2 * _ID_BYTES + 2 * SHARE_BYTES
CIPHERTEXT_BYTES: Final = _NONCE_BYTES + _PLAINTEXT_BYTES + 16
"""Nonce, then the encrypted (sender, recipient, key share, mask share), then the tag."""


def split_secret(secret: bytes, *, threshold: int, xs: Sequence[int]) -> list[int]:
    """Shares of ``secret`` (32 bytes) at the x-coordinates ``xs``; any ``threshold`` rebuild it."""
    if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        raise ValueError("a shared secret is exactly 32 bytes")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share x-coordinates must be distinct and in [1, p)")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be in [1, {len(xs)}]")
    constant = int.from_bytes(secret, "big")
    coefficients = [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        acc = 0
        for coefficient in coefficients:  # Horner, highest degree first, exact integers:
            acc = acc * x + coefficient  # x is small, so one reduction at the end is cheaper
        shares.append((acc * x + constant) % PRIME)
    return shares


@lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    # lambda_j = prod_{m != j} x_m / (x_m - x_j); the products are of small integers
    # (ring positions), so they are exact before one reduction each (a numerator is the
    # product of all xs divided by x_j), and the denominators are inverted together
    # (Montgomery's trick: one modular inverse).
    everything = math.prod(xs)
    numerators = [everything // x % PRIME for x in xs]
    denominators = [
        math.prod([m - x for m in xs[:j]]) * math.prod([m - x for m in xs[j + 1 :]]) % PRIME
        for j, x in enumerate(xs)
    ]
    prefix = [1]
    for value in denominators:
        prefix.append(prefix[-1] * value % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    inverses = [0] * len(xs)
    for j in range(len(xs) - 1, -1, -1):
        inverses[j] = inverse * prefix[j] % PRIME
        inverse = inverse * denominators[j] % PRIME
    return tuple(n * i % PRIME for n, i in zip(numerators, inverses, strict=True))


def combine_shares(points: Sequence[tuple[int, int]], *, threshold: int) -> bytes:
    """Rebuild a 32-byte secret from ``(x, share)`` points (the ``threshold`` lowest x used).

    Raises ``ValueError`` with fewer than ``threshold`` points, repeated x, values out of
    the field, or points that do not rebuild a 32-byte value.
    """
    if threshold < 1 or len(points) < threshold:
        raise ValueError(f"{len(points)} shares cannot rebuild a secret that needs {threshold}")
    chosen = sorted(points)[:threshold]
    xs = tuple(x for x, _ in chosen)
    if len(set(x for x, _ in points)) != len(points) or not all(0 < x < PRIME for x in xs):
        raise ValueError("share x-coordinates must be distinct and in [1, p)")
    if not all(0 <= y < PRIME for _, y in chosen):
        raise ValueError("a share is not a field element")
    value = sum(weight * y for weight, (_, y) in zip(_lagrange_at_zero(xs), chosen, strict=True))
    value %= PRIME
    if value >> (8 * SECRET_BYTES):
        raise ValueError("the shares do not rebuild a 32-byte secret")
    return value.to_bytes(SECRET_BYTES, "big")


def encode_share(value: int) -> bytes:
    """A share as 33 big-endian bytes."""
    return value.to_bytes(SHARE_BYTES, "big")


def decode_share(data: bytes) -> int:
    """Parse :func:`encode_share`'s bytes; ``ValueError`` unless 33 bytes below ``p``."""
    if not isinstance(data, bytes) or len(data) != SHARE_BYTES:
        raise ValueError("a share is exactly 33 bytes")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise ValueError("a share is not a field element")
    return value


def _associated_data(context: bytes, sender: int, recipient: int) -> bytes:
    return _AD_LABEL + context + sender.to_bytes(8, "big") + recipient.to_bytes(8, "big")


def encrypt_shares(
    key: bytes, *, context: bytes, sender: int, recipient: int, key_share: int, mask_share: int
) -> bytes:
    """Encrypt ``sender``'s shares for ``recipient`` (its share of s_sk, then of b)."""
    ids = sender.to_bytes(_ID_BYTES, "big") + recipient.to_bytes(_ID_BYTES, "big")
    plaintext = ids + encode_share(key_share) + encode_share(mask_share)
    nonce = os.urandom(_NONCE_BYTES)
    ad = _associated_data(context, sender, recipient)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, ad)


def decrypt_shares(
    key: bytes, ciphertext: bytes, *, context: bytes, sender: int, recipient: int
) -> tuple[int, int]:
    """The (key share, mask share) ``sender`` encrypted for ``recipient``.

    Raises ``ValueError`` if the ciphertext is the wrong size, does not authenticate
    (another key, round or pair of nodes), or names other nodes inside.
    """
    if len(ciphertext) != CIPHERTEXT_BYTES:
        raise ValueError(f"an encrypted share pair is {CIPHERTEXT_BYTES} bytes")
    nonce, body = ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:]
    try:
        plaintext = ChaCha20Poly1305(key).decrypt(
            nonce, body, _associated_data(context, sender, recipient)
        )
    except InvalidTag:
        raise ValueError(f"the shares from node {sender} do not authenticate") from None
    ids = sender.to_bytes(_ID_BYTES, "big") + recipient.to_bytes(_ID_BYTES, "big")
    if plaintext[: 2 * _ID_BYTES] != ids:
        raise ValueError(f"the shares from node {sender} name other nodes")
    key_share = decode_share(plaintext[2 * _ID_BYTES : 2 * _ID_BYTES + SHARE_BYTES])
    mask_share = decode_share(plaintext[2 * _ID_BYTES + SHARE_BYTES :])
    return key_share, mask_share

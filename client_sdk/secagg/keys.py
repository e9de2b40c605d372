"""Round keys: two X25519 key pairs per device, signed with its device key, and what they derive.

Each device makes, per round, an encryption pair ``c`` (its shares travel to it under a
key agreed with ``c``) and a masking pair ``s`` (its pairwise masks come from ``s``; the
secret half is Shamir-shared so a dropout's masks can be removed). The two public keys
are signed with the device's Ed25519 device key over the round's context digest, so a
neighbour can check them against the key that attested the node in this run.

The signed bytes (:func:`advertisement_payload`) have a fixed layout, not JSON: every
device checks every neighbour's signature each round, and an RFC 8785 pass per
neighbour cost as much as a sixth of the check. The layout starts with the purpose
string and a zero byte, so it can never be taken for anything else the device key signs
(consent statements and attestations are JCS objects, which start with ``{``).

Derivations (HKDF-SHA256, salt = the round's context digest):

- share-encryption key for ``sender -> recipient``: ``info = "moodfed-secagg-share-key-v1"
  || sender || recipient`` (ids as 8-byte big-endian), over ``X25519(c_sk, c_pk')``; one
  key per direction, so the two devices of a pair never encrypt under the same key.
- pairwise mask seed of ``{a, b}``: ``info = "moodfed-secagg-pair-mask-v1" || min || max``,
  over ``X25519(s_sk, s_pk')``.

>>> from client_sdk.keys import DeviceKey
>>> key, c, s = DeviceKey.from_seed(bytes(32)), KeyPair.generate(), KeyPair.generate()
>>> sig = sign_advertisement(key, context=bytes(32), node_id=7, c_pk=c.public, s_pk=s.public)
>>> verify_advertisement(device_key=key.device_key, signature=sig, context=bytes(32),
...                      node_id=7, c_pk=c.public, s_pk=s.public)
True
>>> verify_advertisement(device_key=key.device_key, signature=sig, context=bytes(32),
...                      node_id=8, c_pk=c.public, s_pk=s.public)
False
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client_sdk.keys import DeviceKey
from consent.encoding import b64url_decode

__all__ = [
    "ADVERTISEMENT_PURPOSE",
    "CONTEXT_BYTES",
    "KEY_BYTES",
    "SIGNATURE_BYTES",
    "KeyPair",
    "advertisement_payload",
    "pair_seed",
    "share_key",
    "sign_advertisement",
    "verify_advertisement",
]

ADVERTISEMENT_PURPOSE: Final = "moodfed-secagg-keys-v2"
KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
CONTEXT_BYTES: Final = 32
_ADVERTISEMENT_PREFIX: Final = ADVERTISEMENT_PURPOSE.encode("ascii") + b"\x00"
_SHARE_KEY_INFO: Final = b"moodfed-secagg-share-key-v1"
_PAIR_MASK_INFO: Final = b"moodfed-secagg-pair-mask-v1"


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An X25519 key pair, kept as raw bytes so a session can be serialised."""

    private: bytes = field(repr=False)
    public: bytes = field(init=False)
    _key: X25519PrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.private, bytes) or len(self.private) != KEY_BYTES:
            raise ValueError("an X25519 private key is 32 bytes")
        key = X25519PrivateKey.from_private_bytes(self.private)  # parsed once: it is slow
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "public", key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh pair from the OS's CSPRNG (via OpenSSL)."""
        return cls(X25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        """Rebuild a pair from its 32-byte private key."""
        return cls(private)

    def agree(self, peer_public: bytes) -> bytes:
        """X25519 with ``peer_public``; raises ``ValueError`` for a low-order point."""
        if len(peer_public) != KEY_BYTES:
            raise ValueError("an X25519 public key is 32 bytes")
        return self._key.exchange(X25519PublicKey.from_public_bytes(peer_public))


def advertisement_payload(*, context: bytes, node_id: int, c_pk: bytes, s_pk: bytes) -> bytes:
    """The exact bytes a device signs to advertise its round keys (127 bytes, fixed layout).

    ``"moodfed-secagg-keys-v2" || 0x00 || context (32) || node_id (8, big-endian) || c_pk
    (32) || s_pk (32)``. Every field has a fixed length, so the bytes are unambiguous;
    ``ValueError`` for a field of another length or a node id outside ``[0, 2**64)``.

    >>> len(advertisement_payload(context=bytes(32), node_id=1, c_pk=bytes(32), s_pk=bytes(32)))
    127
    """
    for name, value, size in (
        ("context", context, CONTEXT_BYTES),
        ("c_pk", c_pk, KEY_BYTES),
        ("s_pk", s_pk, KEY_BYTES),
    ):
        if not isinstance(value, bytes) or len(value) != size:
            raise ValueError(f"an advertisement's {name} is {size} bytes")
    if isinstance(node_id, bool) or not isinstance(node_id, int) or not 0 <= node_id < 1 << 64:
        raise ValueError("an advertisement's node id is an integer in [0, 2**64)")
    return _ADVERTISEMENT_PREFIX + context + node_id.to_bytes(8, "big") + c_pk + s_pk


def sign_advertisement(
    device_key: DeviceKey, *, context: bytes, node_id: int, c_pk: bytes, s_pk: bytes
) -> bytes:
    """The device key's 64-byte Ed25519 signature over the advertisement."""
    return device_key.sign(
        advertisement_payload(context=context, node_id=node_id, c_pk=c_pk, s_pk=s_pk)
    )


def verify_advertisement(
    *, device_key: str, signature: bytes, context: bytes, node_id: int, c_pk: bytes, s_pk: bytes
) -> bool:
    """Whether ``signature`` is ``device_key``'s over this round, node and pair of keys."""
    try:
        payload = advertisement_payload(context=context, node_id=node_id, c_pk=c_pk, s_pk=s_pk)
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
            return False
        nacl.signing.VerifyKey(b64url_decode(device_key, length=32)).verify(payload, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def _hkdf(shared: bytes, *, context: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=context, info=info).derive(shared)


def share_key(shared: bytes, *, context: bytes, sender: int, recipient: int) -> bytes:
    """The ChaCha20-Poly1305 key for the shares ``sender`` encrypts to ``recipient``."""
    return _hkdf(
        shared,
        context=context,
        info=_SHARE_KEY_INFO + sender.to_bytes(8, "big") + recipient.to_bytes(8, "big"),
    )


def pair_seed(shared: bytes, *, context: bytes, node_a: int, node_b: int) -> bytes:
    """The 32-byte seed of the pairwise mask between two nodes (symmetric in the pair)."""
    low, high = sorted((node_a, node_b))
    return _hkdf(
        shared,
        context=context,
        info=_PAIR_MASK_INFO + low.to_bytes(8, "big") + high.to_bytes(8, "big"),
    )

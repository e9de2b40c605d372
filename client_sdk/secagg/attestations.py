"""The run attestations a device has verified, so that it checks each one once per run.

A node's attestation record (its device key's Ed25519 signature over the run id, the
node id and the server's nonce, :func:`client_sdk.protocol.verify_attestation`) is made
once per run and never changes in it, while a device meets many of the same neighbours
round after round. A :class:`VerifiedAttestations` remembers, for one run, the SHA-256
of every record that verified: of the run id, the node id, the device key, the signature
and the nonce, each length-prefixed. A record that differs in any of them (another
device key for the same node, another signature, another run) has another digest and is
verified afresh; a record that fails is never remembered. What it saves is the second
and later check of an unchanged record; the signed round keys are still checked against
the attested device key in every round (:func:`client_sdk.secagg.keys.verify_advertisement`).

It lives beside the round's session in the node's ``context.state`` (Flower keeps that
per node and run; a Deployment Engine ClientApp is a new process for every message, so
nothing held in memory would survive), bounded to :data:`MAX_ENTRIES` digests, oldest
forgotten first.

>>> from client_sdk.keys import DeviceKey
>>> from client_sdk.protocol import sign_attestation
>>> from client_sdk.secagg.messages import Attestation
>>> key = DeviceKey.from_seed(bytes(32))
>>> fields = sign_attestation(key, run_id=1, node_id=7, nonce="n0nce")
>>> record = Attestation(nonce="n0nce", **fields)
>>> verified = VerifiedAttestations(run_id=1)
>>> verified.check(node_id=7, attestation=record), len(verified)
(True, 1)
>>> verified.check(node_id=8, attestation=record), len(verified)
(False, 1)
"""

from __future__ import annotations

import hashlib
from typing import Final

from client_sdk.protocol import verify_attestation
from client_sdk.secagg.errors import MessageError
from client_sdk.secagg.messages import Attestation
from client_sdk.secagg.params import check_node_id

__all__ = ["MAX_ENTRIES", "VerifiedAttestations"]

MAX_ENTRIES: Final = 4096
"""At most this many digests are kept (128 KiB): a run rarely has more nodes."""

_DIGEST_BYTES: Final = 32
_LABEL: Final = b"moodfed-verified-attestation-v1\x00"


def _digest(run_id: int, node_id: int, attestation: Attestation) -> bytes:
    parts = [run_id.to_bytes(8, "big"), node_id.to_bytes(8, "big")]
    for text in (attestation.device_key, attestation.signature, attestation.nonce):
        data = text.encode("utf-8")
        parts.append(len(data).to_bytes(4, "big") + data)
    return hashlib.sha256(_LABEL + b"".join(parts)).digest()


class VerifiedAttestations:
    """The digests of the attestation records that verified in one run (module docstring)."""

    __slots__ = ("_digests", "_run_id")

    def __init__(self, *, run_id: int, digests: tuple[bytes, ...] = ()) -> None:
        self._run_id = check_node_id(run_id, "run_id")
        self._digests: dict[bytes, None] = {}
        for digest in digests:
            if not isinstance(digest, bytes) or len(digest) != _DIGEST_BYTES:
                raise MessageError("a verified attestation digest is 32 bytes")
            self._remember(digest)

    @property
    def run_id(self) -> int:
        """The run whose attestations these are."""
        return self._run_id

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, *, node_id: int, attestation: Attestation) -> bool:
        """Whether ``attestation`` is ``node_id``'s valid record of this run.

        Verified with :func:`client_sdk.protocol.verify_attestation` unless this exact
        record (every field) already verified; remembered only when it verifies.
        """
        digest = _digest(self._run_id, node_id, attestation)
        if digest in self._digests:
            return True
        if not verify_attestation(
            device_key=attestation.device_key,
            signature=attestation.signature,
            run_id=self._run_id,
            node_id=node_id,
            nonce=attestation.nonce,
        ):
            return False
        self._remember(digest)
        return True

    def to_bytes(self) -> bytes:
        """The run id (8 bytes, big-endian), then the digests, oldest first."""
        return self._run_id.to_bytes(8, "big") + b"".join(self._digests)

    @classmethod
    def from_bytes(cls, data: bytes) -> VerifiedAttestations:
        """Parse :meth:`to_bytes`; ``MessageError`` if ``data`` is not such bytes."""
        if (
            not isinstance(data, bytes)
            or len(data) < 8
            or (len(data) - 8) % _DIGEST_BYTES
            or (len(data) - 8) // _DIGEST_BYTES > MAX_ENTRIES
        ):
            raise MessageError("not a set of verified attestations")
        body = data[8:]
        return cls(
            run_id=int.from_bytes(data[:8], "big"),
            digests=tuple(body[i : i + _DIGEST_BYTES] for i in range(0, len(body), _DIGEST_BYTES)),
        )

    def _remember(self, digest: bytes) -> None:
        self._digests.pop(digest, None)
        self._digests[digest] = None
        while len(self._digests) > MAX_ENTRIES:
            del self._digests[next(iter(self._digests))]

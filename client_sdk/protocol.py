"""The wire contract between moodfed's ServerApp and ClientApp (a public contract).

Two exchanges, both Flower Message API messages:

1. Identity, once at the start of a run. The server sends ``query.attest`` with a
   ``challenge`` ConfigRecord ``{"nonce"}`` (32 random bytes, base64url). The device
   answers with exactly one ConfigRecord, ``attestation``:
   ``{"device_key", "signature"}``, the signature being Ed25519 over the RFC 8785 (JCS)
   bytes of ``{"run_id": str, "node_id": str, "nonce": str,
   "purpose": "moodfed-attestation-v1"}`` (ids as decimal strings: JSON numbers lose
   precision past 2**53). Binding the run and the node stops a signature from being
   replayed by another node or in another run.
2. Training, each round, to the sampled devices only. The server sends ``train`` with
   ``global-model`` (ArrayRecord, keys ``"0"``..``"n-1"``) and ``train-config``
   (ConfigRecord, :data:`TRAIN_CONFIG_FIELDS`). The device answers with exactly one
   ArrayRecord, ``update``: its clipped update (new weights - global weights, same keys
   and shapes), and nothing else: no loss, no example count. Or it answers with an
   error and no content: :data:`REFUSED` (its own consent record says no, or its own
   DP-SGD budget is spent) or :data:`FAILED` (anything else), each with a fixed reason.

>>> key = DeviceKey.from_seed(bytes(32))
>>> fields = sign_attestation(key, run_id=7, node_id=9, nonce="bm9uY2U")
>>> sorted(fields), verify_attestation(**fields, run_id=7, node_id=9, nonce="bm9uY2U")
(['device_key', 'signature'], True)
>>> verify_attestation(**fields, run_id=7, node_id=10, nonce="bm9uY2U")
False
"""

from __future__ import annotations

import secrets
from typing import Final

import nacl.exceptions
import nacl.signing
import rfc8785

from client_sdk.keys import DeviceKey
from consent.encoding import b64url_decode, b64url_encode

__all__ = [
    "ANALYTICS_CONFIG_RECORD",
    "ANALYTICS_MESSAGE_TYPE",
    "ATTESTATION_FIELDS",
    "ATTESTATION_PURPOSE",
    "ATTESTATION_RECORD",
    "ATTEST_MESSAGE_TYPE",
    "CHALLENGE_RECORD",
    "CONTRIBUTION_RECORD",
    "FAILED",
    "FAILED_REASON",
    "GLOBAL_MODEL_RECORD",
    "REFUSED",
    "REFUSED_REASON",
    "TRAIN_CONFIG_FIELDS",
    "TRAIN_CONFIG_RECORD",
    "TRAIN_MESSAGE_TYPE",
    "UPDATE_RECORD",
    "attestation_payload",
    "new_nonce",
    "sign_attestation",
    "verify_attestation",
]

ATTESTATION_PURPOSE: Final = "moodfed-attestation-v1"
ATTEST_MESSAGE_TYPE: Final = "query.attest"
CHALLENGE_RECORD: Final = "challenge"
ATTESTATION_RECORD: Final = "attestation"
ATTESTATION_FIELDS: Final = ("device_key", "signature")

TRAIN_MESSAGE_TYPE: Final = "train"
GLOBAL_MODEL_RECORD: Final = "global-model"
TRAIN_CONFIG_RECORD: Final = "train-config"
UPDATE_RECORD: Final = "update"
TRAIN_CONFIG_FIELDS: Final = (
    "round",
    "clipping-norm",
    "local-epochs",
    "batch-size",
    "learning-rate",
    "device-noise-multiplier",
    "device-max-grad-norm",
    "device-epsilon-budget",
    "device-delta",
)

ANALYTICS_MESSAGE_TYPE: Final = "query.analytics"
ANALYTICS_CONFIG_RECORD: Final = "analytics-config"
CONTRIBUTION_RECORD: Final = "contributions"
"""One bounded vector per query (named by the query), for the week in the config."""

# Error codes of a device's reply (Flower's own codes are below 100).
REFUSED: Final = 4030
FAILED: Final = 5000
REFUSED_REASON: Final = "the device declined to train (its own consent or privacy budget)"
FAILED_REASON: Final = "the device did not train"

_NONCE_BYTES: Final = 32


def new_nonce() -> str:
    """A fresh server challenge: 32 bytes from the OS's CSPRNG, base64url."""
    return b64url_encode(secrets.token_bytes(_NONCE_BYTES))


def attestation_payload(*, run_id: int, node_id: int, nonce: str) -> bytes:
    """The exact bytes a device signs to claim a node of a run (RFC 8785 JCS)."""
    return rfc8785.dumps(
        {
            "run_id": str(int(run_id)),
            "node_id": str(int(node_id)),
            "nonce": nonce,
            "purpose": ATTESTATION_PURPOSE,
        }
    )


def sign_attestation(key: DeviceKey, *, run_id: int, node_id: int, nonce: str) -> dict[str, str]:
    """The ``attestation`` record's fields: the device key and its signature."""
    signature = key.sign(attestation_payload(run_id=run_id, node_id=node_id, nonce=nonce))
    return {"device_key": key.device_key, "signature": b64url_encode(signature)}


def verify_attestation(
    *, device_key: str, signature: str, run_id: int, node_id: int, nonce: str
) -> bool:
    """Whether ``signature`` is ``device_key``'s over this run, node and nonce."""
    try:
        verify_key = nacl.signing.VerifyKey(b64url_decode(device_key, length=32))
        verify_key.verify(
            attestation_payload(run_id=run_id, node_id=node_id, nonce=nonce),
            b64url_decode(signature, length=64),
        )
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True

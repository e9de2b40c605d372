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
   (ConfigRecord, :class:`TrainConfig`). The device answers with exactly one
   ArrayRecord, ``update``: its clipped update (new weights - global weights, same keys
   and shapes), and nothing else: no loss, no example count. Or it answers with an
   error and no content: :data:`REFUSED` (its own consent record says no, or its own
   DP-SGD budget is spent) or :data:`FAILED` (anything else), each with a fixed reason.
3. Analytics, each week, to the devices eligible for :data:`ANALYTICS_PURPOSE`:
   ``query.analytics`` with ``analytics-config`` (the week and the query specs,
   :func:`client_sdk.queries.queries_to_config`); the device answers with one ArrayRecord,
   ``contributions``: one bounded vector per query, named by the query.

The consent purposes a device grants are defined here too: :data:`TRAINING_PURPOSE` and
:data:`ANALYTICS_PURPOSE`.

>>> key = DeviceKey.from_seed(bytes(32))
>>> fields = sign_attestation(key, run_id=7, node_id=9, nonce="bm9uY2U")
>>> sorted(fields), verify_attestation(**fields, run_id=7, node_id=9, nonce="bm9uY2U")
(['device_key', 'signature'], True)
>>> verify_attestation(**fields, run_id=7, node_id=10, nonce="bm9uY2U")
False
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Any, Final, Self

import nacl.exceptions
import nacl.signing
import rfc8785
from flwr.app import ConfigRecord

from client_sdk.errors import SDKError
from client_sdk.keys import DeviceKey
from consent.encoding import b64url_decode, b64url_encode

__all__ = [
    "ANALYTICS_CONFIG_RECORD",
    "ANALYTICS_MESSAGE_TYPE",
    "ANALYTICS_PURPOSE",
    "ATTESTATION_FIELDS",
    "ATTESTATION_PURPOSE",
    "ATTESTATION_RECORD",
    "ATTEST_MESSAGE_TYPE",
    "CHALLENGE_RECORD",
    "CONTRIBUTION_RECORD",
    "FAILED",
    "FAILED_REASON",
    "GLOBAL_MODEL_RECORD",
    "PURPOSES",
    "REFUSED",
    "REFUSED_REASON",
    "SECAGG_MESSAGE_TYPE",
    "TRAINING_PURPOSE",
    "TRAIN_CONFIG_RECORD",
    "TRAIN_MESSAGE_TYPE",
    "UPDATE_RECORD",
    "ProtocolError",
    "TrainConfig",
    "attestation_payload",
    "new_nonce",
    "sign_attestation",
    "verify_attestation",
]

TRAINING_PURPOSE: Final = "model-training"
"""The consent purpose a device must hold an active grant for to be trained on."""
ANALYTICS_PURPOSE: Final = "population-analytics"
"""The consent purpose a device must hold an active grant for to contribute to analytics."""
PURPOSES: Final = (TRAINING_PURPOSE, ANALYTICS_PURPOSE)

ATTESTATION_PURPOSE: Final = "moodfed-attestation-v1"
ATTEST_MESSAGE_TYPE: Final = "query.attest"
CHALLENGE_RECORD: Final = "challenge"
ATTESTATION_RECORD: Final = "attestation"
ATTESTATION_FIELDS: Final = ("device_key", "signature")

TRAIN_MESSAGE_TYPE: Final = "train"
GLOBAL_MODEL_RECORD: Final = "global-model"
TRAIN_CONFIG_RECORD: Final = "train-config"
UPDATE_RECORD: Final = "update"

SECAGG_MESSAGE_TYPE: Final = "query.secagg"
"""Secure aggregation's key, share and unmask stages (:mod:`client_sdk.secagg`); the masked
input itself rides in the round's ``train`` or ``query.analytics`` message."""

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


class ProtocolError(SDKError, ValueError):
    """A message does not follow this contract (a missing, extra or mistyped field)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """The ``train-config`` record: one round's local-training settings, one definition.

    On the wire each field is a ConfigRecord entry named with hyphens
    (``clipping_norm`` -> ``"clipping-norm"``).

    >>> config = TrainConfig(round=2, clipping_norm=1.0, noise_multiplier=1.0,
    ...     participation_rate=0.1, local_steps=5, sample_rate=0.2, learning_rate=0.05,
    ...     device_noise_multiplier=1.0)
    >>> TrainConfig.from_record(config.to_record()) == config
    True
    """

    round: int
    clipping_norm: float
    """C: the update's L2 bound (user level)."""
    noise_multiplier: float
    """Sigma: in a secure round, the noise the survivors' sum must carry, as a multiple of C
    (the devices add it); in a central round, what the trusted server adds."""
    participation_rate: float
    """q: in a secure round each device takes part in the sum with its update with this
    probability, drawn on the device (the server never learns who did); otherwise it adds
    zeros and its noise share. In a central round the server has sampled already (1)."""
    local_steps: int
    sample_rate: float
    """DP-SGD's Poisson sampling rate over the device's examples (record level)."""
    learning_rate: float
    device_noise_multiplier: float
    """The DP-SGD noise the server asks for: a device uses the larger of this and its own
    minimum, and refuses a request below its minimum."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The fields, as Python names (the server fills them from its settings)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_record(self) -> ConfigRecord:
        return ConfigRecord({_wire(name): getattr(self, name) for name in self.field_names()})

    @classmethod
    def from_record(cls, record: ConfigRecord) -> Self:
        """Read and check a ``train-config`` record; raise :class:`ProtocolError` if it is
        not exactly this contract's fields with numbers of the right kind."""
        wanted = {_wire(f.name): f for f in dataclasses.fields(cls)}
        keys = set(record.keys())
        if keys != set(wanted):
            missing, extra = sorted(set(wanted) - keys), sorted(keys - set(wanted))
            raise ProtocolError(f"train-config: missing {missing}, unexpected {extra}")
        values: dict[str, Any] = {}
        for key, spec in wanted.items():
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ProtocolError(f"train-config: {key} must be a number, got {value!r}")
            if spec.type == "int" and not (isinstance(value, int) or float(value).is_integer()):
                raise ProtocolError(f"train-config: {key} must be an integer, got {value!r}")
            values[spec.name] = int(value) if spec.type == "int" else float(value)
        return cls(**values)


def _wire(name: str) -> str:
    return name.replace("_", "-")


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

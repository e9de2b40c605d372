"""The protocol's messages: one typed dataclass each, to and from Flower records, read strictly.

Each message travels as one record of a Flower ``RecordDict`` (the content of a
Message), named by the class's ``RECORD``; other records may ride along in the same
message and are left alone. Ids are ints (Flower node ids are uint64), keys, signatures,
ciphertexts and shares are bytes, the masked input is a 1-D uint64 ``Array``. Reading a
record checks its exact set of fields, every type and every size, and raises
:class:`~client_sdk.secagg.errors.MessageError` naming the field; whether the content
makes sense for the round (the right neighbours, the right length) is the sessions' job.

===========================  ======  ==================================================
message                      stage   direction and content
===========================  ======  ==================================================
``SetupRequest``             0       server -> device: the round's parameters
``AdvertiseKeysReply``       1       device -> server: c_pk, s_pk, Ed25519 signature
``ShareKeysRequest``         2       server -> device: each live neighbour's signed keys
                                     and its attestation record
``ShareKeysReply``           2       device -> server: one ciphertext per neighbour
``MaskedInputRequest``       3       server -> device: the ciphertexts addressed to it
``MaskedInputReply``         3       device -> server: the masked vector
``UnmaskRequest``            4       server -> device: survivors and dropped nodes
``UnmaskReply``              4       device -> server: self-mask shares of surviving
                                     neighbours, key shares of dropped ones
===========================  ======  ==================================================

>>> reply = AdvertiseKeysReply(c_pk=bytes(32), s_pk=bytes(range(32)), signature=bytes(64))
>>> AdvertiseKeysReply.from_record_dict(reply.to_record_dict()) == reply
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final, Self

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from numpy.typing import NDArray

from client_sdk.secagg.errors import MessageError
from client_sdk.secagg.keys import KEY_BYTES, SIGNATURE_BYTES
from client_sdk.secagg.params import MAX_NODES, MAX_VECTOR_LENGTH, RoundParams, check_node_id
from client_sdk.secagg.shares import CIPHERTEXT_BYTES, SHARE_BYTES

__all__ = [
    "AdvertiseKeysReply",
    "Attestation",
    "MaskedInputReply",
    "MaskedInputRequest",
    "NeighbourKeys",
    "SetupRequest",
    "ShareKeysReply",
    "ShareKeysRequest",
    "UnmaskReply",
    "UnmaskRequest",
]

_MAX_TOKEN: Final = 128  # base64url device keys, signatures and nonces are far shorter


def _record(content: RecordDict, name: str) -> ConfigRecord:
    if not isinstance(content, RecordDict):
        raise MessageError("message content must be a flwr.app.RecordDict")
    if name not in content:
        raise MessageError(f"the message has no {name!r} record")
    record = content[name]
    if not isinstance(record, ConfigRecord):
        raise MessageError(f"{name!r} must be a ConfigRecord")
    return record


def _fields(record: ConfigRecord, name: str, fields: set[str]) -> None:
    if set(record.keys()) != fields:
        raise MessageError(
            f"{name!r} must have exactly the fields {sorted(fields)}, got {sorted(record.keys())}"
        )


def _list(record: ConfigRecord, name: str, key: str) -> list[object]:
    value = record[key]
    if not isinstance(value, list):
        raise MessageError(f"{name}.{key} must be a list")
    if len(value) > MAX_NODES:
        raise MessageError(f"{name}.{key} has more than {MAX_NODES} entries")
    return list(value)


def _ids(record: ConfigRecord, name: str, key: str) -> tuple[int, ...]:
    values = tuple(check_node_id(v, f"{name}.{key}[]") for v in _list(record, name, key))
    if len(set(values)) != len(values):
        raise MessageError(f"{name}.{key} lists a node twice")
    return values


def _blobs(record: ConfigRecord, name: str, key: str, size: int) -> tuple[bytes, ...]:
    checked: list[bytes] = []
    for value in _list(record, name, key):
        if not isinstance(value, bytes) or len(value) != size:
            raise MessageError(f"{name}.{key} must hold {size}-byte values")
        checked.append(value)
    return tuple(checked)


def _tokens(record: ConfigRecord, name: str, key: str) -> tuple[str, ...]:
    checked: list[str] = []
    for value in _list(record, name, key):
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_TOKEN or not value.isascii():
            raise MessageError(f"{name}.{key} must hold short ASCII strings")
        checked.append(value)
    return tuple(checked)


def _blob(record: ConfigRecord, name: str, key: str, size: int) -> bytes:
    value = record[key]
    if not isinstance(value, bytes) or len(value) != size:
        raise MessageError(f"{name}.{key} must be {size} bytes")
    return value


def _same_length(name: str, **columns: tuple[object, ...]) -> None:
    if len({len(column) for column in columns.values()}) > 1:
        raise MessageError(f"{name}: the lists {sorted(columns)} must have the same length")


class _Record:
    """Shared conversion to and from a RecordDict holding one ConfigRecord."""

    RECORD: ClassVar[str]

    def to_record(self) -> ConfigRecord:
        raise NotImplementedError

    @classmethod
    def from_record(cls, record: ConfigRecord) -> Self:
        raise NotImplementedError

    def to_record_dict(self) -> RecordDict:
        """This message alone as a Message's content."""
        return RecordDict({self.RECORD: self.to_record()})

    @classmethod
    def from_record_dict(cls, content: RecordDict) -> Self:
        """Read this message's record out of a Message's content."""
        return cls.from_record(_record(content, cls.RECORD))


@dataclass(frozen=True, slots=True)
class SetupRequest(_Record):
    """Stage 0, server -> every sampled device: the round's parameters."""

    RECORD: ClassVar[str] = "secagg-setup"
    params: RoundParams

    def to_record(self) -> ConfigRecord:
        """The parameters' fields as a ConfigRecord."""
        return ConfigRecord(dict(self.params.to_fields()))

    @classmethod
    def from_record(cls, record: ConfigRecord) -> Self:
        """Parse and validate the parameters."""
        return cls(params=RoundParams.from_fields(dict(record)))


@dataclass(frozen=True, slots=True)
class AdvertiseKeysReply(_Record):
    """Stage 1, device -> server: its two round public keys, signed with its device key."""

    RECORD: ClassVar[str] = "secagg-advertise-keys"
    c_pk: bytes
    s_pk: bytes
    signature: bytes

    def to_record(self) -> ConfigRecord:
        """``{"c-pk", "s-pk", "signature"}`` as bytes."""
        return ConfigRecord({"c-pk": self.c_pk, "s-pk": self.s_pk, "signature": self.signature})

    @classmethod
    def from_record(cls, record: ConfigRecord) -> Self:
        """Parse: two 32-byte keys and a 64-byte signature."""
        _fields(record, cls.RECORD, {"c-pk", "s-pk", "signature"})
        return cls(
            c_pk=_blob(record, cls.RECORD, "c-pk", KEY_BYTES),
            s_pk=_blob(record, cls.RECORD, "s-pk", KEY_BYTES),
            signature=_blob(record, cls.RECORD, "signature", SIGNATURE_BYTES),
        )


@dataclass(frozen=True, slots=True)
class Attestation:
    """A node's attestation record of this run, as the server verified it.

    ``device_key`` signed ``(run_id, node_id, nonce)`` (see
    :func:`client_sdk.protocol.verify_attestation`); peers check it themselves.
    """

    device_key: str
    signature: str
    nonce: str


@dataclass(frozen=True, slots=True)
class NeighbourKeys:
    """One neighbour's advertised keys and the attestation that ties its node to a device key."""

    node_id: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes
    attestation: Attestation


@dataclass(frozen=True, slots=True)
class ShareKeysRequest(_Record):
    """Stage 2, server -> device: the signed keys of each neighbour that advertised."""

    RECORD: ClassVar[str] = "secagg-share-keys"
    neighbours: tuple[NeighbourKeys, ...]

    _FIELDS: ClassVar[set[str]] = {
        "node-ids",
        "c-pks",
        "s-pks",
        "signatures",
        "device-keys",
        "attestation-signatures",
        "attestation-nonces",
    }

    def to_record(self) -> ConfigRecord:
        """Parallel lists, one entry per neighbour."""
        items = self.neighbours
        return ConfigRecord(
            {
                "node-ids": [item.node_id for item in items],
                "c-pks": [item.c_pk for item in items],
                "s-pks": [item.s_pk for item in items],
                "signatures": [item.signature for item in items],
                "device-keys": [item.attestation.device_key for item in items],
                "attestation-signatures": [item.attestation.signature for item in items],
                "attestation-nonces": [item.attestation.nonce for item in items],
            }
        )

    @classmethod
    def from_record(cls, record: ConfigRecord) -> Self:
        """Parse the parallel lists; every list the same length, ids unique."""
        name = cls.RECORD
        _fields(record, name, cls._FIELDS)
        node_ids = _ids(record, name, "node-ids")
        c_pks = _blobs(record, name, "c-pks", KEY_BYTES)
        s_pks = _blobs(record, name, "s-pks", KEY_BYTES)
        signatures = _blobs(record, name, "signatures", SIGNATURE_BYTES)
        device_keys = _tokens(record, name, "device-keys")
        att_signatures = _tokens(record, name, "attestation-signatures")
        att_nonces = _tokens(record, name, "attestation-nonces")
        _same_length(
            name,
            node_ids=node_ids,
            c_pks=c_pks,
            s_pks=s_pks,
            signatures=signatures,
            device_keys=device_keys,
            attestation_signatures=att_signatures,
            attestation_nonces=att_nonces,
        )
        return cls(
            neighbours=tuple(
                NeighbourKeys(
                    node_id=node_ids[i],
                    c_pk=c_pks[i],
                    s_pk=s_pks[i],
                    signature=signatures[i],
                    attestation=Attestation(
                        device_key=device_keys[i],
                        signature=att_signatures[i],
                        nonce=att_nonces[i],
                    ),
                )
                for i in range(len(node_ids))
            )
        )


@dataclass(frozen=True, slots=True)
class _Ciphertexts(_Record):
    """Node ids and one encrypted share pair per node, as parallel lists."""

    _IDS: ClassVar[str]
    ids: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]

    def to_record(self) -> ConfigRecord:
        """``{ids, "ciphertexts"}``."""
        return ConfigRecord({self._IDS: list(self.ids), "ciphertexts": list(self.ciphertexts)})

    @classmethod
    def from_record(cls, record: ConfigRecord) -> Self:
        """Parse: unique ids, ciphertexts of the exact size, the same count of each."""
        _fields(record, cls.RECORD, {cls._IDS, "ciphertexts"})
        ids = _ids(record, cls.RECORD, cls._IDS)
        ciphertexts = _blobs(record, cls.RECORD, "ciphertexts", CIPHERTEXT_BYTES)
        _same_length(cls.RECORD, ids=ids, ciphertexts=ciphertexts)
        return cls(ids=ids, ciphertexts=ciphertexts)


@dataclass(frozen=True, slots=True)
class ShareKeysReply(_Ciphertexts):
    """Stage 2, device -> server: ``ids`` are the recipients of ``ciphertexts``."""

    RECORD: ClassVar[str] = "secagg-encrypted-shares"
    _IDS: ClassVar[str] = "recipients"


@dataclass(frozen=True, slots=True)
class MaskedInputRequest(_Ciphertexts):
    """Stage 3, server -> device: ``ids`` are the senders of the ``ciphertexts`` it holds."""

    RECORD: ClassVar[str] = "secagg-masked-input-request"
    _IDS: ClassVar[str] = "senders"


@dataclass(frozen=True, slots=True, eq=False)
class MaskedInputReply:
    """Stage 3, device -> server: the masked vector, as a one-array ArrayRecord."""

    RECORD: ClassVar[str] = "secagg-masked-input"
    masked: NDArray[np.uint64]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskedInputReply):
            return NotImplemented
        return bool(np.array_equal(self.masked, other.masked))

    def to_record(self) -> ArrayRecord:
        """``{"masked": Array(uint64, shape (L,))}``."""
        return ArrayRecord({"masked": Array(np.ascontiguousarray(self.masked, dtype=np.uint64))})

    @classmethod
    def from_record(cls, record: ArrayRecord) -> Self:
        """Parse: exactly one 1-D array of unsigned 64-bit integers."""
        name = cls.RECORD
        if not isinstance(record, ArrayRecord):
            raise MessageError(f"{name!r} must be an ArrayRecord")
        if set(record.keys()) != {"masked"}:
            raise MessageError(f"{name!r} must hold exactly one array, 'masked'")
        array = record["masked"]
        if array.dtype != "uint64" or len(array.shape) != 1:
            raise MessageError(f"{name}.masked must be a 1-D uint64 array")
        if not 1 <= array.shape[0] <= MAX_VECTOR_LENGTH:
            raise MessageError(f"{name}.masked must hold 1 to {MAX_VECTOR_LENGTH} values")
        try:
            values = array.numpy()
        except Exception as exc:  # np.load raises many types on bad bytes
            raise MessageError(f"{name}.masked does not hold a numpy array: {exc}") from None
        if values.dtype.kind != "u" or values.dtype.itemsize != 8 or values.shape != array.shape:
            raise MessageError(f"{name}.masked does not hold the uint64 array it declares")
        return cls(masked=values.astype(np.uint64, copy=False))

    def to_record_dict(self) -> RecordDict:
        """This message alone as a Message's content."""
        return RecordDict({self.RECORD: self.to_record()})

    @classmethod
    def from_record_dict(cls, content: RecordDict) -> Self:
        """Read this message's record out of a Message's content."""
        if not isinstance(content, RecordDict) or cls.RECORD not in content:
            raise MessageError(f"the message has no {cls.RECORD!r} record")
        record = content[cls.RECORD]
        if not isinstance(record, ArrayRecord):
            raise MessageError(f"{cls.RECORD!r} must be an ArrayRecord")
        return cls.from_record(record)


@dataclass(frozen=True, slots=True)
class UnmaskRequest(_Record):
    """Stage 4, server -> each survivor: who sent a masked input and who dropped after sharing."""

    RECORD: ClassVar[str] = "secagg-unmask"
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def to_record(self) -> ConfigRecord:
        """``{"survivors", "dropped"}`` as lists of node ids."""
        return ConfigRecord({"survivors": list(self.survivors), "dropped": list(self.dropped)})

    @classmethod
    def from_record(cls, record: ConfigRecord) -> Self:
        """Parse two lists of unique node ids (the session checks they are disjoint)."""
        _fields(record, cls.RECORD, {"survivors", "dropped"})
        return cls(
            survivors=_ids(record, cls.RECORD, "survivors"),
            dropped=_ids(record, cls.RECORD, "dropped"),
        )


@dataclass(frozen=True, slots=True)
class UnmaskReply(_Record):
    """Stage 4, device -> server: for each neighbour, one kind of share, never both.

    ``mask_shares[i]`` is the device's share of ``mask_owners[i]``'s self-mask seed (a
    survivor); ``key_shares[i]`` its share of ``key_owners[i]``'s masking key (a dropout).
    """

    RECORD: ClassVar[str] = "secagg-unmask-shares"
    mask_owners: tuple[int, ...]
    mask_shares: tuple[bytes, ...]
    key_owners: tuple[int, ...]
    key_shares: tuple[bytes, ...]

    def to_record(self) -> ConfigRecord:
        """Two pairs of parallel lists."""
        return ConfigRecord(
            {
                "mask-owners": list(self.mask_owners),
                "mask-shares": list(self.mask_shares),
                "key-owners": list(self.key_owners),
                "key-shares": list(self.key_shares),
            }
        )

    @classmethod
    def from_record(cls, record: ConfigRecord) -> Self:
        """Parse: unique owners, 33-byte shares, and no owner with both kinds."""
        name = cls.RECORD
        _fields(record, name, {"mask-owners", "mask-shares", "key-owners", "key-shares"})
        mask_owners = _ids(record, name, "mask-owners")
        mask_shares = _blobs(record, name, "mask-shares", SHARE_BYTES)
        key_owners = _ids(record, name, "key-owners")
        key_shares = _blobs(record, name, "key-shares", SHARE_BYTES)
        _same_length(name, mask_owners=mask_owners, mask_shares=mask_shares)
        _same_length(name, key_owners=key_owners, key_shares=key_shares)
        if set(mask_owners) & set(key_owners):
            raise MessageError(f"{name}: a node's self-mask share and key share both sent")
        return cls(
            mask_owners=mask_owners,
            mask_shares=mask_shares,
            key_owners=key_owners,
            key_shares=key_shares,
        )

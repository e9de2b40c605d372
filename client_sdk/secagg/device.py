"""The device's side of a round: one session object, one method per stage, serialisable between.

A Flower ClientApp keeps nothing between messages but ``context.state``, so the session
is rebuilt from bytes at each stage (:meth:`DeviceSession.to_bytes` /
:meth:`DeviceSession.from_bytes`). Any check that fails raises
:class:`~client_sdk.secagg.errors.RoundRefused` and leaves the session refused: every
later call raises again, so the device sends nothing more in that round. Save the
session after a refusal too (its bytes remember it).

Stages (the server's request in, the device's reply out):

1. :meth:`DeviceSession.start` (``SetupRequest``): check the parameters against the
   device's own floor on ``min_survivors``, make the two X25519 pairs, sign them.
2. :meth:`DeviceSession.share_keys` (``ShareKeysRequest``): check every neighbour (a
   graph neighbour, attested in this run by the device key that signed its round keys,
   no key or device key seen twice, at least ``t`` of them), then Shamir-share the
   masking key and a fresh self-mask seed among them and encrypt each pair of shares.
   One X25519 agreement per neighbour gives both directions' share keys (HKDF with the
   sender and recipient in its info); the key for the shares coming back is kept and
   the encryption pair forgotten. Attestation records already verified in this run
   may be passed in (:class:`~client_sdk.secagg.attestations.VerifiedAttestations`);
   every round-key signature is verified in every round.
3. :meth:`DeviceSession.masked_input` (``MaskedInputRequest`` and the input vector):
   decrypt the shares addressed to it, return the masked vector; the masking key and
   self-mask seed are then forgotten.
4. :meth:`DeviceSession.unmask` (``UnmaskRequest``): give the self-mask share of each
   surviving neighbour and the key share of each dropped one, refusing a request that
   names a neighbour as both, leaves one unnamed, or claims fewer survivors than the
   round's ``min_survivors``.
"""

from __future__ import annotations

import json
import secrets
from enum import StrEnum
from typing import Any, Final, Never

from client_sdk.errors import InvalidArgumentError
from client_sdk.keys import DeviceKey
from client_sdk.secagg.attestations import VerifiedAttestations
from client_sdk.secagg.errors import MessageError, RoundRefused
from client_sdk.secagg.keys import (
    KeyPair,
    pair_seed,
    share_key,
    sign_advertisement,
    verify_advertisement,
)
from client_sdk.secagg.masks import check_input, mask_input
from client_sdk.secagg.messages import (
    AdvertiseKeysReply,
    MaskedInputReply,
    MaskedInputRequest,
    SetupRequest,
    ShareKeysReply,
    ShareKeysRequest,
    UnmaskReply,
    UnmaskRequest,
)
from client_sdk.secagg.params import RoundParams
from client_sdk.secagg.shares import (
    decode_share,
    decrypt_shares,
    encode_share,
    encrypt_shares,
    split_secret,
)

__all__ = ["DeviceSession", "DeviceStage"]

_FORMAT: Final = "moodfed-secagg-device-session"
_VERSION: Final = 2  # 2: neighbours hold the key of their shares to this device, not c_pk
_SEED_BYTES: Final = 32


class DeviceStage(StrEnum):
    """Where a device session is: the last stage it answered, or refused."""

    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    DONE = "done"
    REFUSED = "refused"


class DeviceSession:
    """One device's state in one round (see the module docstring for the stages)."""

    __slots__ = (
        "_c",
        "_device_key",
        "_held",
        "_minimum_survivors",
        "_neighbours",
        "_node_id",
        "_params",
        "_refusal",
        "_s",
        "_self_seed",
        "_stage",
    )

    def __init__(
        self,
        *,
        params: RoundParams,
        node_id: int,
        device_key: str,
        minimum_survivors: int,
        stage: DeviceStage,
        c: KeyPair | None = None,
        s: KeyPair | None = None,
        self_seed: bytes | None = None,
        neighbours: dict[int, tuple[bytes, bytes]] | None = None,
        held: dict[int, tuple[int, int]] | None = None,
        refusal: str | None = None,
    ) -> None:
        """Rebuild a session; use :meth:`start` or :meth:`from_bytes` instead.

        ``neighbours`` maps each accepted neighbour to (the key of the shares it
        encrypts to this device, its ``s_pk``).
        """
        self._params = params
        self._node_id = node_id
        self._device_key = device_key
        self._minimum_survivors = minimum_survivors
        self._stage = stage
        self._c = c
        self._s = s
        self._self_seed = self_seed
        self._neighbours = neighbours or {}
        self._held = held or {}
        self._refusal = refusal

    # -- stage 0 and 1 ------------------------------------------------------------

    @classmethod
    def start(
        cls,
        setup: SetupRequest,
        *,
        node_id: int,
        device_key: DeviceKey,
        minimum_survivors: int = 0,
    ) -> tuple[DeviceSession, AdvertiseKeysReply]:
        """Join the round: check the parameters, make and sign the round keys.

        ``minimum_survivors`` is the device's own floor on the round's
        ``min_survivors`` (the fewest inputs its contribution may be summed with); a
        round that allows fewer is refused before any key is made.
        """
        params = setup.params
        if not params.has_node(node_id):
            raise RoundRefused(f"node {node_id} is not in the round's cohort")
        if params.min_survivors < minimum_survivors:
            raise RoundRefused(
                f"the round allows a sum of {params.min_survivors} inputs; this device "
                f"requires at least {minimum_survivors}"
            )
        c, s = KeyPair.generate(), KeyPair.generate()
        signature = sign_advertisement(
            device_key, context=params.context, node_id=node_id, c_pk=c.public, s_pk=s.public
        )
        session = cls(
            params=params,
            node_id=node_id,
            device_key=device_key.device_key,
            minimum_survivors=minimum_survivors,
            stage=DeviceStage.ADVERTISED,
            c=c,
            s=s,
        )
        return session, AdvertiseKeysReply(c_pk=c.public, s_pk=s.public, signature=signature)

    # -- stage 2 ------------------------------------------------------------------

    def share_keys(
        self, request: ShareKeysRequest, *, verified: VerifiedAttestations | None = None
    ) -> ShareKeysReply:
        """Check every neighbour's signed keys, then send each its encrypted shares.

        ``verified`` holds the attestation records this device already verified in this
        run (kept by the caller between rounds); the ones verified now are added to it.
        """
        params, me = self._params, self._node_id
        if verified is None:
            verified = VerifiedAttestations(run_id=params.run_id)
        elif verified.run_id != params.run_id:
            raise InvalidArgumentError(
                f"verified attestations of run {verified.run_id} given for run {params.run_id}"
            )
        self._expect(DeviceStage.ADVERTISED)
        c, s = self._c_key(), self._s_key()
        graph = set(params.neighbours(me))
        seen_keys = {c.public, s.public}
        seen_devices = {self._device_key}
        accepted: dict[int, tuple[bytes, bytes]] = {}
        for item in request.neighbours:
            node = item.node_id
            if node not in graph:
                self._refuse(f"node {node} is not a neighbour in the round's graph")
            if node in accepted:
                self._refuse(f"node {node} is listed twice")
            att = item.attestation
            if not verified.check(node_id=node, attestation=att):
                self._refuse(f"node {node}'s attestation does not verify")
            if not verify_advertisement(
                device_key=att.device_key,
                signature=item.signature,
                context=params.context,
                node_id=node,
                c_pk=item.c_pk,
                s_pk=item.s_pk,
            ):
                self._refuse(f"node {node}'s round keys are not signed by its attested key")
            if item.c_pk in seen_keys or item.s_pk in seen_keys or item.c_pk == item.s_pk:
                self._refuse(f"node {node} presents a public key already seen in this round")
            if att.device_key in seen_devices:
                self._refuse(f"node {node} presents a device key already seen in this round")
            seen_keys.update((item.c_pk, item.s_pk))
            seen_devices.add(att.device_key)
            accepted[node] = (item.c_pk, item.s_pk)
        if len(accepted) < params.threshold:
            self._refuse(
                f"{len(accepted)} neighbours advertised keys; the threshold is {params.threshold}"
            )
        holders = sorted(accepted)
        xs = [params.share_index(node) for node in holders]
        self_seed = secrets.token_bytes(_SEED_BYTES)
        key_shares = split_secret(s.private, threshold=params.threshold, xs=xs)
        mask_shares = split_secret(self_seed, threshold=params.threshold, xs=xs)
        ciphertexts = []
        neighbours: dict[int, tuple[bytes, bytes]] = {}
        for node, key_share, mask_share in zip(holders, key_shares, mask_shares, strict=True):
            c_pk, s_pk = accepted[node]
            shared = self._agree(c, c_pk, node)
            key = share_key(shared, context=params.context, sender=me, recipient=node)
            ciphertexts.append(
                encrypt_shares(
                    key,
                    context=params.context,
                    sender=me,
                    recipient=node,
                    key_share=key_share,
                    mask_share=mask_share,
                )
            )
            back = share_key(shared, context=params.context, sender=node, recipient=me)
            neighbours[node] = (back, s_pk)
        self._neighbours = neighbours
        self._self_seed = self_seed
        self._c = None  # every share key is derived: the encryption pair is done with
        self._stage = DeviceStage.SHARED
        return ShareKeysReply(ids=tuple(holders), ciphertexts=tuple(ciphertexts))

    # -- stage 3 ------------------------------------------------------------------

    def masked_input(self, request: MaskedInputRequest, vector: object) -> MaskedInputReply:
        """Decrypt the shares sent to this device and return the masked ``vector``.

        ``vector`` must be a 1-D numpy integer array of ``vector_length`` values in
        ``[0, 2**modulus_bits)``; otherwise ``InvalidArgumentError`` and nothing changes.
        """
        params, me = self._params, self._node_id
        x = check_input(vector, length=params.vector_length, modulus_bits=params.modulus_bits)
        self._expect(DeviceStage.SHARED)
        s = self._s_key()
        if self._self_seed is None:
            self._refuse("the session lost its self-mask seed")
        held: dict[int, tuple[int, int]] = {}
        seeds: dict[int, bytes] = {}
        for sender, ciphertext in zip(request.ids, request.ciphertexts, strict=True):
            keys = self._neighbours.get(sender)
            if keys is None:
                self._refuse(f"shares from node {sender}, which is not an accepted neighbour")
            key, s_pk = keys
            try:
                held[sender] = decrypt_shares(
                    key, ciphertext, context=params.context, sender=sender, recipient=me
                )
                shared = s.agree(s_pk)
            except ValueError as exc:
                self._refuse(str(exc))
            seeds[sender] = pair_seed(shared, context=params.context, node_a=me, node_b=sender)
        if len(held) < params.threshold:
            self._refuse(f"shares from {len(held)} neighbours; the threshold is {params.threshold}")
        masked = mask_input(
            x,
            node_id=me,
            self_seed=self._self_seed,
            pair_seeds=seeds,
            modulus_bits=params.modulus_bits,
        )
        self._held = held
        self._forget_keys()
        self._stage = DeviceStage.MASKED
        return MaskedInputReply(masked=masked)

    # -- stage 4 ------------------------------------------------------------------

    def unmask(self, request: UnmaskRequest) -> UnmaskReply:
        """Reveal one kind of share per neighbour whose shares this device holds."""
        self._expect(DeviceStage.MASKED)
        params, me = self._params, self._node_id
        survivors, dropped = set(request.survivors), set(request.dropped)
        both = survivors & dropped
        if both:
            self._refuse(f"asked for both shares of node {min(both)}: a protocol violation")
        if me not in survivors:
            self._refuse("the unmask request does not list this device as a survivor")
        strangers = [node for node in survivors | dropped if not params.has_node(node)]
        if strangers:
            self._refuse(f"the unmask request names node {strangers[0]}, not in the round")
        if len(survivors) < params.min_survivors:
            self._refuse(
                f"{len(survivors)} survivors; the round needs at least {params.min_survivors}"
            )
        mask_owners: list[int] = []
        mask_shares: list[bytes] = []
        key_owners: list[int] = []
        key_shares: list[bytes] = []
        for owner in sorted(self._held):
            key_share, mask_share = self._held[owner]
            if owner in survivors:
                mask_owners.append(owner)
                mask_shares.append(encode_share(mask_share))
            elif owner in dropped:
                key_owners.append(owner)
                key_shares.append(encode_share(key_share))
            else:
                self._refuse(f"the unmask request does not say whether node {owner} survived")
        self._held = {}
        self._stage = DeviceStage.DONE
        return UnmaskReply(
            mask_owners=tuple(mask_owners),
            mask_shares=tuple(mask_shares),
            key_owners=tuple(key_owners),
            key_shares=tuple(key_shares),
        )

    # -- state ----------------------------------------------------------------------

    @property
    def stage(self) -> DeviceStage:
        """The last stage answered (or ``REFUSED``)."""
        return self._stage

    @property
    def params(self) -> RoundParams:
        """The round's parameters."""
        return self._params

    @property
    def node_id(self) -> int:
        """This device's node id in the round."""
        return self._node_id

    @property
    def refusal(self) -> str | None:
        """Why the session refused the round, if it did."""
        return self._refusal

    def to_bytes(self) -> bytes:
        """The whole session (secrets included: keep it on the device) as UTF-8 JSON."""

        def hexed(value: bytes | None) -> str | None:
            return None if value is None else value.hex()

        doc: dict[str, Any] = {
            "format": _FORMAT,
            "version": _VERSION,
            "stage": self._stage.value,
            "node_id": self._node_id,
            "params": self._params.to_fields(),
            "device_key": self._device_key,
            "minimum_survivors": self._minimum_survivors,
            "c_sk": hexed(self._c.private) if self._c else None,
            "s_sk": hexed(self._s.private) if self._s else None,
            "self_seed": hexed(self._self_seed),
            "neighbours": [
                [node, hexed(key), hexed(s_pk)] for node, (key, s_pk) in self._neighbours.items()
            ],
            "held": [
                [node, hexed(encode_share(k)), hexed(encode_share(m))]
                for node, (k, m) in self._held.items()
            ],
            "refusal": self._refusal,
        }
        return json.dumps(doc, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceSession:
        """Rebuild a session from :meth:`to_bytes`; ``MessageError`` if the bytes are not one."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, AttributeError):
            raise MessageError("not a secure-aggregation device session") from None
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise MessageError("not a secure-aggregation device session")
        if doc.get("version") != _VERSION:
            raise MessageError(f"unsupported device session version {doc.get('version')!r}")
        expected = {
            "format",
            "version",
            "stage",
            "node_id",
            "params",
            "device_key",
            "minimum_survivors",
            "c_sk",
            "s_sk",
            "self_seed",
            "neighbours",
            "held",
            "refusal",
        }
        if set(doc) != expected:
            raise MessageError("a device session has exactly the fields " + str(sorted(expected)))
        try:
            return cls._parse(doc)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, MessageError):
                raise
            raise MessageError(f"malformed device session: {exc}") from None

    @classmethod
    def _parse(cls, doc: dict[str, Any]) -> DeviceSession:
        def raw(value: object, length: int | None = None) -> bytes | None:
            if value is None:
                return None
            if not isinstance(value, str):
                raise MessageError("a device session's binary fields are hex strings")
            data = bytes.fromhex(value)
            if length is not None and len(data) != length:
                raise MessageError(f"a device session's field is {len(data)} bytes, not {length}")
            return data

        def required(value: bytes | None) -> bytes:
            if value is None:
                raise MessageError("a device session is missing a key")
            return value

        if not isinstance(doc["params"], dict):
            raise MessageError("a device session's params must be an object")
        params = RoundParams.from_fields(doc["params"])
        node_id, device_key = doc["node_id"], doc["device_key"]
        minimum, refusal = doc["minimum_survivors"], doc["refusal"]
        if not isinstance(node_id, int) or not params.has_node(node_id):
            raise MessageError("a device session's node is not in its round")
        if not isinstance(device_key, str) or not isinstance(minimum, int):
            raise MessageError("a device session's device_key or minimum_survivors is malformed")
        if refusal is not None and not isinstance(refusal, str):
            raise MessageError("a device session's refusal must be a string")
        c_sk, s_sk = raw(doc["c_sk"], 32), raw(doc["s_sk"], 32)
        neighbours = {}
        for entry in doc["neighbours"]:
            node, key, s_pk = entry
            if not isinstance(node, int) or not params.has_node(node):
                raise MessageError("a device session lists a neighbour not in its round")
            neighbours[node] = (required(raw(key, 32)), required(raw(s_pk, 32)))
        held = {}
        for entry in doc["held"]:
            node, key_share, mask_share = entry
            if not isinstance(node, int) or not params.has_node(node):
                raise MessageError("a device session holds shares of a node not in its round")
            held[node] = (
                decode_share(required(raw(key_share))),
                decode_share(required(raw(mask_share))),
            )
        return cls(
            params=params,
            node_id=node_id,
            device_key=device_key,
            minimum_survivors=minimum,
            stage=DeviceStage(doc["stage"]),
            c=None if c_sk is None else KeyPair.from_private(c_sk),
            s=None if s_sk is None else KeyPair.from_private(s_sk),
            self_seed=raw(doc["self_seed"], _SEED_BYTES),
            neighbours=neighbours,
            held=held,
            refusal=refusal,
        )

    # -- internals --------------------------------------------------------------------

    def _expect(self, stage: DeviceStage) -> None:
        if self._stage is DeviceStage.REFUSED:
            raise RoundRefused(f"this device already refused the round: {self._refusal}")
        if self._stage is not stage:
            self._refuse(
                f"a request for the stage after {stage.value!r} arrived while the session "
                f"is at {self._stage.value!r}"
            )

    def _refuse(self, reason: str) -> Never:
        self._stage = DeviceStage.REFUSED
        self._refusal = reason
        self._forget_keys()
        self._neighbours = {}
        self._held = {}
        raise RoundRefused(reason)

    def _forget_keys(self) -> None:
        self._c = self._s = None
        self._self_seed = None
        self._neighbours = {}

    def _c_key(self) -> KeyPair:
        if self._c is None:
            self._refuse("the session lost its encryption key")
        return self._c

    def _s_key(self) -> KeyPair:
        if self._s is None:
            self._refuse("the session lost its masking key")
        return self._s

    def _agree(self, c: KeyPair, peer_c_pk: bytes, peer: int) -> bytes:
        try:
            return c.agree(peer_c_pk)
        except ValueError:
            self._refuse(f"node {peer}'s encryption key is a low-order point")

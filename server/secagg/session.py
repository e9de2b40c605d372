"""The server's side of a secure-aggregation round: relay, check, and unmask the sum.

One :class:`ServerSession` per round. Each ``*_requests`` method closes the stage
before it (whoever has not answered by then has dropped out) and returns the messages
to send; each ``receive_*`` method takes one device's reply, with the sender's node id
from the Flower message's metadata. A malformed or unexpected reply raises
:class:`~client_sdk.secagg.ReplyRejected` and changes nothing (that device then counts
as dropped). With fewer than ``min_survivors`` devices left at any stage, or a secret
that cannot be rebuilt, the session raises :class:`~client_sdk.secagg.RoundAborted` and
returns no sum, ever. The server never holds a device's masked vector beyond adding it
to the running total.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Never

import numpy as np
from numpy.typing import NDArray

from client_sdk.protocol import verify_attestation
from client_sdk.secagg import (
    AdvertiseKeysReply,
    Attestation,
    KeyPair,
    MaskedInputReply,
    MaskedInputRequest,
    MessageError,
    NeighbourKeys,
    ReplyRejected,
    RoundAborted,
    RoundParams,
    SetupRequest,
    ShareKeysReply,
    ShareKeysRequest,
    StageError,
    UnmaskReply,
    UnmaskRequest,
    combine_shares,
    decode_share,
    expand,
    pair_mask_term,
    pair_seed,
    verify_advertisement,
)

__all__ = ["ServerSession", "ServerStage"]

log = logging.getLogger(__name__)


class ServerStage(StrEnum):
    """The stage whose replies the session is collecting."""

    SETUP = "setup"
    ADVERTISE_KEYS = "advertise-keys"
    SHARE_KEYS = "share-keys"
    MASKED_INPUT = "masked-input"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


class ServerSession:
    """One round, from the parameters to the unmasked sum (see the module docstring)."""

    def __init__(self, params: RoundParams, attestations: Mapping[int, Attestation]) -> None:
        """``attestations`` holds every sampled node's attestation record of this run.

        Raises ``MessageError`` if a node has none, one does not verify, or two nodes
        share a device key: sample only nodes whose attestation the run accepted.
        """
        self._params = params
        device_keys: dict[str, int] = {}
        for node in params.ring:
            att = attestations.get(node)
            if att is None or not verify_attestation(
                device_key=att.device_key,
                signature=att.signature,
                run_id=params.run_id,
                node_id=node,
                nonce=att.nonce,
            ):
                raise MessageError(f"node {node} has no valid attestation in this run")
            if att.device_key in device_keys:
                raise MessageError(f"nodes {device_keys[att.device_key]} and {node} share a key")
            device_keys[att.device_key] = node
        self._attestations = {node: attestations[node] for node in params.ring}
        self._stage = ServerStage.SETUP
        self._abort_reason: str | None = None
        self._keys: dict[int, AdvertiseKeysReply] = {}
        self._seen_keys: set[bytes] = set()
        self._forwarded: dict[int, frozenset[int]] = {}  # node -> neighbours whose keys it got
        self._ciphertexts: dict[int, dict[int, bytes]] = {}  # recipient -> sender -> ct
        self._shared: set[int] = set()
        self._senders: dict[int, frozenset[int]] = {}  # node -> senders of its shares
        self._masked: set[int] = set()
        self._total: NDArray[np.uint64] | None = None
        self._dropped: frozenset[int] = frozenset()
        self._unmasked: set[int] = set()
        self._mask_points: dict[int, list[tuple[int, int]]] = {}
        self._key_points: dict[int, list[tuple[int, int]]] = {}

    # -- stage 0 ------------------------------------------------------------------

    def setup_requests(self) -> dict[int, SetupRequest]:
        """The setup message for every sampled node."""
        self._expect(ServerStage.SETUP)
        request = SetupRequest(params=self._params)
        self._stage = ServerStage.ADVERTISE_KEYS
        return dict.fromkeys(self._params.ring, request)

    # -- stage 1 ------------------------------------------------------------------

    def receive_advertise_keys(self, node_id: int, reply: AdvertiseKeysReply) -> None:
        """Accept a node's signed round keys (checked against its attested device key)."""
        self._expect(ServerStage.ADVERTISE_KEYS)
        if not self._params.has_node(node_id) or node_id in self._keys:
            raise ReplyRejected(f"unexpected or repeated advertised keys from node {node_id}")
        if not verify_advertisement(
            device_key=self._attestations[node_id].device_key,
            signature=reply.signature,
            context=self._params.context,
            node_id=node_id,
            c_pk=reply.c_pk,
            s_pk=reply.s_pk,
        ):
            raise ReplyRejected(f"node {node_id}'s round keys are not signed by its device key")
        if reply.c_pk == reply.s_pk or {reply.c_pk, reply.s_pk} & self._seen_keys:
            raise ReplyRejected(f"node {node_id} advertises a public key already seen")
        self._seen_keys.update((reply.c_pk, reply.s_pk))
        self._keys[node_id] = reply

    # -- stage 2 ------------------------------------------------------------------

    def share_keys_requests(self) -> dict[int, ShareKeysRequest]:
        """Close stage 1; send each advertiser the signed keys of its advertised neighbours."""
        self._expect(ServerStage.ADVERTISE_KEYS)
        self._require(len(self._keys), "advertised keys")
        requests = {}
        for node in self._keys:
            live = [peer for peer in self._params.neighbours(node) if peer in self._keys]
            self._forwarded[node] = frozenset(live)
            requests[node] = ShareKeysRequest(
                neighbours=tuple(
                    NeighbourKeys(
                        node_id=peer,
                        c_pk=self._keys[peer].c_pk,
                        s_pk=self._keys[peer].s_pk,
                        signature=self._keys[peer].signature,
                        attestation=self._attestations[peer],
                    )
                    for peer in live
                )
            )
        self._stage = ServerStage.SHARE_KEYS
        return requests

    def receive_share_keys(self, node_id: int, reply: ShareKeysReply) -> None:
        """Accept a node's encrypted shares: exactly one per neighbour whose keys it got."""
        self._expect(ServerStage.SHARE_KEYS)
        if node_id not in self._forwarded or node_id in self._shared:
            raise ReplyRejected(f"unexpected or repeated shares from node {node_id}")
        if set(reply.ids) != self._forwarded[node_id] or len(reply.ids) != len(
            self._forwarded[node_id]
        ):
            raise ReplyRejected(f"node {node_id} did not encrypt to exactly its live neighbours")
        for recipient, ciphertext in zip(reply.ids, reply.ciphertexts, strict=True):
            self._ciphertexts.setdefault(recipient, {})[node_id] = ciphertext
        self._shared.add(node_id)

    # -- stage 3 ------------------------------------------------------------------

    def masked_input_requests(self) -> dict[int, MaskedInputRequest]:
        """Close stage 2; send each node that shared the shares its sharing neighbours sent it."""
        self._expect(ServerStage.SHARE_KEYS)
        self._require(len(self._shared), "shared their keys")
        requests = {}
        for node in sorted(self._shared):
            inbox = self._ciphertexts.get(node, {})
            senders = sorted(sender for sender in inbox if sender in self._shared)
            self._senders[node] = frozenset(senders)
            requests[node] = MaskedInputRequest(
                ids=tuple(senders), ciphertexts=tuple(inbox[sender] for sender in senders)
            )
        self._ciphertexts = {}
        self._total = np.zeros(self._params.vector_length, dtype=np.uint64)
        self._stage = ServerStage.MASKED_INPUT
        return requests

    def receive_masked_input(self, node_id: int, reply: MaskedInputReply) -> None:
        """Add a node's masked vector to the running total (the vector itself is not kept)."""
        self._expect(ServerStage.MASKED_INPUT)
        if node_id not in self._senders or node_id in self._masked:
            raise ReplyRejected(f"unexpected or repeated masked input from node {node_id}")
        params = self._params
        vector = reply.masked
        if vector.shape != (params.vector_length,):
            raise ReplyRejected(f"node {node_id}'s masked input has shape {vector.shape}")
        if params.modulus_bits < 64 and int(vector.max()) >> params.modulus_bits:
            raise ReplyRejected(f"node {node_id}'s masked input is not modulo 2**k")
        assert self._total is not None  # set when stage 3 opened
        self._total += vector
        self._masked.add(node_id)

    # -- stage 4 ------------------------------------------------------------------

    def unmask_requests(self) -> dict[int, UnmaskRequest]:
        """Close stage 3; ask every survivor for its shares, naming survivors and dropouts."""
        self._expect(ServerStage.MASKED_INPUT)
        self._require(len(self._masked), "sent a masked input")
        self._dropped = frozenset(self._shared - self._masked)
        request = UnmaskRequest(
            survivors=tuple(sorted(self._masked)), dropped=tuple(sorted(self._dropped))
        )
        self._stage = ServerStage.UNMASK
        return dict.fromkeys(sorted(self._masked), request)

    def receive_unmask(self, node_id: int, reply: UnmaskReply) -> None:
        """Accept a survivor's shares: self-mask shares of survivors, key shares of dropouts."""
        self._expect(ServerStage.UNMASK)
        if node_id not in self._masked or node_id in self._unmasked:
            raise ReplyRejected(f"unexpected or repeated unmask shares from node {node_id}")
        held = self._senders[node_id]
        if set(reply.mask_owners) != held & self._masked or set(reply.key_owners) != (
            held & self._dropped
        ):
            raise ReplyRejected(f"node {node_id} did not send exactly the shares asked for")
        x = self._params.share_index(node_id)
        try:
            mask_points = [
                (o, decode_share(s))
                for o, s in zip(reply.mask_owners, reply.mask_shares, strict=True)
            ]
            key_points = [
                (o, decode_share(s))
                for o, s in zip(reply.key_owners, reply.key_shares, strict=True)
            ]
        except ValueError as exc:
            raise ReplyRejected(f"node {node_id} sent a malformed share: {exc}") from None
        for owner, value in mask_points:
            self._mask_points.setdefault(owner, []).append((x, value))
        for owner, value in key_points:
            self._key_points.setdefault(owner, []).append((x, value))
        self._unmasked.add(node_id)

    def result(self) -> NDArray[np.uint64]:
        """Close stage 4 and return ``sum x_i mod 2**k`` over the survivors, or abort."""
        self._expect(ServerStage.UNMASK)
        params = self._params
        total = self._total
        assert total is not None  # set when stage 3 opened
        t, length, bits = params.threshold, params.vector_length, params.modulus_bits
        for node in sorted(self._masked):
            points = self._mask_points.get(node, [])
            if len(points) < t:
                self._abort(f"{len(points)} self-mask shares of node {node}; {t} needed")
            try:
                seed = combine_shares(points, threshold=t)
            except ValueError as exc:
                self._abort(f"node {node}'s self-mask seed cannot be rebuilt: {exc}")
            total -= expand(seed, length=length, modulus_bits=bits, domain="self")
        for node in sorted(self._dropped):
            owners = sorted(k for k in self._masked if node in self._senders[k])
            if not owners:
                continue
            points = self._key_points.get(node, [])
            if len(points) < t:
                self._abort(f"{len(points)} key shares of dropped node {node}; {t} needed")
            try:
                s = KeyPair.from_private(combine_shares(points, threshold=t))
            except ValueError as exc:
                self._abort(f"dropped node {node}'s masking key cannot be rebuilt: {exc}")
            if s.public != self._keys[node].s_pk:
                self._abort(f"the key shares of node {node} do not rebuild its masking key")
            for owner in owners:
                seed = pair_seed(
                    s.agree(self._keys[owner].s_pk),
                    context=params.context,
                    node_a=node,
                    node_b=owner,
                )
                total -= pair_mask_term(
                    seed, owner=owner, peer=node, length=length, modulus_bits=bits
                )
        if bits < 64:
            total &= np.uint64(params.modulus_mask)
        self._stage = ServerStage.DONE
        self._total = None
        log.info(
            "Secure aggregation %s: sum of %d inputs (%d sampled, %d dropped after sharing)",
            params.round_label,
            len(self._masked),
            params.n,
            len(self._dropped),
        )
        return total

    # -- state ----------------------------------------------------------------------

    @property
    def params(self) -> RoundParams:
        """The round's parameters."""
        return self._params

    @property
    def stage(self) -> ServerStage:
        """The stage whose replies are being collected."""
        return self._stage

    @property
    def abort_reason(self) -> str | None:
        """Why the round was aborted, if it was."""
        return self._abort_reason

    @property
    def advertised(self) -> frozenset[int]:
        """Nodes whose signed keys were accepted (stage 1)."""
        return frozenset(self._keys)

    @property
    def shared(self) -> frozenset[int]:
        """Nodes whose encrypted shares were accepted (stage 2)."""
        return frozenset(self._shared)

    @property
    def survivors(self) -> frozenset[int]:
        """Nodes whose masked inputs are in the sum (stage 3)."""
        return frozenset(self._masked)

    @property
    def unmasked(self) -> frozenset[int]:
        """Survivors whose unmasking shares were accepted (stage 4)."""
        return frozenset(self._unmasked)

    # -- internals --------------------------------------------------------------------

    def _expect(self, stage: ServerStage) -> None:
        if self._stage is ServerStage.ABORTED:
            raise RoundAborted(f"the round was aborted: {self._abort_reason}")
        if self._stage is not stage:
            raise StageError(f"called at stage {self._stage.value!r}; expects {stage.value!r}")

    def _require(self, count: int, what: str) -> None:
        if count < self._params.min_survivors:
            self._abort(f"{count} devices {what}; the round needs {self._params.min_survivors}")

    def _abort(self, reason: str) -> Never:
        self._stage = ServerStage.ABORTED
        self._abort_reason = reason
        self._total = None
        self._mask_points = {}
        self._key_points = {}
        log.warning("Secure aggregation %s aborted: %s", self._params.round_label, reason)
        raise RoundAborted(reason)

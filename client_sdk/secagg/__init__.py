"""Secure aggregation (SecAgg+, Bell et al. CCS 2020), semi-honest, with signed round keys.

The server learns the sum modulo ``2**k`` of the integer vectors of the devices that
survive a round, and nothing else about any one of them, unless it colludes with at
least ``t`` of a device's neighbours. This package holds the device's side and all that
both sides share; the server's side is ``server.secagg``. Neither side knows about
Flower Grids or ClientApps: each message is a dataclass that converts to and from
Flower records, and the caller moves them.

Stages, and who calls what (``S`` = ``server.secagg.ServerSession``, ``D`` =
:class:`DeviceSession`)::

    0 setup        S.setup_requests()          -> SetupRequest to every sampled node
    1 advertise    D.start(setup, ...)         -> AdvertiseKeysReply;  S.receive_advertise_keys
    2 share keys   S.share_keys_requests()     -> ShareKeysRequest;    D.share_keys
                                               -> ShareKeysReply;      S.receive_share_keys
    3 masked input S.masked_input_requests()   -> MaskedInputRequest;  D.masked_input(req, x)
                                               -> MaskedInputReply;    S.receive_masked_input
    4 unmask       S.unmask_requests()         -> UnmaskRequest;       D.unmask
                                               -> UnmaskReply;         S.receive_unmask
       result      S.result()                  -> sum of x mod 2**k, or RoundAborted

What follows Bell et al.'s semi-honest protocol (their Algorithm/Figure for SecAgg+):
two X25519 pairs per device (``c`` for encrypting shares, ``s`` for pairwise masks);
t-of-neighbours Shamir shares of ``s_sk`` and of a fresh self-mask seed ``b``; shares
encrypted to each neighbour with an AEAD keyed by ``KA(c_sk_i, c_pk_j)`` with both ids
inside; ``y_i = x_i + PRG(b_i) + sum_{j<i} PRG(s_ij) - sum_{j>i} PRG(s_ij)`` over the
neighbours whose shares reached ``i``; in unmasking each survivor reveals ``b``-shares of
surviving neighbours and ``s_sk``-shares of dropped ones; the server rebuilds both and
removes the masks.

Departures from the paper, and what they mean:

- **Signed keys.** Each device signs (round context digest, node id, c_pk, s_pk) with
  its Ed25519 device key (fixed-layout bytes, :func:`advertisement_payload`), and every
  neighbour checks that signature, in every round, against the key that attested that
  node in this run (the run's attestation record, forwarded by the server and verified
  with :func:`client_sdk.protocol.verify_attestation`; a device verifies an unchanged
  record once per run, :class:`VerifiedAttestations`). A device refuses the round on a bad
  signature or attestation, a public key or device key seen twice, a neighbour outside
  the graph, or fewer than ``t`` neighbours. The paper's semi-honest version trusts the
  server to relay keys; here a server cannot swap in keys of its own for a node without
  an attested device key of its own for that node.
- **The round context.** Every signature, HKDF derivation and AEAD associated data binds
  the SHA-256 digest of the round's parameters (run id, round label, the whole ring,
  degree, threshold, survivor floor, modulus bits, vector length). Neighbours given
  different parameters cannot complete a key exchange, so along the graph's edges all
  devices provably run the same round.
- **The graph is sent whole** (a ring of node ids and a degree) and each device derives
  its neighbours itself; the paper has the server send each device its neighbour list.
  A complete graph is used for small cohorts (``server.secagg.choose_graph``).
- **Strict-majority threshold** (``2t > d``), checked by every device: a server that
  tells some neighbours of a node "it survived" and others "it dropped" then needs
  ``2t - d`` colluding neighbours to rebuild both of its secrets. The paper's
  semi-honest version has no such constraint, and its malicious version adds a
  consistency round (signed survivor lists) that is not implemented here.
- **A survivor floor, ``min_survivors``**, part of the signed context: the server aborts
  below it at every stage and a device refuses to unmask when told of fewer survivors,
  or when the round's floor is below the device's own (``DeviceSession.start``).
  Distributed noise is calibrated for this many inputs.
- **Early decryption.** Shares are decrypted and checked when they arrive (stage 3),
  not in unmasking; the masking key and self-mask seed are forgotten once the masked
  input is sent.
- **One agreement per pair for the share keys.** ``KA(c_sk_i, c_pk_j)`` is computed once,
  in stage 2, and gives both directions' keys; device ``i`` keeps the key of ``j``'s
  shares to it and forgets ``c_sk`` then (the paper agrees again in unmasking). A
  device thus makes two X25519 agreements per neighbour, one with ``c`` and one with
  ``s``, the fewest two key pairs allow.
- **Direction-separated share keys** (HKDF info names sender then recipient) with a
  random 96-bit nonce, so the two members of a pair never encrypt under one key.
- **Shamir over GF(2**256 + 297)** with Python integers (see
  :mod:`client_sdk.secagg.shares` for why not pycryptodome's GF(2**128)), share
  x-coordinate = the holder's 1-based ring position.
- **PRG** = ChaCha20 keystream keyed by the full 32-byte seed (never numpy's
  generators, unlike Flower's SecAgg+, issue #7522).
- The server checks each rebuilt ``s_sk`` against its advertised ``s_pk`` and aborts on a
  mismatch rather than releasing a wrong sum.

Who must collude to learn one device's input. A server that follows the protocol
learns only the sum of at least ``min_survivors`` inputs unless ``t`` of that device's
neighbours pool their shares with it (and, on a sparse graph, the bounds of
``server.secagg.choose_graph`` hold: they fail with probability at most 2**-40). A
server that deviates needs only ``2t - d`` colluding neighbours: it tells some
neighbours "it survived" and others "it dropped" and rebuilds both secrets. That is
about a third of the cohort on the complete graph (``t = d - floor(n / 3)``) but 2 on
the sparse graphs, whose ``t`` is ``d / 2 + 1``.

What a malicious server can still do (this is the semi-honest protocol, hardened):
choose the ring and so the graph; lie about the cohort it sampled and about who
dropped out (it can drop honest devices to shrink the sum down to ``min_survivors``,
never below); register sybil devices with attested device keys of its own and place
them as a target's neighbours; equivocate in unmasking as above.

>>> from client_sdk.secagg import DeviceSession, RoundParams, SetupRequest
"""

from client_sdk.secagg.attestations import VerifiedAttestations
from client_sdk.secagg.device import DeviceSession, DeviceStage
from client_sdk.secagg.errors import (
    MessageError,
    ReplyRejected,
    RoundAborted,
    RoundRefused,
    SecAggError,
    StageError,
)
from client_sdk.secagg.graph import check_degree, neighbours, random_ring
from client_sdk.secagg.keys import (
    KeyPair,
    advertisement_payload,
    pair_seed,
    share_key,
    sign_advertisement,
    verify_advertisement,
)
from client_sdk.secagg.masks import (
    check_input,
    expand,
    mask_input,
    pair_mask_term,
    sum_fits_modulus,
)
from client_sdk.secagg.messages import (
    AdvertiseKeysReply,
    Attestation,
    MaskedInputReply,
    MaskedInputRequest,
    NeighbourKeys,
    SetupRequest,
    ShareKeysReply,
    ShareKeysRequest,
    UnmaskReply,
    UnmaskRequest,
)
from client_sdk.secagg.params import MAX_MODULUS_BITS, RoundParams
from client_sdk.secagg.shares import (
    CIPHERTEXT_BYTES,
    PRIME,
    combine_shares,
    decode_share,
    decrypt_shares,
    encode_share,
    encrypt_shares,
    split_secret,
)

__all__ = [
    "CIPHERTEXT_BYTES",
    "MAX_MODULUS_BITS",
    "PRIME",
    "AdvertiseKeysReply",
    "Attestation",
    "DeviceSession",
    "DeviceStage",
    "KeyPair",
    "MaskedInputReply",
    "MaskedInputRequest",
    "MessageError",
    "NeighbourKeys",
    "ReplyRejected",
    "RoundAborted",
    "RoundParams",
    "RoundRefused",
    "SecAggError",
    "SetupRequest",
    "ShareKeysReply",
    "ShareKeysRequest",
    "StageError",
    "UnmaskReply",
    "UnmaskRequest",
    "VerifiedAttestations",
    "advertisement_payload",
    "check_degree",
    "check_input",
    "combine_shares",
    "decode_share",
    "decrypt_shares",
    "encode_share",
    "encrypt_shares",
    "expand",
    "mask_input",
    "neighbours",
    "pair_mask_term",
    "pair_seed",
    "random_ring",
    "share_key",
    "sign_advertisement",
    "split_secret",
    "sum_fits_modulus",
    "verify_advertisement",
]

"""The device's part in a secure sum: its protocol session across messages, and its input.

Between messages a ClientApp keeps nothing but its ``context.state`` (Flower persists it
per node and run, in simulation and deployment alike), so the round's
:class:`~client_sdk.secagg.DeviceSession` (its private keys included) is stored there
and never leaves the node. Stages 0-2 and 4 arrive as ``query.secagg``
(:func:`secagg_reply`); stage 3 arrives inside the round's own message, where the caller
computes its vector and :func:`masked_reply` encodes it (fixed point, stochastic
rounding, the device's share of the Skellam noise: :class:`privacy.DistributedSkellam`)
and masks it. The attestation records the device verified in earlier rounds of the run
are kept in ``context.state`` too (:class:`~client_sdk.secagg.VerifiedAttestations`),
so each is verified once per run; the round keys' signatures are verified every round.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt
from flwr.app import ConfigRecord, Context, Message, RecordDict

from client_sdk.keys import DeviceKey
from client_sdk.policy import DevicePolicy
from client_sdk.secagg import (
    DeviceSession,
    MaskedInputRequest,
    MessageError,
    RoundRefused,
    SecAggError,
    SetupRequest,
    ShareKeysRequest,
    UnmaskRequest,
    VerifiedAttestations,
)
from privacy.distributed import DistributedSkellam
from privacy.quantization import conditional_round, to_modular

__all__ = [
    "ATTESTATIONS_RECORD",
    "STATE_RECORD",
    "has_masked_request",
    "masked_reply",
    "secagg_reply",
    "skellam_for",
]

log = logging.getLogger(__name__)

STATE_RECORD: Final = "secagg-session"
ATTESTATIONS_RECORD: Final = "secagg-verified-attestations"


def _load(context: Context) -> DeviceSession:
    record = context.state.config_records.get(STATE_RECORD)
    blob = None if record is None else record.get("session")
    if not isinstance(blob, bytes):
        raise MessageError("no secure-aggregation round is under way on this node")
    return DeviceSession.from_bytes(blob)


def _save(context: Context, session: DeviceSession) -> None:
    context.state[STATE_RECORD] = ConfigRecord({"session": session.to_bytes()})


def _verified(context: Context, run_id: int) -> VerifiedAttestations:
    """The attestations this node verified earlier in the run (none if unreadable)."""
    record = context.state.config_records.get(ATTESTATIONS_RECORD)
    blob = None if record is None else record.get("digests")
    if isinstance(blob, bytes):
        try:
            verified = VerifiedAttestations.from_bytes(blob)
        except MessageError:
            log.warning("Unreadable verified attestations in this node's state: starting anew")
        else:
            if verified.run_id == run_id:
                return verified
    return VerifiedAttestations(run_id=run_id)


def has_masked_request(content: RecordDict) -> bool:
    """Whether a round's message asks for a masked input (a secure round)."""
    return MaskedInputRequest.RECORD in content


def secagg_reply(
    message: Message, context: Context, *, key: DeviceKey, policy: DevicePolicy
) -> RecordDict:
    """Answer a ``query.secagg`` message (setup, share keys or unmask) for this device.

    Raises :class:`~client_sdk.secagg.RoundRefused` when the round breaks the protocol
    or the device's policy (e.g. fewer survivors allowed than its ``min_survivors``);
    the session is kept refused and the device sends nothing more in that round.
    """
    content = message.content
    if SetupRequest.RECORD in content:
        setup = SetupRequest.from_record_dict(content)
        try:
            session, advertised = DeviceSession.start(
                setup,
                node_id=message.metadata.dst_node_id,
                device_key=key,
                minimum_survivors=policy.min_survivors,
            )
        except RoundRefused:
            context.state.config_records.pop(STATE_RECORD, None)
            raise
        _save(context, session)
        return advertised.to_record_dict()
    session = _load(context)
    try:
        if ShareKeysRequest.RECORD in content:
            request = ShareKeysRequest.from_record_dict(content)
            verified = _verified(context, session.params.run_id)
            try:
                return session.share_keys(request, verified=verified).to_record_dict()
            finally:  # what verified stays verified, whether the round goes on or not
                context.state[ATTESTATIONS_RECORD] = ConfigRecord({"digests": verified.to_bytes()})
        if UnmaskRequest.RECORD in content:
            return session.unmask(UnmaskRequest.from_record_dict(content)).to_record_dict()
        raise MessageError("a query.secagg message without a known request")
    finally:
        _save(context, session)  # a refusal is remembered too


def skellam_for(
    session: DeviceSession, *, clip_norm: float, noise_multiplier: float
) -> DistributedSkellam:
    """The encoding a round uses: its size, threshold and modulus, with (C, sigma)."""
    params = session.params
    return _skellam(
        clip_norm=float(clip_norm),
        dimension=params.vector_length,
        max_devices=params.n,
        min_survivors=params.min_survivors,
        noise_multiplier=float(noise_multiplier),
        bits=params.modulus_bits,
    )


@lru_cache(maxsize=32)
def _skellam(
    *,
    clip_norm: float,
    dimension: int,
    max_devices: int,
    min_survivors: int,
    noise_multiplier: float,
    bits: int,
) -> DistributedSkellam:
    """The mechanism for these parameters, derived once per process: finding its scale
    takes up to 80 bisection steps (0.2-0.6 ms), and the result is an immutable
    function of the arguments, which are the whole key."""
    return DistributedSkellam(
        clip_norm=clip_norm,
        dimension=dimension,
        max_devices=max_devices,
        min_survivors=min_survivors,
        noise_multiplier=noise_multiplier,
        bits=bits,
    )


def masked_reply(
    message: Message,
    context: Context,
    vector: npt.ArrayLike,
    *,
    clip_norm: float,
    noise_multiplier: float,
    noise: bool = True,
) -> RecordDict:
    """This device's masked input: ``vector`` (L2 norm at most ``clip_norm``) encoded with
    its noise share and masked.

    ``noise=False`` leaves the noise out: only tests that check the sum is exact use it,
    through :func:`client_sdk.client_app.make_client_app`'s test-only switch; no
    configuration reaches it.
    """
    session = _load(context)
    request = MaskedInputRequest.from_record_dict(message.content)
    mechanism = skellam_for(session, clip_norm=clip_norm, noise_multiplier=noise_multiplier)
    values = np.asarray(vector, dtype=np.float64)
    if noise:
        encoded = mechanism.encode(values)
    else:
        rounded = conditional_round(
            values * mechanism.scale, max_square=mechanism.max_square, rng=np.random.default_rng()
        )
        encoded = to_modular(rounded, bits=mechanism.bits)
    try:
        reply = session.masked_input(request, encoded)
    except SecAggError:
        _save(context, session)
        raise
    _save(context, session)
    return reply.to_record_dict()

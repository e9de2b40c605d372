"""What the server sees: masked vectors that look uniform, and never a device's clear vector."""

from __future__ import annotations

import numpy as np

from client_sdk.secagg import MaskedInputReply
from tests.secagg.harness import (
    UNIFORMITY_ALPHA,
    Federation,
    from_wire,
    random_vectors,
    to_wire,
    top_bits_p_value,
)


def test_a_masked_vector_is_uniform_even_when_the_input_is_extreme() -> None:
    length, bits = 4096, 32
    fed = Federation(5, vector_length=length, modulus_bits=bits, seed=11)
    vectors = random_vectors(fed.devices, length=length, modulus_bits=bits, seed=11)
    target = next(iter(fed.devices))
    vectors[target] = np.full(length, (1 << bits) - 1, dtype=np.uint64)  # all in the top bin

    outcome = fed.run(vectors)
    masked = [
        from_wire(MaskedInputReply, data).masked
        for stage, _, data in outcome.server_received
        if stage == "masked-input"
    ]

    assert outcome.total is not None and len(masked) == 5
    assert (
        top_bits_p_value(vectors[target], bits) < UNIFORMITY_ALPHA
    )  # the test would catch no mask
    assert all(top_bits_p_value(m, bits) > UNIFORMITY_ALPHA for m in masked)


def test_the_server_never_receives_a_planted_vector_in_the_clear() -> None:
    length, bits = 64, 64
    fed = Federation(10, vector_length=length, modulus_bits=bits, seed=12)
    vectors = random_vectors(fed.devices, length=length, modulus_bits=bits, seed=12)
    target = next(iter(fed.devices))
    planted = (np.arange(length, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(
        0xDEADBEEFCAFEF00D
    )
    vectors[target] = planted
    patterns = [
        planted.astype("<u8").tobytes()[:32],
        planted.astype(">u8").tobytes()[:32],
        planted.astype("<u8").tobytes()[-32:],
        planted.astype(">u8").tobytes()[-32:],
    ]
    # The search finds the vector where it would be if a device sent it unmasked.
    unmasked_reply = to_wire(MaskedInputReply(masked=planted))
    assert any(pattern in unmasked_reply for pattern in patterns)

    outcome = fed.run(vectors)

    assert outcome.total is not None and len(outcome.server_received) == 40
    for _, _, data in outcome.server_received:
        assert not any(pattern in data for pattern in patterns)

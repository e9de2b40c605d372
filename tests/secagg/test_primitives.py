"""The building blocks: Shamir shares, share encryption, the mask generator, key derivations."""

from __future__ import annotations

import itertools
import secrets

import nacl.bindings
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.errors import InvalidArgumentError
from client_sdk.secagg import (
    PRIME,
    KeyPair,
    RoundParams,
    combine_shares,
    decrypt_shares,
    encrypt_shares,
    expand,
    pair_seed,
    share_key,
    split_secret,
)
from client_sdk.secagg.masks import check_input


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    threshold=st.integers(1, 8),
    extra=st.integers(0, 5),
    data=st.data(),
)
def test_any_t_shares_rebuild_the_secret(
    secret: bytes, threshold: int, extra: int, data: st.DataObject
) -> None:
    xs = data.draw(
        st.lists(
            st.integers(1, 70000),
            min_size=threshold + extra,
            max_size=threshold + extra,
            unique=True,
        )
    )
    shares = split_secret(secret, threshold=threshold, xs=xs)
    chosen = data.draw(st.permutations(list(zip(xs, shares, strict=True))))[:threshold]

    assert combine_shares(chosen, threshold=threshold) == secret


def test_fewer_than_t_shares_do_not_rebuild_the_secret() -> None:
    secret = secrets.token_bytes(32)
    shares = split_secret(secret, threshold=5, xs=[1, 2, 3, 4, 5, 6])
    points = list(zip([1, 2, 3, 4, 5, 6], shares, strict=True))

    with pytest.raises(ValueError, match="cannot rebuild"):
        combine_shares(points[:4], threshold=5)
    # Interpolating t - 1 shares as if t - 1 were enough gives something else.
    assert combine_shares(points[:4], threshold=4) != secret


def test_every_t_minus_one_shares_fit_every_secret() -> None:
    # Perfect secrecy, concretely: with t = 3, for two shares and ANY claimed secret there
    # is a degree-2 polynomial through all three points, so two shares say nothing.
    shares = split_secret(b"\x07" * 32, threshold=3, xs=[1, 2, 3])
    known = [(1, shares[0]), (2, shares[1])]
    for claimed in (b"\x00" * 32, b"\xff" * 32, b"\x07" * 32):
        # The polynomial through (0, claimed) and the two known shares, at x = 5:
        third = (5, _interpolate(known, int.from_bytes(claimed, "big"), 5))
        assert combine_shares([*known, third], threshold=3) == claimed


def _interpolate(points: list[tuple[int, int]], at_zero: int, x: int) -> int:
    nodes = [(0, at_zero), *points]
    total = 0
    for j, (xj, yj) in enumerate(nodes):
        weight = 1
        for m, (xm, _) in enumerate(nodes):
            if m != j:
                weight = weight * (x - xm) * pow(xj - xm, -1, PRIME) % PRIME
        total = (total + yj * weight) % PRIME
    return total


@pytest.mark.parametrize(
    ("points", "complaint"),
    [
        ([(1, 5), (1, 6)], "distinct"),
        ([(0, 5), (1, 6)], "distinct"),
        ([(1, PRIME), (2, 6)], "field element"),
    ],
)
def test_bad_share_points_are_refused(points: list[tuple[int, int]], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        combine_shares(points, threshold=2)


def test_encrypted_shares_open_only_for_the_right_key_round_and_pair() -> None:
    key, context = secrets.token_bytes(32), secrets.token_bytes(32)
    box = encrypt_shares(key, context=context, sender=1, recipient=2, key_share=11, mask_share=22)

    assert decrypt_shares(key, box, context=context, sender=1, recipient=2) == (11, 22)
    for wrong_key, wrong_context, sender, recipient in [
        (secrets.token_bytes(32), context, 1, 2),
        (key, bytes(32), 1, 2),
        (key, context, 3, 2),
        (key, context, 1, 1),
    ]:
        with pytest.raises(ValueError, match="authenticate"):
            decrypt_shares(
                wrong_key, box, context=wrong_context, sender=sender, recipient=recipient
            )
    flipped = bytearray(box)
    flipped[20] ^= 1
    with pytest.raises(ValueError, match="authenticate"):
        decrypt_shares(key, bytes(flipped), context=context, sender=1, recipient=2)


def test_the_two_directions_of_a_pair_use_different_keys_and_the_mask_seed_is_shared() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    shared = a.agree(b.public)
    assert shared == b.agree(a.public)
    context = bytes(32)

    assert share_key(shared, context=context, sender=1, recipient=2) != share_key(
        shared, context=context, sender=2, recipient=1
    )
    assert pair_seed(shared, context=context, node_a=1, node_b=2) == pair_seed(
        shared, context=context, node_a=2, node_b=1
    )
    assert pair_seed(shared, context=context, node_a=1, node_b=2) != pair_seed(
        shared, context=b"\x01" * 32, node_a=1, node_b=2
    )


def test_a_low_order_public_key_is_refused() -> None:
    with pytest.raises(ValueError):
        KeyPair.generate().agree(bytes(32))


def test_the_mask_is_the_chacha20_keystream_as_libsodium_computes_it() -> None:
    # An independent implementation: libsodium's IETF ChaCha20-Poly1305 encrypts with the
    # keystream from block 1 on, under the same 96-bit nonce (our domain tag).
    seed = secrets.token_bytes(32)
    words = expand(seed, length=64, modulus_bits=64, domain="self")
    sealed = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
        bytes(8 * 56), None, b"moodfed-self", seed
    )
    assert words.astype("<u8").tobytes()[64:] == sealed[:-16]


def test_the_mask_depends_on_every_byte_of_the_seed() -> None:
    # Flower's generator folds the seed to 32 bits; here every byte matters.
    seed = secrets.token_bytes(32)
    base = expand(seed, length=8, modulus_bits=64, domain="pair")
    for index in range(32):
        changed = bytearray(seed)
        changed[index] ^= 1
        assert not np.array_equal(
            base, expand(bytes(changed), length=8, modulus_bits=64, domain="pair")
        )
    assert not np.array_equal(base, expand(seed, length=8, modulus_bits=64, domain="self"))


def test_masks_are_reduced_modulo_2_to_the_k() -> None:
    for bits in (1, 8, 33, 63):
        words = expand(secrets.token_bytes(32), length=4096, modulus_bits=bits, domain="self")
        assert int(words.max()) < 1 << bits
        assert int(words.max()) >= (1 << bits) * 3 // 4  # uses the whole range


@pytest.mark.parametrize(
    "vector",
    [
        [1, 2, 3],
        np.array([1.0, 2.0, 3.0, 4.0]),
        np.array([1, 2, 3]),
        np.array([1, 2, 3, -1]),
        np.array([1, 2, 3, 1 << 16], dtype=np.uint64),
        np.zeros((2, 2), dtype=np.uint64),
        np.array([True, False, True, False]),
    ],
    ids=["list", "float", "short", "negative", "too-big", "2-D", "bool"],
)
def test_a_bad_input_vector_is_a_clear_error(vector: object) -> None:
    with pytest.raises(InvalidArgumentError):
        check_input(vector, length=4, modulus_bits=16)


def test_the_lagrange_weights_of_every_subset_sum_to_one() -> None:
    # Rebuilding the constant polynomial 1 from any subset checks every weight set.
    xs = list(range(1, 8))
    ones = [(x, 1) for x in xs]
    for subset in itertools.combinations(ones, 4):
        assert combine_shares(list(subset), threshold=4) == (1).to_bytes(32, "big")


def test_the_field_is_the_least_prime_above_2_to_the_256() -> None:
    from Crypto.Util.number import isPrime

    assert PRIME == 2**256 + 297 and isPrime(PRIME)
    assert not any(isPrime(2**256 + c) for c in range(1, 297))


@settings(max_examples=60, deadline=None)
@given(
    label=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=200),
    ring=st.lists(st.integers(0, 2**64 - 1), min_size=3, max_size=40, unique=True),
    run_id=st.integers(0, 2**64 - 1),
    vector_length=st.integers(1, 1 << 24),
    modulus_bits=st.integers(1, 64),
)
def test_the_round_context_hashes_exactly_the_rfc8785_bytes_of_the_parameters(
    label: str, ring: list[int], run_id: int, vector_length: int, modulus_bits: int
) -> None:
    import hashlib
    import json

    import rfc8785

    n = len(ring)
    params = RoundParams(
        run_id=run_id,
        round_label=label,
        ring=tuple(ring),
        degree=n - 1,
        threshold=n - 1,
        min_survivors=n,
        modulus_bits=modulus_bits,
        vector_length=vector_length,
    )

    assert rfc8785.dumps(json.loads(params.jcs())) == params.jcs()
    assert json.loads(params.jcs())["ring"] == [str(node) for node in ring]
    assert json.loads(params.jcs())["round"] == label
    assert params.context == hashlib.sha256(params.jcs()).digest()

"""Masks: a cryptographic generator keyed by the whole 32-byte seed, and the wrap-around bound.

``expand(seed)`` is the ChaCha20 keystream (``cryptography``) under the full 32-byte
seed, counter 0 and a 12-byte domain tag as nonce (one tag for self masks, one for
pairwise masks), read as little-endian uint64 words and reduced modulo ``2**k`` by
masking the low ``k`` bits (``2**k`` divides ``2**64``, so each word stays uniform).
Never numpy's generators: Flower's ``pseudo_rand_gen`` folds the seed to 32 bits and
feeds a Mersenne Twister (Flower issue #7522), so 2**32 guesses find any mask.

A device's masked input is, modulo ``2**k``::

    y_i = x_i + PRG(b_i) + sum_{j in P_i, j < i} PRG(s_ij) - sum_{j in P_i, j > i} PRG(s_ij)

where ``P_i`` is the set of neighbours whose encrypted shares reached ``i``. Every pair
of survivors adds and subtracts the same mask, so their masks cancel in the sum.

The overflow bound. The server obtains ``sum_i x_i mod 2**k``. This equals the
integer sum exactly when it cannot wrap: if each of at most ``n`` inputs has every
coordinate in ``[0, M]`` and ``n * M < 2**k``. For signed values carried in two's
complement (``v mod 2**k``), the sum read back as a signed k-bit integer is exact when
each coordinate lies in ``[-L, L]`` and ``n * L < 2**(k - 1)``. Whoever encodes the
inputs (fixed point plus integer noise) must choose ``k`` and the clipping bound so that
this holds with ``n`` the number of sampled devices.

>>> sum_fits_modulus(count=5, max_value=51, modulus_bits=8)   # 5 * 51 = 255 < 256
True
>>> sum_fits_modulus(count=5, max_value=52, modulus_bits=8)   # 260 wraps
False
>>> expand(bytes(32), length=2, modulus_bits=64, domain="self").dtype
dtype('uint64')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from numpy.typing import NDArray

from client_sdk.errors import InvalidArgumentError

__all__ = [
    "check_input",
    "expand",
    "mask_input",
    "pair_mask_term",
    "sum_fits_modulus",
]

_DOMAINS: Final = {"self": b"moodfed-self", "pair": b"moodfed-pair"}
_SEED_BYTES: Final = 32


def sum_fits_modulus(*, count: int, max_value: int, modulus_bits: int) -> bool:
    """Whether ``count`` inputs in ``[0, max_value]`` always sum to less than ``2**modulus_bits``.

    When it holds, the secure sum modulo ``2**modulus_bits`` is the integer sum.
    """
    if count < 0 or max_value < 0:
        raise InvalidArgumentError("count and max_value must be non-negative")
    return count * max_value < 1 << modulus_bits


def expand(
    seed: bytes, *, length: int, modulus_bits: int, domain: Literal["self", "pair"]
) -> NDArray[np.uint64]:
    """``length`` words of ChaCha20 keystream under ``seed``, modulo ``2**modulus_bits``."""
    if not isinstance(seed, bytes) or len(seed) != _SEED_BYTES:
        raise ValueError("a mask seed is exactly 32 bytes")
    nonce = b"\x00\x00\x00\x00" + _DOMAINS[domain]  # 32-bit counter 0, then the 96-bit nonce
    encryptor = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
    words = np.frombuffer(encryptor.update(bytes(8 * length)), dtype="<u8").astype(np.uint64)
    if modulus_bits < 64:
        words &= np.uint64((1 << modulus_bits) - 1)
    return words


def check_input(vector: object, *, length: int, modulus_bits: int) -> NDArray[np.uint64]:
    """``vector`` as a fresh uint64 array, or ``InvalidArgumentError`` if it is not a 1-D
    integer array of ``length`` values in ``[0, 2**modulus_bits)``."""
    if not isinstance(vector, np.ndarray) or vector.dtype.kind not in "ui":
        raise InvalidArgumentError("the input must be a numpy integer array (uint64)")
    if vector.shape != (length,):
        raise InvalidArgumentError(f"the input must have shape ({length},), got {vector.shape}")
    if vector.dtype.kind == "i" and length and int(vector.min()) < 0:
        raise InvalidArgumentError("the input must hold non-negative integers")
    if length and int(vector.max()) >> modulus_bits:
        raise InvalidArgumentError(f"the input must hold integers below 2**{modulus_bits}")
    return vector.astype(np.uint64, copy=True)


def mask_input(
    vector: NDArray[np.uint64],
    *,
    node_id: int,
    self_seed: bytes,
    pair_seeds: Mapping[int, bytes],
    modulus_bits: int,
) -> NDArray[np.uint64]:
    """The masked input ``y_i`` (see the module docstring); ``pair_seeds`` maps peer -> s_ij."""
    length = len(vector)
    masked = vector.astype(np.uint64, copy=True)
    masked += expand(self_seed, length=length, modulus_bits=modulus_bits, domain="self")
    for peer, seed in pair_seeds.items():
        mask = expand(seed, length=length, modulus_bits=modulus_bits, domain="pair")
        if peer < node_id:
            masked += mask
        else:
            masked -= mask
    if modulus_bits < 64:
        masked &= np.uint64((1 << modulus_bits) - 1)
    return masked


def pair_mask_term(
    seed: bytes, *, owner: int, peer: int, length: int, modulus_bits: int
) -> NDArray[np.uint64]:
    """The pairwise term ``owner`` put in its masked input for ``peer`` (sign included).

    The server subtracts it for each surviving ``owner`` of a dropped ``peer``.
    """
    mask = expand(seed, length=length, modulus_bits=modulus_bits, domain="pair")
    return mask if peer < owner else np.uint64(0) - mask

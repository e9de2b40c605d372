"""What a secure sum reveals, computed in one process from inputs already at hand.

SecAgg+'s masks cancel in the modular sum, so encoding each device's vector as the
device does (:meth:`privacy.DistributedSkellam.encode`: rounding and its noise share)
and adding the results modulo 2^k gives exactly what the server unmasks. Seeded demo
stores and tests that hold the inputs use it; production always runs the protocol.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from client_sdk.secagg import RoundParams
from privacy.distributed import DistributedSkellam
from server.secagg.driver import SecureSum

__all__ = ["local_sum"]


def local_sum(
    params: RoundParams,
    mechanism: DistributedSkellam,
    inputs: Iterable[npt.ArrayLike],
    *,
    rng: np.random.Generator | None = None,
) -> SecureSum:
    """The modular sum of every input, each encoded with its noise share."""
    total = np.zeros(mechanism.dimension, dtype=np.uint64)
    count = 0
    for values in inputs:
        total += mechanism.encode(values, rng=rng)
        count += 1
    total &= np.uint64((1 << mechanism.bits) - 1)
    return SecureSum(total=total, survivors=count, params=params)

"""DP-FedAvg aggregation: clipped sum, Gaussian noise, fixed denominator.

The noisy average is (sum of updates, each clipped to C) + N(0, (sigma * C)^2), divided
by the *expected* number of participants q * |eligible|, fixed before sampling. Both
choices carry the privacy argument: the sum's sensitivity to one user is C whatever
they send, and a fixed denominator means a failed, slow or refusing device changes
nothing but its own (zero) term, so neither the noise nor the accounting depend on who
answered. The server clips again whatever the device says it did; an update that is
not exactly the expected arrays counts as no update. The DP math itself (clipping,
noise) is ``privacy``'s; this module only wires it to Flower's records.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from flwr.app import ArrayRecord, Message

from client_sdk.protocol import UPDATE_RECORD
from privacy import add_gaussian_noise, clip_update

__all__ = ["apply_average", "dp_fedavg", "next_global", "parse_update"]

log = logging.getLogger(__name__)


def parse_update(reply: Message, template: Sequence[np.ndarray]) -> list[np.ndarray] | None:
    """The update a training reply carries, or None if it is not a well-formed update.

    Well-formed means: no error, exactly one record named ``update``, an ArrayRecord with
    keys "0".."n-1" whose arrays have the global model's shapes. Values are not trusted
    (:func:`dp_fedavg` clips, and zeroes non-finite updates).
    """
    if reply.has_error() or not reply.has_content():
        return None
    content = reply.content
    if set(content.keys()) != {UPDATE_RECORD}:
        return None
    record = content[UPDATE_RECORD]
    if not isinstance(record, ArrayRecord):
        return None
    if list(record.keys()) != [str(i) for i in range(len(template))]:
        return None
    try:
        arrays = record.to_numpy_ndarrays()
    except Exception:  # a malformed array from a device is its failure, not ours
        log.debug("An update could not be decoded", exc_info=True)
        return None
    for array, expected in zip(arrays, template, strict=True):
        if array.shape != expected.shape or not np.issubdtype(array.dtype, np.number):
            return None
    return arrays


def dp_fedavg(
    updates: Sequence[Sequence[np.ndarray]],
    *,
    template: Sequence[np.ndarray],
    clipping_norm: float,
    noise_multiplier: float,
    expected_count: float,
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """The noisy average update: (sum of clipped updates + noise sigma*C) / expected count.

    ``template`` gives the shapes and dtypes (the global model); ``rng`` defaults to the
    CSPRNG-seeded generator of :func:`privacy.add_gaussian_noise`.

    >>> template = [np.zeros(2, np.float32)]
    >>> out = dp_fedavg([[np.array([30.0, 40.0])]], template=template, clipping_norm=1.0,
    ...                 noise_multiplier=1e-12, expected_count=2.0)
    >>> [round(float(v), 3) for v in out[0]]
    [0.3, 0.4]
    """
    if expected_count <= 0:
        raise ValueError(f"the expected count must be positive, got {expected_count!r}")
    total = [np.zeros(array.shape, dtype=np.float64) for array in template]
    for update in updates:
        if len(update) != len(total) or any(
            np.shape(a) != t.shape for a, t in zip(update, total, strict=True)
        ):
            raise ValueError("an update does not have the global model's shapes")
        as_float = [np.asarray(a, dtype=np.float64) for a in update]
        clipped, _ = clip_update(as_float, max_norm=clipping_norm)
        for running, value in zip(total, clipped, strict=True):
            running += value
    noisy = add_gaussian_noise(
        total, sensitivity=clipping_norm, noise_multiplier=noise_multiplier, rng=rng
    )
    # Numpy in, numpy out (``noisy`` is typed numpy-or-torch per array).
    return [
        np.asarray(value / expected_count, dtype=reference.dtype)
        for value, reference in zip(noisy, template, strict=True)
    ]


def next_global(
    weights: Sequence[np.ndarray],
    updates: Sequence[Sequence[np.ndarray]],
    *,
    clipping_norm: float,
    noise_multiplier: float,
    expected_count: float,
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """The next global model: ``weights`` + :func:`dp_fedavg` of the updates (server
    learning rate 1), in the global model's dtypes."""
    average = dp_fedavg(
        updates,
        template=weights,
        clipping_norm=clipping_norm,
        noise_multiplier=noise_multiplier,
        expected_count=expected_count,
        rng=rng,
    )
    return [(w + a).astype(w.dtype) for w, a in zip(weights, average, strict=True)]


def apply_average(weights: Sequence[np.ndarray], average: npt.ArrayLike) -> list[np.ndarray]:
    """The next global model: ``weights`` plus a flat average update laid out in their order
    and shapes (a secure round's decoded, noised sum over the expected count).

    >>> [w.tolist() for w in apply_average([np.zeros(2), np.ones(1)], [0.5, -1.0, 2.0])]
    [[0.5, -1.0], [3.0]]
    """
    flat = np.asarray(average, dtype=np.float64)
    sizes = [int(np.prod(w.shape)) for w in weights]
    if flat.shape != (sum(sizes),):
        raise ValueError(f"an average of shape {flat.shape} for a model of {sum(sizes)} values")
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    return [
        np.asarray(w + part.reshape(w.shape), dtype=w.dtype)
        for w, part in zip(weights, parts, strict=True)
    ]

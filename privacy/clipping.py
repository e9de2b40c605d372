"""L2 clipping of a model update: the step that bounds one user's sensitivity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias, overload

import numpy as np

from privacy._arrays import is_tensor, torch_module

if TYPE_CHECKING:
    import torch

__all__ = ["Array", "clip_factors", "clip_update", "update_norm"]

Array: TypeAlias = "np.ndarray | torch.Tensor"
"""One array of a model update: a numpy array (Flower's NDArrays) or a torch tensor."""

# Relative margin kept below max_norm so that float rounding in the rescale (and in
# the norm's own summation) can never leave the clipped norm above max_norm.
_MIN_MARGIN = 1e-9


def _as_float_array(value: np.ndarray) -> np.ndarray:
    array = np.asarray(value)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


def _squared_norm(value: Array) -> float:
    if is_tensor(value):
        return float(value.detach().double().pow(2).sum().item())
    with np.errstate(over="ignore"):  # an overflow is handled by clip_update
        return float(np.sum(np.square(_as_float_array(value), dtype=np.float64)))


def _is_finite(value: Array) -> bool:
    if is_tensor(value):
        torch = torch_module()
        return bool(torch.isfinite(value.detach()).all().item())
    return bool(np.isfinite(_as_float_array(value)).all())


def _resolution(value: Array) -> float:
    if is_tensor(value):
        torch = torch_module()
        dtype = value.dtype if value.is_floating_point() else torch.float64
        return float(torch.finfo(dtype).eps)
    return float(np.finfo(_as_float_array(value).dtype).eps)


def _scaled(value: Array, factor: float) -> Array:
    if is_tensor(value):
        source = value.detach()
        if not source.is_floating_point():
            source = source.double()
        return source * factor
    return _as_float_array(value) * factor


def _zeros_like(value: Array) -> Array:
    if is_tensor(value):
        torch = torch_module()
        dtype = value.dtype if value.is_floating_point() else torch.float64
        return value.new_zeros(value.shape, dtype=dtype)
    return np.zeros_like(_as_float_array(value))


def update_norm(update: Sequence[Array]) -> float:
    """The L2 norm of the whole update, as if all its arrays were one flat vector.

    Computed in float64 whatever the arrays' dtype; NaN or inf if any entry is.

    >>> update_norm([np.array([3.0]), np.array([[4.0]])])
    5.0
    """
    return math.sqrt(sum(_squared_norm(value) for value in update))


def clip_update(update: Sequence[Array], *, max_norm: float) -> tuple[list[Array], float]:
    """Scale ``update`` down so its flat L2 norm is at most ``max_norm``.

    Returns the clipped arrays (same shapes and kinds, numpy or torch, floating
    dtypes kept) and the norm before clipping. An update already within ``max_norm``
    comes back unchanged; a longer one is scaled to just under ``max_norm`` (by a
    relative margin of at least 1e-9, a few units of the dtype's precision) so
    rounding can never leave it above.

    An update with any NaN or inf entry is replaced by zeros and its norm is
    reported as ``inf``. Its norm is not a number, so ``norm > max_norm`` is false
    and naive clipping would pass it through: a single malicious or broken device
    could then poison the noisy sum and break the sensitivity bound that the whole
    DP guarantee rests on. Zeros are the contribution of a user who sends nothing.

    >>> clipped, norm = clip_update([np.array([3.0, 4.0])], max_norm=1.0)
    >>> norm, bool(update_norm(clipped) <= 1.0)
    (5.0, True)
    >>> clip_update([np.array([np.nan, 1.0])], max_norm=1.0)
    ([array([0., 0.])], inf)
    """
    if not math.isfinite(max_norm) or max_norm <= 0:
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm!r}")
    values = list(update)
    if not all(_is_finite(value) for value in values):
        return [_zeros_like(value) for value in values], math.inf
    norm = update_norm(values)
    if not math.isfinite(norm):
        # Finite entries whose squares overflow float64: scale first, then measure.
        scale = max(
            float(np.max(np.abs(np.asarray(v.detach().cpu() if is_tensor(v) else v))))
            for v in values
        )
        norm = scale * update_norm([_scaled(value, 1.0 / scale) for value in values])
    if norm <= max_norm:
        return values, norm
    margin = _margin(max((_resolution(value) for value in values), default=0.0))
    factor = max_norm / norm * (1.0 - margin)
    return [_scaled(value, factor) for value in values], norm


def _margin(resolution: float) -> float:
    return max(_MIN_MARGIN, 4 * resolution)


@overload
def clip_factors(norms: np.ndarray, *, max_norm: float) -> np.ndarray: ...
@overload
def clip_factors(norms: torch.Tensor, *, max_norm: float) -> torch.Tensor: ...
def clip_factors(norms: Array, *, max_norm: float) -> Array:
    """Per-example scale factors that clip a batch of updates with these L2 ``norms``.

    The batched form of :func:`clip_update`, for DP-SGD's per-example gradients:
    multiplying update ``i`` by ``factors[i]`` leaves its norm at most ``max_norm``.
    A factor is ``min(1, max_norm * (1 - margin) / norm)`` with the same margin as
    :func:`clip_update` (so a norm within a hair of ``max_norm`` is shortened by that
    hair), and 0 for a NaN, infinite or negative norm: such an example contributes
    nothing, for the reason given in :func:`clip_update`. ``norms`` is a numpy array
    or a torch tensor (the result is the same kind, floating dtype kept, float64 for
    integer input) so the factors can stay on the device that made the gradients.

    >>> clip_factors(np.array([0.5, 2.0, np.inf, np.nan]), max_norm=1.0).round(6)
    array([1. , 0.5, 0. , 0. ])
    """
    if not math.isfinite(max_norm) or max_norm <= 0:
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm!r}")
    if is_tensor(norms):
        torch = torch_module()
        tensor = norms.detach() if norms.requires_grad else norms
        if not tensor.is_floating_point():
            tensor = tensor.double()
        scale = max_norm * (1.0 - _margin(float(torch.finfo(tensor.dtype).eps)))
        # reciprocal * scale, clamped: norm 0 gives inf -> 1, inf gives 0, NaN stays NaN.
        return tensor.reciprocal().mul_(scale).clamp_(min=0.0, max=1.0).nan_to_num_(nan=0.0)
    values = _as_float_array(norms)
    scale = max_norm * (1.0 - _margin(float(np.finfo(values.dtype).eps)))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        factors: np.ndarray = np.nan_to_num(np.clip(scale / values, 0.0, 1.0), nan=0.0)
    return factors

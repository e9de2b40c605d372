"""The shared next-day mood model: a small MLP on the diary features, and its weights as arrays.

The model maps one feature vector (:data:`~client_sdk.features.FEATURE_DIM` values, see
:mod:`client_sdk.features`) to the predicted mean mood of the next day on the 1-5 scale:
``offset + layers(x)`` with ``layers = Linear(FEATURE_DIM, 32), ReLU, Linear(32, 1)``.
The offset (3.7, the population's mean mood) is a constant, not a weight, and the
output layer starts at zero, so an untrained model predicts exactly 3.7 and the weights
only learn the deviation from it. No BatchNorm or dropout: nothing mixes the examples
of a batch, as per-example DP-SGD clipping requires.

Weights travel as a list of float32 numpy arrays in ``model.state_dict()`` order
(Flower's NDArrays): :func:`get_weights` and :func:`set_weights`.

>>> model = create_model(seed=0)
>>> [w.shape for w in get_weights(model)]
[(32, 43), (32,), (1, 32), (1,)]
>>> predict(model, np.zeros((2, FEATURE_DIM), dtype=np.float32))
array([3.7, 3.7], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from client_sdk.errors import InvalidArgumentError
from client_sdk.features import FEATURE_DIM

__all__ = [
    "HIDDEN_UNITS",
    "MOOD_OFFSET",
    "MoodModel",
    "create_model",
    "get_weights",
    "mean_absolute_error",
    "predict",
    "set_weights",
]

HIDDEN_UNITS: Final = 32
MOOD_OFFSET: Final = 3.7
"""What an untrained model predicts: the mean of the 1-5 ratings in mood-app diaries."""

MOOD_MIN: Final = 1.0
MOOD_MAX: Final = 5.0


class MoodModel(nn.Module):
    """``offset + layers(x)``; ``forward`` maps ``(n, in_features)`` to ``(n,)``.

    ``layers`` is ``nn.Sequential(Linear(in_features, hidden_units), ReLU(),
    Linear(hidden_units, 1))``; :mod:`client_sdk.training` relies on exactly this form
    for its fast DP-SGD path (and checks it).
    """

    offset: torch.Tensor  # a buffer (register_buffer below); declared for type checkers

    def __init__(
        self,
        in_features: int = FEATURE_DIM,
        hidden_units: int = HIDDEN_UNITS,
        offset: float = MOOD_OFFSET,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden_units), nn.ReLU(), nn.Linear(hidden_units, 1)
        )
        # A buffer outside the state dict: a constant, never trained, never sent.
        self.register_buffer("offset", torch.tensor(float(offset)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)  # nn.Module.__call__ is typed as returning Any
        return out.squeeze(-1) + self.offset


def create_model(*, seed: int | None = None, hidden_units: int = HIDDEN_UNITS) -> MoodModel:
    """A fresh, untrained model (float32, CPU) that predicts :data:`MOOD_OFFSET` for any input.

    The hidden layer gets PyTorch's default initialization, drawn from ``seed`` when
    given (the global torch generator is left as it was) and from torch's global
    generator otherwise; the output layer starts at zero.
    """
    if seed is None:
        model = MoodModel(hidden_units=hidden_units)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MoodModel(hidden_units=hidden_units)
    output_layer = model.layers[-1]
    assert isinstance(output_layer, nn.Linear)  # for mypy: Sequential[-1] is typed Module
    with torch.no_grad():
        output_layer.weight.zero_()
        output_layer.bias.zero_()
    return model


def get_weights(model: nn.Module) -> list[npt.NDArray[np.float32]]:
    """The model's weights as float32 numpy copies, in ``model.state_dict()`` order."""
    return [
        value.detach().cpu().numpy().astype(np.float32, copy=True)
        for value in model.state_dict().values()
    ]


def set_weights(model: nn.Module, weights: Sequence[npt.ArrayLike]) -> None:
    """Load ``weights`` (in ``model.state_dict()`` order, as from :func:`get_weights`).

    The values are copied into the model's own tensors. Raises
    :class:`~client_sdk.errors.InvalidArgumentError`, changing nothing, when the number
    of arrays or any shape differs from the model's, or any value is NaN or infinite.
    """
    state = model.state_dict()
    if len(weights) != len(state):
        raise InvalidArgumentError(f"the model has {len(state)} weight arrays, got {len(weights)}")
    loaded = {}
    for (name, current), value in zip(state.items(), weights, strict=True):
        array = np.asarray(value, dtype=np.float32)
        if array.shape != tuple(current.shape):
            raise InvalidArgumentError(
                f"weight {name!r} has shape {tuple(current.shape)}, got {array.shape}"
            )
        if not np.isfinite(array).all():
            raise InvalidArgumentError(f"weight {name!r} has NaN or infinite values")
        loaded[name] = torch.from_numpy(array.copy())
    model.load_state_dict(loaded, strict=True)


def _as_features(features: npt.ArrayLike) -> torch.Tensor:
    array = np.asarray(features, dtype=np.float32)
    if array.ndim not in (1, 2) or array.shape[-1] != FEATURE_DIM:
        raise InvalidArgumentError(
            f"features must have shape ({FEATURE_DIM},) or (n, {FEATURE_DIM}), got {array.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(array))


def predict(model: nn.Module, features: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Predicted next-day mean mood, clipped to 1..5.

    ``features`` is one vector ``(FEATURE_DIM,)`` (the result has shape ``()``) or a
    matrix ``(n, FEATURE_DIM)`` (the result has shape ``(n,)``), as made by
    :func:`~client_sdk.features.latest_features` and
    :func:`~client_sdk.features.make_examples`. The model is run in eval mode without
    gradients and its mode is restored afterwards.
    """
    x = _as_features(features)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(x.reshape(-1, FEATURE_DIM)).reshape(x.shape[:-1])
    finally:
        model.train(was_training)
    result: npt.NDArray[np.float32] = np.clip(out.numpy().astype(np.float32), MOOD_MIN, MOOD_MAX)
    return result


def mean_absolute_error(model: nn.Module, X: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Mean absolute error of :func:`predict` on examples ``X`` with true moods ``y``."""
    targets = np.asarray(y, dtype=np.float64)
    predictions = predict(model, X)
    if predictions.ndim != 1 or targets.shape != predictions.shape:
        raise InvalidArgumentError(
            f"X must be (n, {FEATURE_DIM}) and y (n,), got {np.shape(X)} and {targets.shape}"
        )
    if len(targets) == 0:
        raise InvalidArgumentError("the mean absolute error of no examples is undefined")
    return float(np.mean(np.abs(predictions.astype(np.float64) - targets)))

"""Next-day mood on the device, from the latest released global model.

The released weights are public (every release carries its epsilon); the diary never
leaves the device, so the prediction is made here, from the diary's own features.

>>> from client_sdk.model import create_model, get_weights
>>> from client_sdk.sim.synthetic import SyntheticPopulation
>>> diary = SyntheticPopulation(1, days=30, seed=1).entries_for(0)
>>> predict_next_day(diary, get_weights(create_model(seed=0)))  # untrained: the offset
3.7
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np

from client_sdk.entry import Entry
from client_sdk.features import DailySeries, latest_features

__all__ = ["predict_next_day"]


def predict_next_day(
    diary: Sequence[Entry] | DailySeries,
    weights: Sequence[np.ndarray],
    *,
    day: date | None = None,
) -> float:
    """Predicted mean mood (1-5) of ``day`` (default: the day after the last entry).

    ``weights`` are a released model's (``ReleaseStore.latest_model().weights``).
    """
    from client_sdk.model import create_model, predict, set_weights

    model = create_model()
    set_weights(model, weights)
    return round(float(predict(model, latest_features(diary, day=day))), 4)

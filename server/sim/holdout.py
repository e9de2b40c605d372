"""The server's held-out set in a simulation: synthetic devices that never take part."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from client_sdk.features import make_examples
from client_sdk.sim import SyntheticPopulation
from server.evaluation import HoldoutSet

__all__ = ["holdout_from_population"]


def holdout_from_population(population: SyntheticPopulation, indices: Sequence[int]) -> HoldoutSet:
    """The examples of synthetic devices ``indices``, labelled as simulation only."""
    xs, ys = [], []
    for index in indices:
        x, y = make_examples(population.daily_series(index))
        xs.append(x)
        ys.append(y)
    if not xs or sum(len(y) for y in ys) == 0:
        raise ValueError("the held-out devices have no examples")
    return HoldoutSet(
        X=np.concatenate(xs),
        y=np.concatenate(ys),
        devices=len(xs),
        label=(
            f"MAE of next-day mood on {len(xs)} synthetic held-out devices "
            "(simulation only; evaluated by the server, not user data)"
        ),
    )

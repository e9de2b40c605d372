"""The server's quality metric: error of a released model on data the server holds.

Evaluating a DP model on data that belongs to no participating user is post-processing
and costs no privacy, so the figure can be published next to the model. No user's
diary is ever available to the server, so this needs a held-out set of its own: in
simulation, synthetic devices that never take part (:mod:`server.sim.holdout`), and the
label says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["HoldoutSet"]


@dataclass(frozen=True, slots=True)
class HoldoutSet:
    """Examples the server may evaluate on, and what they are."""

    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]
    devices: int
    label: str

    @property
    def examples(self) -> int:
        return len(self.y)

    def mae(self, weights: Sequence[np.ndarray]) -> float:
        """Mean absolute error of the model with these weights on the held-out examples."""
        from client_sdk.model import create_model, mean_absolute_error, set_weights

        model = create_model()
        set_weights(model, weights)
        return mean_absolute_error(model, self.X, self.y)

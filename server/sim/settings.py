"""Settings of a simulated federation: the training settings plus the synthetic devices.

Like :class:`~server.settings.TrainSettings`, every field is also a ``MOODFED_``
environment variable, a Flower run-config key (hyphenated) and a ``moodfed train``
option; the defaults are defined here once.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from server.settings import TrainSettings

__all__ = ["SimSettings"]


class SimSettings(TrainSettings):
    """A training run on synthetic devices, and who among them grants and withdraws.

    >>> SimSettings(rounds=4).withdraw_round
    3
    """

    seeded_runs_allowed: ClassVar[bool] = True  # synthetic devices; releases marked not private

    simulation: bool = Field(
        default=False,
        description="set up a synthetic federation and a local consent service (simulation)",
    )
    holdout_devices: int = Field(
        default=20, ge=0, description="synthetic held-out devices for the server's MAE"
    )
    days: int = Field(default=120, ge=14, description="days of diary per synthetic device")
    grant_fraction: float = Field(
        default=0.9, ge=0, le=1, description="share of devices that grant"
    )
    withdraw_fraction: float = Field(
        default=0.2, ge=0, le=1, description="share of granting devices that withdraw part-way"
    )
    withdraw_at_round: int | None = Field(
        default=None, ge=0, description="the round they withdraw before (default: the middle)"
    )
    sim_root: Path | None = Field(
        default=None, description="where the simulated devices keep their state"
    )
    # The simulated devices' own policy (client_sdk.DevicePolicy), given to them as node
    # config: in a deployment each device sets its own, and no server can change it.
    device_epsilon_budget: float = Field(
        default=10.0, gt=0, description="each simulated device's record-level DP-SGD budget"
    )
    device_delta: float = Field(
        default=1e-4, gt=0, lt=1, description="δ of the simulated devices' budgets"
    )
    device_min_survivors: int = Field(
        default=3, ge=3, description="fewest inputs a simulated device lets its input join"
    )
    device_allow_central: bool = Field(
        default=False,
        description="whether the simulated devices send clipped updates in the clear",
    )

    def device_node_config(self) -> dict[str, float | int | bool]:
        """The simulated devices' policy as node-config keys (``device-*``)."""
        return {
            "device-epsilon-budget": self.device_epsilon_budget,
            "device-delta": self.device_delta,
            "device-min-survivors": self.device_min_survivors,
            "device-allow-central": self.device_allow_central,
        }

    @property
    def withdraw_round(self) -> int:
        """The round before which the withdrawing share withdraws."""
        if self.withdraw_at_round is not None:
            return self.withdraw_at_round
        return self.rounds // 2 + 1

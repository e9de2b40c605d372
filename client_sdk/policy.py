"""The device's own privacy policy: what it allows, whatever a server asks.

A server may ask for more noise, a smaller budget or a larger cohort, never for less:
a request weaker than the policy is refused before any computation (and the refusal is
counted on the device, :class:`RefusalCounter`). The policy comes from the app (keyword
arguments), ``MOODFED_DEVICE_*`` environment variables, or a Flower node config's
``device-*`` keys; the defaults are safe. :meth:`DevicePolicy.from_node_config` builds
each distinct policy once per process (a ClientApp needs it for every message, and
pydantic-settings takes about 0.2 ms to build one), keyed by the node config's
``device-*`` items and the ``MOODFED_DEVICE_*`` variables, the only things it reads.

=============================  =========  ===============================================
setting                        default    meaning
=============================  =========  ===============================================
``noise_multiplier``           1.0        least DP-SGD noise (record level, on the device)
``max_grad_norm``              1.0        DP-SGD's per-example clipping norm (the device's)
``epsilon_budget``             10.0       this device's record-level DP-SGD budget
``delta``                      1e-4       the delta of that budget
``update_noise_multiplier``    0.5        least user-level noise in a secure sum, as a
                                          multiple of the update's clipping norm
``min_survivors``              3          fewest inputs its contribution may be summed with
``max_update_norm``            1.0        largest clipping norm of its update it accepts
``allow_central``              False      send a clipped update in the clear to a trusted
                                          server (central DP); off: only secure sums
=============================  =========  ===============================================

>>> policy = DevicePolicy(noise_multiplier=1.2)
>>> print(policy.refusal(device_noise_multiplier=1.0, update_noise_multiplier=1.0))
the server asked for DP-SGD noise 1 below this device's minimum 1.2
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["NODE_CONFIG_PREFIX", "DevicePolicy", "RefusalCounter"]

NODE_CONFIG_PREFIX: Final = "device-"
ENV_PREFIX: Final = "MOODFED_DEVICE_"


class DevicePolicy(BaseSettings):
    """The floor under every privacy setting this device trains or contributes with."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    noise_multiplier: float = Field(default=1.0, gt=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    epsilon_budget: float = Field(default=10.0, gt=0)
    delta: float = Field(default=1e-4, gt=0, lt=1)
    update_noise_multiplier: float = Field(default=0.5, gt=0)
    min_survivors: int = Field(default=3, ge=3)
    max_update_norm: float = Field(default=1.0, gt=0)
    allow_central: bool = False

    @classmethod
    def from_node_config(cls, config: Mapping[str, Any]) -> DevicePolicy:
        """The policy with a node config's ``device-*`` keys on top of the environment.

        The same ``device-*`` items (values and types) under the same
        ``MOODFED_DEVICE_*`` variables give the same (immutable) policy object; anything
        else builds a new one. Bad values raise pydantic's ``ValidationError`` every time.
        """
        values = {
            name: config[NODE_CONFIG_PREFIX + name.replace("_", "-")]
            for name in cls.model_fields
            if NODE_CONFIG_PREFIX + name.replace("_", "-") in config
        }
        items = tuple(sorted((name, type(value), value) for name, value in values.items()))
        environment = tuple(
            sorted((name, value) for name, value in os.environ.items() if _is_policy_env(name))
        )
        try:
            hash(items)
        except TypeError:  # a value no node config holds (a list, a dict): build, don't cache
            return cls(**values)
        return _cached_policy(cls, items, environment)

    def refusal(
        self,
        *,
        update_noise_multiplier: float | None,
        device_noise_multiplier: float | None = None,
        clipping_norm: float | None = None,
    ) -> str | None:
        """Why a request must be refused, or None: the server asked for weaker settings.

        ``update_noise_multiplier`` is None for a central round (no noise on the device,
        which the policy must allow); the other two are checked when the request has them.
        """
        if device_noise_multiplier is not None and device_noise_multiplier < self.noise_multiplier:
            return (
                f"the server asked for DP-SGD noise {device_noise_multiplier:g} below this "
                f"device's minimum {self.noise_multiplier:g}"
            )
        if clipping_norm is not None and clipping_norm > self.max_update_norm:
            return (
                f"the server asked for an update clipping norm {clipping_norm:g} above this "
                f"device's maximum {self.max_update_norm:g}"
            )
        if update_noise_multiplier is None:
            if not self.allow_central:
                return "the server asked for an update in the clear; this device sends none"
        elif update_noise_multiplier < self.update_noise_multiplier:
            return (
                f"the server asked for update noise {update_noise_multiplier:g} below this "
                f"device's minimum {self.update_noise_multiplier:g}"
            )
        return None


def _is_policy_env(name: str) -> bool:
    # pydantic-settings matches variable names case-insensitively (case_sensitive=False).
    return name.upper().startswith(ENV_PREFIX)


@lru_cache(maxsize=64)
def _cached_policy(
    cls: type[DevicePolicy],
    items: tuple[tuple[str, type, Any], ...],
    environment: tuple[tuple[str, str], ...],
) -> DevicePolicy:
    # ``environment`` is only part of the key: the constructor reads os.environ itself,
    # which holds exactly these MOODFED_DEVICE_* values now.
    del environment
    return cls(**{name: value for name, _, value in items})


class RefusalCounter:
    """How many requests this device refused because they were weaker than its policy.

    Kept in a small JSON file in the device's folder (written atomically), so the app can
    show it and an auditor can ask for it.
    """

    FILE: Final = "policy-refusals.json"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / self.FILE

    @property
    def count(self) -> int:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8")).get("refused", 0)
        except FileNotFoundError:
            return 0
        except (ValueError, AttributeError):
            return 0
        return int(value) if isinstance(value, int) else 0

    def add(self) -> int:
        """Count one more refusal; return the new total."""
        total = self.count + 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".refusals-")
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump({"refused": total}, stream)
        os.replace(temporary, self.path)
        return total

"""The ClientApp of a simulation: the production handlers over simulated devices.

A node stands for device ``partition-id`` of the synthetic federation under ``sim-root``
(:mod:`client_sdk.sim.federation`): its key and diary come from the synthetic
population, its consent receipts and DP-SGD ledger live in its own folder there. A
folder holding a full :class:`~client_sdk.Device` is opened as that device instead, and a
node config with ``device-dir`` is a real device, as in production. A simulated device's
policy (:class:`~client_sdk.policy.DevicePolicy`) comes from its ``device-*`` settings,
which here may also come from the run config: the simulation's operator plays the
devices too (a real device never reads its policy from the run config). The handlers
are :mod:`client_sdk.client_app`'s, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from client_sdk.client_app import (
    LocalDevice,
    make_client_app,
    node_config,
    open_device_folder,
    open_local_device,
)
from client_sdk.policy import DevicePolicy
from client_sdk.sim.federation import FederationSpec, default_sim_root, device_folder

__all__ = ["app", "make_sim_client_app", "open_simulated_device"]


def open_simulated_device(context: Context, defaults: Mapping[str, Any]) -> LocalDevice:
    """The device a simulation node stands for (see the module docstring)."""
    config = node_config(context, defaults)
    if config.get("device-dir"):
        return open_local_device(context, defaults)
    root = Path(str(config.get("sim-root") or default_sim_root(context.run_id)))
    spec = FederationSpec.load(root)
    index = int(config["partition-id"])
    if not 0 <= index < spec.devices:
        raise ValueError(f"partition {index} is not a device of the federation at {root}")
    folder = device_folder(root, index)
    policy = DevicePolicy.from_node_config(config)
    if (folder / "device.key").exists():
        device = open_device_folder(folder, url=spec.consent_url, log_key=spec.log_key)
        device.policy = policy
        return device
    population = spec.population()
    params = population.params
    cohort = (
        params.age_bands[population.age_band[index]].name,
        params.regions[population.region[index]].name,
    )
    return LocalDevice(
        key=population.device_key_for(index),
        folder=folder,
        consent_url=spec.consent_url,
        log_key=spec.log_key,
        _diary=lambda: population.daily_series(index),
        cohort=cohort,
        policy=policy,
    )


def make_sim_client_app(
    *,
    defaults: Mapping[str, Any] | None = None,
    mods: Sequence[Mod] = (),
    _test_without_noise: bool = False,
) -> ClientApp:
    """The production ClientApp over simulated devices (``defaults`` e.g. ``sim-root`` and
    the devices' policy, for ``flwr.simulation.run_simulation``, whose nodes get no run
    config). ``_test_without_noise``: see :func:`client_sdk.client_app.make_client_app`."""
    return make_client_app(
        defaults=defaults,
        mods=mods,
        open_device=open_simulated_device,
        _test_without_noise=_test_without_noise,
    )


app = make_sim_client_app()
"""``flwr run .`` in a local simulation (``[tool.flwr.app.components]``)."""

"""Simulations on one machine: a synthetic federation, ``moodfed train``, ``moodfed demo``.

Everything here drives the production server (:mod:`server`) and client
(:mod:`client_sdk`) code over synthetic devices; production code never imports it.

- :mod:`~server.sim.consent_service`: the real consent service on SQLite, in a thread;
- :mod:`~server.sim.federation`: the simulated devices and their consent decisions;
- :mod:`~server.sim.settings`: the training settings plus the synthetic devices';
- :mod:`~server.sim.app`: the ServerApp of ``flwr run .`` (``simulation=true``);
- :mod:`~server.sim.train`, :mod:`~server.sim.demo`, :mod:`~server.sim.cli`: the commands;
- :mod:`~server.sim.seed`: a release store filled by the production pipeline;
- :mod:`~server.sim.grid`: an in-process Flower Grid; :mod:`~server.sim.progress`: bars.
"""

from server.sim.consent_service import LocalConsentService, local_consent_service
from server.sim.federation import NOTICES, SimulatedFederation
from server.sim.settings import SimSettings

__all__ = [
    "NOTICES",
    "LocalConsentService",
    "SimSettings",
    "SimulatedFederation",
    "local_consent_service",
]

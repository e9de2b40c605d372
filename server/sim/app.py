"""The ServerApp of ``flwr run .``: the production app, or a whole simulation on request.

With the run config ``simulation=true`` (and no ``MOODFED_CONSENT_URL``), it sets a
synthetic federation up for the run (a consent service on SQLite in a temporary folder,
each virtual SuperNode's device deciding with its own key, held-out synthetic devices
for the server's metric) and then runs :func:`server.run.run_server` unchanged. Without
it, this is exactly the production ``server.app:app``, which refuses to start without a
consent service.
"""

from __future__ import annotations

import logging
import secrets
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from client_sdk.sim import default_sim_root
from server.app import forward_logs_to_flower
from server.evaluation import HoldoutSet
from server.run import run_server, wait_for_nodes
from server.sim.consent_service import local_consent_service
from server.sim.federation import SimulatedFederation
from server.sim.settings import SimSettings

__all__ = ["app", "simulated_federation"]

log = logging.getLogger(__name__)


@contextmanager
def simulated_federation(
    grid: Grid, settings: SimSettings, root: Path
) -> Iterator[tuple[SimSettings, SimulatedFederation, HoldoutSet | None]]:
    """A consent service and a synthetic federation of one device per connected node."""
    nodes = wait_for_nodes(grid, minimum=settings.min_nodes, seconds=settings.node_wait_seconds)
    with local_consent_service(root / "consent") as service:
        federation = SimulatedFederation.for_settings(
            root,
            settings,
            devices=len(nodes),
            seed=settings.seed if settings.seed is not None else secrets.randbits(31),
            consent_url=service.url,
            log_key=service.log_key,
        )
        granted = federation.grant_share(settings.grant_fraction)
        log.info(
            "Simulated federation in %s: %d device(s), %d granted model-training",
            root,
            len(nodes),
            len(granted),
        )
        configured = settings.model_copy(
            update={"consent_url": service.url, "eligibility_token": service.token}
        )
        yield configured, federation, federation.holdout()


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """``flwr run .``: a simulation when the run config asks for one, else production."""
    forward_logs_to_flower()
    settings = SimSettings.from_run_config(context.run_config)
    with ExitStack() as stack:
        holdout: HoldoutSet | None = None
        observers: list[SimulatedFederation] = []
        if settings.simulation and settings.consent_url is None:
            root = settings.sim_root or default_sim_root(grid.run.run_id)
            if settings.sim_root is None:  # the devices' state is this run's alone
                stack.callback(shutil.rmtree, root, ignore_errors=True)
            settings, federation, holdout = stack.enter_context(
                simulated_federation(grid, settings, root)
            )
            observers.append(federation)
        run_server(grid, settings=settings, observers=observers, holdout=holdout)

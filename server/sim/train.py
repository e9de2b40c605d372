"""``moodfed train``: private federated training on a synthetic population, on one machine.

It sets a synthetic federation up (the consent service on SQLite in a temporary
folder, or the one at ``--consent-url``; each device granting with its own key, a
share withdrawing part-way), then runs the ServerApp and ClientApp on Flower's
Simulation Engine (Ray), one virtual SuperNode per device, and prints what was
released: the model's quality on held-out synthetic devices and the privacy spent.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from client_sdk.protocol import ANALYTICS_PURPOSE, TRAINING_PURPOSE
from client_sdk.sim.client_app import make_sim_client_app
from server.analytics import AnalyticsPlan, last_full_weeks
from server.app import make_server_app
from server.eligibility import EligibilityError
from server.run import RunResult
from server.sim.consent_service import local_consent_service
from server.sim.federation import SimulatedFederation
from server.sim.progress import RunProgress
from server.sim.settings import SimSettings

__all__ = ["TrainReport", "ray_backend_config", "run_train"]

log = logging.getLogger(__name__)


# What each user is charged per round, by aggregation mode (privacy.Accountant's events).
_MECHANISM = {
    "secure": "Poisson-subsampled distributed Skellam (noise added on the devices)",
    "central": "Poisson-subsampled Gaussian (noise added by the server)",
}


def ray_backend_config(*, cpus: int | None = None, cpus_per_device: int = 1) -> dict[str, Any]:
    """Ray settings for a small machine: one CPU per virtual device, quiet logs.

    Each ClientApp trains with one torch thread, so ``cpus`` actors run devices in
    parallel; the object store is capped because the models are tiny.
    """
    cpus = cpus or os.cpu_count() or 1
    return {
        "client_resources": {"num_cpus": cpus_per_device, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": cpus,
            "num_gpus": 0,
            "logging_level": "ERROR",
            "log_to_driver": False,
            "include_dashboard": False,
            "object_store_memory": 128 * 1024 * 1024,
        },
    }


def quiet_simulation_logs() -> None:
    """Keep Ray's and Flower's chatter (and dp-accounting's convergence notes) off the
    console; errors still show."""
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_LOG_TO_STDERR", "0")
    for name in ("flwr", "absl", "httpx", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)


@dataclass
class TrainReport:
    """What ``moodfed train`` ran and why it stopped."""

    result: RunResult | None
    status: str
    reason: str
    withdrawn: list[int] = field(default_factory=list)
    granted: list[int] = field(default_factory=list)
    release_database_url: str = ""


def run_train(
    *,
    devices: int,
    settings: SimSettings,
    console: Console | None = None,
    ray_cpus: int | None = None,
    analytics_weeks: int = 0,
    analytics_epsilon: float = 1.0,
) -> TrainReport:
    """Set the synthetic federation up, run the simulation, print the summary.

    With ``analytics_weeks``, the devices also decide on ``population-analytics`` and,
    after training, the last that many full weeks of their diaries are released as
    weekly analytics rounds costing at most ``analytics_epsilon`` together.
    """
    console = console or Console()
    quiet_simulation_logs()
    # Why a run stopped is in the summary below; a log line would only break the bar.
    logging.getLogger("server").setLevel(logging.ERROR)
    from flwr.simulation import run_simulation

    seed = settings.seed if settings.seed is not None else secrets.randbits(31)
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="moodfed-train-")))
        if settings.consent_url is None:
            service = stack.enter_context(local_consent_service(root / "consent"))
            url, token, log_key = service.url, service.token, service.log_key
            console.print(f"consent service (SQLite, temporary): {url}")
        else:
            url = settings.consent_url
            token = settings.eligibility_token or SecretStr("")
            log_key = httpx.get(f"{url.rstrip('/')}/v1/log/key", timeout=30).text
            console.print(f"consent service: {url}")
        federation = SimulatedFederation.for_settings(
            root / "sim", settings, devices=devices, seed=seed, consent_url=url, log_key=log_key
        )
        purposes = (TRAINING_PURPOSE, ANALYTICS_PURPOSE) if analytics_weeks else (TRAINING_PURPOSE,)
        plan = None
        if analytics_weeks:
            population = federation.spec.population()
            plan = AnalyticsPlan(
                weeks=last_full_weeks(population.start, settings.days, analytics_weeks),
                epsilon=analytics_epsilon,
                delta=settings.delta,
            )
        run_settings = settings.model_copy(
            update={"consent_url": url, "eligibility_token": token, "sim_root": root / "sim"}
        )
        results: list[RunResult] = []
        report = TrainReport(
            result=None,
            status="failed",
            reason="",
            release_database_url=settings.resolved_release_database_url,
        )
        weeks = len(plan.weeks) if plan is not None else 0
        with RunProgress(console, rounds=settings.rounds, weeks=weeks) as progress:
            chosen = federation.choose_share(settings.grant_fraction)
            decisions = progress.counter(
                f"consent decisions ({' and '.join(purposes)})", len(chosen)
            )
            federation.grant(chosen, purposes=purposes, progress=decisions)
            report.granted = chosen
            console.print(
                f"{len(chosen)} of {devices} devices granted {' and '.join(purposes)} "
                f"(each receipt verified on the device)"
            )
            try:
                run_simulation(
                    server_app=make_server_app(
                        run_settings,
                        observers=[federation, progress],
                        results=results,
                        analytics=plan,
                        holdout=federation.holdout(),
                    ),
                    client_app=make_sim_client_app(
                        defaults={"sim-root": str(root / "sim"), **settings.device_node_config()}
                    ),
                    num_supernodes=devices,
                    backend_config=ray_backend_config(cpus=ray_cpus),
                )
            except EligibilityError as error:
                report.reason = f"consent service failure: {error}"
            except Exception as error:  # shown in the summary, and the exit code is 1
                cause = error.__cause__ or error
                report.reason = f"{type(cause).__name__}: {cause}"
                log.debug("The simulation failed", exc_info=True)
        report.withdrawn = list(federation.withdrawn)
        if results:
            report.result = results[0]
            report.status, report.reason = results[0].status, results[0].reason
        _print_summary(console, report, settings)
        return report


def _print_summary(console: Console, report: TrainReport, settings: SimSettings) -> None:
    result = report.result
    table = Table(title="released global models (each with its privacy cost)")
    for column in ("round", "eligible", "q", "expected", "ε spent (max user)", "holdout MAE"):
        table.add_column(column, justify="right")
    for row in result.rounds if result is not None else []:
        table.add_row(
            str(row.round),
            str(len(row.eligible)),
            f"{row.sampling_rate:.4f}",
            f"{row.expected_count:.1f}",
            f"{row.epsilon:.4f}",
            "n/a" if row.holdout_mae is None else f"{row.holdout_mae:.4f}",
        )
    console.print(table)
    rounds = len(result.rounds) if result is not None else 0
    epsilon = result.epsilon if result is not None else 0.0
    colour = {"completed": "green", "stopped": "yellow"}.get(report.status, "red")
    console.print(f"rounds run: {rounds} of {settings.rounds}")
    console.print(
        f"privacy spent: ε={epsilon:.4f} at δ={settings.delta:g} "
        f"(budget ε={settings.epsilon_budget:g}, σ={settings.noise_multiplier:g}, "
        f"C={settings.clipping_norm:g}, {settings.accounting.upper()} accountant, "
        f"{_MECHANISM[settings.aggregation]} per user)"
    )
    if report.withdrawn:
        console.print(
            f"{len(report.withdrawn)} device(s) withdrew before round "
            f"{settings.withdraw_round}: not sampled from then on"
        )
    console.print(f"[{colour}]{report.status}[/{colour}]: {report.reason}")
    if result is not None and result.analytics:
        last = result.analytics[-1]
        console.print(
            f"analytics: {len(result.analytics)} weekly release(s) of "
            f"{len(last.releases)} queries each, weeks {result.analytics[0].period} to "
            f"{last.period}; ε spent after them (max user): {last.epsilon_after:.4f}"
        )
    if result is not None:
        console.print(f"release store: {report.release_database_url} (run {result.run_id})")

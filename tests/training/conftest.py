"""Fixtures for the training tests: a real consent service and real Flower simulations.

Each simulation is small (a handful of devices, 40-day diaries, 2-3 rounds) so that
the whole training suite stays within a few minutes on two cores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from client_sdk import Device, Entry
from client_sdk.sim import device_folder
from client_sdk.sim.client_app import make_sim_client_app
from privacy import Accountant
from server.analytics import AnalyticsPlan
from server.app import make_server_app
from server.eligibility import EligibilitySource
from server.observers import RunObserver
from server.releases import ReleaseStore
from server.run import RunResult
from server.sim.federation import TRAINING_NOTICE, SimulatedFederation
from server.sim.settings import SimSettings
from server.sim.train import quiet_simulation_logs, ray_backend_config
from server.training import RoundReport
from tests.conftest import ConsentServer
from tests.training.mods import CaptureReplies, read_captured


@pytest.fixture(scope="session")
def consent_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsentServer]:
    """``moodfed consent serve`` on SQLite, shared by every simulation (each has its own
    population seed, so its own device keys)."""
    folder = tmp_path_factory.mktemp("consent")
    server = ConsentServer(data_dir=folder, database_url=f"sqlite:///{folder / 'ledger.db'}")
    yield server.start()
    server.stop()


def log_key_of(service: ConsentServer) -> str:
    return httpx.get(f"{service.url}/v1/log/key", timeout=10).text


class Recorder(RunObserver):
    """A round observer that keeps the server's own view of each round (test only)."""

    def __init__(self) -> None:
        self.reports: list[RoundReport] = []

    def after_round(self, report: RoundReport) -> None:
        self.reports.append(report)


@dataclass
class Simulation:
    """A synthetic federation wired to a consent service, ready to run."""

    root: Path
    service: ConsentServer
    federation: SimulatedFederation
    settings: SimSettings
    devices: int
    capture: Path
    recorder: Recorder = field(default_factory=Recorder)
    result: RunResult | None = None

    @property
    def sim_root(self) -> Path:
        return self.root / "sim"

    def key(self, index: int) -> str:
        return self.federation.device_key(index)

    def run(
        self,
        *,
        mods: Sequence[Any] = (),
        observers: Sequence[RunObserver] = (),
        eligibility: EligibilitySource | None = None,
        analytics: AnalyticsPlan | None = None,
        without_noise: bool = False,
    ) -> RunResult:
        """Run the ServerApp and ClientApp on the Simulation Engine (Ray).

        ``without_noise``: the devices add no noise to secure sums (the test-only switch of
        :func:`client_sdk.client_app.make_client_app`), to check sums exactly."""
        from flwr.simulation import run_simulation

        quiet_simulation_logs()
        results: list[RunResult] = []
        server_app = make_server_app(
            self.settings,
            observers=[self.federation, *observers, self.recorder],
            eligibility=eligibility,
            results=results,
            analytics=analytics,
            holdout=self.federation.holdout(),
        )
        client_app = make_sim_client_app(
            defaults={"sim-root": str(self.sim_root), **self.settings.device_node_config()},
            mods=[CaptureReplies(str(self.capture)), *mods],
            _test_without_noise=without_noise,
        )
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=self.devices,
            backend_config=ray_backend_config(cpus=2),
        )
        self.result = results[0]
        return self.result

    def replies(self) -> list[dict[str, Any]]:
        """Every message the devices sent (captured at the ClientApp's reply boundary)."""
        return read_captured(self.capture)

    def store(self) -> ReleaseStore:
        return ReleaseStore(self.settings.resolved_release_database_url, read_only=True)

    def accountant(self) -> Accountant:
        return self.settings.open_accountant()


def make_simulation(
    root: Path,
    service: ConsentServer,
    *,
    devices: int,
    seed: int,
    grant: Callable[[SimulatedFederation], None] | None = None,
    **overrides: Any,
) -> Simulation:
    """A federation of ``devices`` synthetic devices that (by default) all grant."""
    root.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "rounds": 3,
        "expected_devices": float(devices),
        "noise_multiplier": 1.0,
        "clipping_norm": 1.0,
        "epsilon_budget": 100.0,
        "delta": 1e-5,
        "seed": seed,
        "local_steps": 5,
        "sample_rate": 0.2,
        "days": 40,
        "holdout_devices": 2,
        "withdraw_fraction": 0.0,
        "device_epsilon_budget": 100.0,
        "min_nodes": devices,
        "node_wait_seconds": 30.0,
        "round_timeout": 300.0,
        "data_dir": root / "server",
        "consent_url": service.url,
        "eligibility_token": SecretStr(service.token),
        "sim_root": root / "sim",
    }
    options.update(overrides)
    settings = SimSettings(**options)
    federation = SimulatedFederation.for_settings(
        root / "sim",
        settings,
        devices=devices,
        seed=seed,
        consent_url=service.url,
        log_key=log_key_of(service),
    )
    if grant is None:
        federation.grant(range(devices))
    else:
        grant(federation)
    capture = root / "capture"
    capture.mkdir()
    return Simulation(
        root=root,
        service=service,
        federation=federation,
        settings=settings,
        devices=devices,
        capture=capture,
    )


def round_of(group_id: str) -> int:
    """The round a train message belongs to: ``"3"`` (central) or
    ``"train/<run>/3/masked input"`` (a secure round's masked-input stage)."""
    return int(group_id.split("/")[2] if group_id.startswith("train/") else group_id)


def trained(replies: Sequence[dict[str, Any]], index: int) -> list[int]:
    """The rounds in which device ``index`` sent its update (in the clear, central) or its
    masked input (secure)."""
    return sorted(
        round_of(row["group_id"])
        for row in replies
        if row["partition"] == index
        and row["message_type"] == "train"
        and not row.get("error")
        and not row.get("raised")
        and {"update", "secagg-masked-input"} & set(row.get("records", {}))
    )


# -- one consent-gated run shared by the consent and no-raw-data tests ------------------
#
# Six devices, q = 1 (every eligible device is sampled every round, so a device missing
# from a round can only be missing because of consent), three rounds. Device 0 holds a
# real encrypted diary with planted values; two of the others withdraw before round 2.

PLANTED = 0
PLANTED_NOTE = "CANARY-note-7f3a9c1e-do-not-leak"
PLANTED_SLEEP = 6.283185
PLANTED_STEPS = 987_654
PLANTED_AT = datetime(2026, 2, 3, 21, 17, 29, tzinfo=UTC)
GATED_DEVICES = 6
GATED_ROUNDS = 3
WITHDRAW_BEFORE = 2


def plant_device(simulation: Simulation) -> None:
    """Give simulated device 0 a real device folder: its own key and encrypted diary with
    a unique note, sleep duration, step count and timestamp; it grants with its own key."""
    folder = device_folder(simulation.sim_root, PLANTED)
    entries = list(simulation.federation.spec.population().entries_for(PLANTED))
    entries.append(
        Entry(
            time=PLANTED_AT,
            mood=4,
            note=PLANTED_NOTE,
            sleep_hours=PLANTED_SLEEP,
            steps=PLANTED_STEPS,
        )
    )
    with Device.create(
        folder, consent_url=simulation.service.url, log_key=log_key_of(simulation.service)
    ) as device:
        device.diary.log_many(entries)
        device.consent.grant("model-training", notice=TRAINING_NOTICE)


@pytest.fixture(scope="session")
def gated_run(
    tmp_path_factory: pytest.TempPathFactory, consent_service: ConsentServer
) -> Simulation:
    simulation = make_simulation(
        tmp_path_factory.mktemp("gated"),
        consent_service,
        devices=GATED_DEVICES,
        seed=11,
        rounds=GATED_ROUNDS,
        withdraw_at_round=WITHDRAW_BEFORE,
        withdraw_fraction=0.4,
        grant=lambda federation: federation.grant(range(1, GATED_DEVICES)),
    )
    plant_device(simulation)
    simulation.run()
    return simulation

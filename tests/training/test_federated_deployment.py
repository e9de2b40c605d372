"""Flower's Deployment Engine: a SuperLink, SuperNodes and ``flwr run``, on localhost, as a
phone would talk to a real server: TLS (a CA and a server certificate made here with
``cryptography``) and SuperNode authentication (each SuperNode's P-384 key registered with
``flwr supernode register``; the SuperLink runs with ``--enable-supernode-auth``).

Each SuperNode stands for one real device folder (key, encrypted diary, consent
receipts) given in its node config; the ServerApp finds the consent service and the
stores through ``MOODFED_`` variables in the SuperLink's environment. Device 3 never
consents, so it is attested but contributes nothing; a fifth SuperNode with a key the
SuperLink never registered is never let in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from client_sdk import Device
from client_sdk.client_app import DEVICE_LEDGER_FILE
from client_sdk.sim import SyntheticPopulation
from privacy import Accountant
from server.releases import ReleaseStore
from server.transcript import read_transcript
from tests.conftest import ConsentServer, free_port
from tests.pki import local_pki
from tests.training.conftest import log_key_of

ROOT = Path(__file__).resolve().parents[2]
DEVICES = 4
CONSENTING = (0, 1, 2)


class Processes:
    """Processes started by the test, each in its own session, killed with their children."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.started):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.started:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # and whatever it left in its session
            process.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop()


def _wait_for_port(port: int, seconds: float = 60) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {seconds} s")


def _make_devices(folder: Path, service: ConsentServer) -> list[Path]:
    population = SyntheticPopulation(DEVICES, days=40, seed=51)
    log_key = log_key_of(service)
    devices = []
    for index in range(DEVICES):
        path = folder / f"device-{index}"
        with Device.create(path, consent_url=service.url, log_key=log_key) as device:
            device.diary.log_many(population.entries_for(index))
            if index in CONSENTING:
                device.consent.grant("model-training", notice="test notice")
        devices.append(path)
    return devices


def _node_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's P-384 key pair in OpenSSH format: (private, public)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return private, public


def test_two_rounds_on_the_deployment_engine_train_only_the_consenting_devices(
    tmp_path: Path, consent_service: ConsentServer, processes: Processes
) -> None:
    devices = _make_devices(tmp_path, consent_service)
    log_key = log_key_of(consent_service)
    data_dir = tmp_path / "server"
    transcript = tmp_path / "transcript"
    link_port = free_port()
    no_uv = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    ca, server_cert, server_key = local_pki(tmp_path / "pki")
    processes.start(
        "superlink",
        [
            "flower-superlink",
            "--ssl-ca-certfile",
            str(ca),
            "--ssl-certfile",
            str(server_cert),
            "--ssl-keyfile",
            str(server_key),
            "--enable-supernode-auth",
            "--isolation",
            "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(link_port),
            "--disable-runtime-dependency-installation",
        ],
        {
            **no_uv,
            "FLWR_HOME": str(tmp_path / "flwr-superlink"),
            "MOODFED_CONSENT_URL": consent_service.url,
            "MOODFED_ELIGIBILITY_TOKEN": consent_service.token,
            "MOODFED_DATA_DIR": str(data_dir),
            "MOODFED_TRANSCRIPT_DIR": str(transcript),
        },
    )
    _wait_for_port(link_port)
    cli_home = tmp_path / "flwr-cli"
    cli_home.mkdir()
    (cli_home / "config.toml").write_text(
        f'[superlink]\ndefault = "moodfed-local"\n\n'
        f'[superlink.moodfed-local]\naddress = "127.0.0.1:{link_port}"\n'
        f'root-certificates = "{ca}"\n'
    )
    cli_env = {**os.environ, **no_uv, "FLWR_HOME": str(cli_home)}
    keys = tmp_path / "node-keys"
    keys.mkdir()
    for index, folder in enumerate([*devices, None]):
        private, public = _node_keys(keys, f"supernode-{index}")
        if folder is None:
            # The intruder: a key the SuperLink never registered, presenting device 0. Let
            # in, it would take device 0 out of the run (one key on two nodes).
            node_config = (
                f'device-dir="{devices[0]}" consent-url="{consent_service.url}" log-key="{log_key}"'
            )
        else:
            register = subprocess.run(
                ["flwr", "supernode", "register", str(public), "moodfed-local"],
                env=cli_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert register.returncode == 0, register.stdout + register.stderr
            node_config = (
                f'device-dir="{folder}" consent-url="{consent_service.url}" log-key="{log_key}"'
            )
        processes.start(
            f"supernode-{index}",
            [
                "flower-supernode",
                "--root-certificates",
                str(ca),
                "--auth-supernode-private-key",
                str(private),
                "--superlink",
                f"127.0.0.1:{link_port}",
                "--port",
                str(free_port()),
                "--node-config",
                node_config,
            ],
            {**no_uv, "FLWR_HOME": str(tmp_path / f"flwr-supernode-{index}")},
        )

    run = subprocess.run(
        [
            "flwr",
            "run",
            str(ROOT),
            "moodfed-local",
            "--run-config",
            f"rounds=2 expected-devices=3.0 min-nodes={DEVICES}",
            "--stream",
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=400,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert "completed: all 2 planned rounds ran" in run.stdout, run.stdout
    with ReleaseStore(f"sqlite:///{data_dir / 'releases.db'}", read_only=True) as store:
        (training,) = store.runs()
        rounds = store.model_rounds(training.id)
    assert training.status == "completed" and training.attested_devices == DEVICES
    assert [(row.round, row.eligible_devices, row.sampling_rate) for row in rounds] == [
        (1, 3, 1.0),
        (2, 3, 1.0),
    ]
    for index, folder in enumerate(devices):
        assert (folder / DEVICE_LEDGER_FILE).exists() == (index in CONSENTING)
    with (
        Device.open(devices[3]) as outsider,
        Accountant(
            f"sqlite:///{data_dir / 'privacy.db'}", epsilon_budget=8.0, delta=1e-5
        ) as accountant,
    ):
        assert accountant.history(outsider.device_key) == {}
        for index in CONSENTING:
            with Device.open(devices[index]) as device:
                assert sum(accountant.history(device.device_key).values()) == 2

    # What the server received: secure-aggregation messages only, every update masked.
    seen = {name for _, _, content, _ in read_transcript(transcript) for name in content}
    assert "secagg-masked-input" in seen and "secagg-advertise-keys" in seen
    assert not seen & {"update", "contributions"}, seen

"""``flwr run .`` as the README documents it: a local simulation on request, else fail closed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from server.releases import ReleaseStore

ROOT = Path(__file__).resolve().parents[2]
FEDERATION = "num-supernodes=3 client-resources-num-cpus=1 init-args-num-cpus=2"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _own_local_superlink(env: dict[str, str]) -> Iterator[None]:
    """``flwr run`` starts a detached local SuperLink (and keeps it) on fixed ports: give
    this test its own ports, so its SuperLink has this test's environment, and stop it."""
    control = _free_port()
    env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"] = str(_free_port())
    env["FLWR_LOCAL_CONTROL_API_PORT"] = str(control)
    try:
        yield
    finally:
        marker = f"127.0.0.1:{control}".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with suppress(OSError):
                if b"flower-superlink" in (cmdline := (proc / "cmdline").read_bytes()) and (
                    marker in cmdline
                ):
                    os.kill(int(proc.name), signal.SIGTERM)


def flwr_run(tmp_path: Path, run_config: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MOODFED_CONSENT_URL", "MOODFED_ELIGIBILITY_TOKEN")
    }
    env.update(
        FLWR_HOME=str(tmp_path / "flwr"),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        MOODFED_DATA_DIR=str(tmp_path / "data"),
    )
    with _own_local_superlink(env):
        return subprocess.run(
            ["flwr", "run", str(ROOT), "--stream", "--run-config", run_config,
             "--federation-config", FEDERATION],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )  # fmt: skip


@pytest.mark.slow
def test_flwr_run_without_a_consent_service_refuses_and_says_which_variable_to_set(
    tmp_path: Path,
) -> None:
    run = flwr_run(tmp_path, "rounds=1")

    out = run.stdout + run.stderr
    assert "ConfigurationError" in out and "MOODFED_CONSENT_URL" in out, out
    assert "simulation=true" in out
    assert "attested" not in out and "Round 1" not in out  # no node was asked anything
    assert not (tmp_path / "data" / "releases.db").exists()


@pytest.mark.slow
def test_flwr_run_with_simulation_true_trains_on_a_synthetic_federation(tmp_path: Path) -> None:
    # Every device grants: secure aggregation needs 3, and with the default 0.9 a draw of
    # 2 granting devices out of 3 (about one run in four) would stop the run by design.
    run = flwr_run(
        tmp_path, "simulation=true rounds=1 days=40 holdout-devices=2 grant-fraction=1.0"
    )

    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "completed: all 1 planned rounds ran" in out, out
    with ReleaseStore(f"sqlite:///{tmp_path / 'data' / 'releases.db'}", read_only=True) as store:
        (training,) = store.runs()
        (model,) = store.model_rounds(training.id)
    assert training.status == "completed" and training.attested_devices == 3
    assert model.holdout_mae is not None and model.epsilon > 0


def test_run_server_without_a_consent_service_sends_nothing_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp

    from server.errors import ConfigurationError
    from server.run import run_server
    from server.settings import TrainSettings
    from server.sim.grid import InProcessGrid

    monkeypatch.delenv("MOODFED_CONSENT_URL", raising=False)
    received: list[str] = []
    nodes = ClientApp()

    @nodes.query()
    def _record(message: Message, context: Context) -> Message:
        received.append(message.metadata.message_type)
        return Message(message.content, reply_to=message)

    grid = InProcessGrid(nodes, num_nodes=3)

    with pytest.raises(ConfigurationError, match="MOODFED_CONSENT_URL"):
        run_server(grid, settings=TrainSettings(data_dir=tmp_path))

    assert received == [] and list(tmp_path.iterdir()) == []

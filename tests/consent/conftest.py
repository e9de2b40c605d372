"""The consent service in-process: the real app over real HTTP, on a clock the test moves.

``consent_service`` runs ``create_app`` under uvicorn in a thread, on each backend, with
a :class:`ManualClock` as the ledger's clock, so a test about expiry or clock skew moves
time instead of sleeping. The listening socket is bound before uvicorn starts: requests
sent while the app is still starting wait in the socket's backlog, so nothing polls.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from consent import ConsentSettings, create_app
from consent.store import migrate
from tests.conftest import BACKENDS, backend_database


class ManualClock:
    """Now, as the test says: starts at a whole second, moves only by :meth:`advance`."""

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = moment

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now


@dataclass
class InProcessService:
    """A running consent service in this process: its URL, token, clock and database."""

    url: str
    token: str
    clock: ManualClock
    database_url: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def serve_in_thread(app: FastAPI, stack: ExitStack) -> str:
    """Serve an ASGI app with uvicorn in a daemon thread until ``stack`` closes; its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # from here on, connections queue until uvicorn accepts them
    stack.callback(sock.close)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "uvicorn did not stop within 30 s"

    stack.callback(stop)
    host, port = sock.getsockname()
    return f"http://{host}:{port}"


def start_in_process(settings: ConsentSettings, stack: ExitStack) -> InProcessService:
    """Migrate the database of ``settings``, then serve ``create_app(settings)`` on a new
    :class:`ManualClock` until ``stack`` closes; returns once the app has started.

    ``settings`` carries the eligibility token (tests present it as the bearer token).
    """
    assert settings.eligibility_token is not None, "the test service needs a token"
    url = settings.resolved_database_url
    migrate(url)
    clock = ManualClock()
    service = InProcessService(
        url=serve_in_thread(create_app(settings, clock=clock), stack),
        token=settings.eligibility_token.get_secret_value(),
        clock=clock,
        database_url=url,
    )
    with service.client() as client:  # waits for the app's startup, on the answer
        assert client.get("/healthz").text == "ok"
    return service


@pytest.fixture(scope="module", params=BACKENDS)
def consent_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessService]:
    """The consent service on each backend, in-process and on a :class:`ManualClock`."""
    data_dir = tmp_path_factory.mktemp("consent-inprocess")
    with ExitStack() as stack:
        url = backend_database(request, stack, data_dir / "ledger.db")
        settings = ConsentSettings(
            data_dir=Path(data_dir),
            database_url=url,
            eligibility_token=SecretStr("test-eligibility-token"),
        )
        yield start_in_process(settings, stack)


@pytest.fixture
def service(consent_service: InProcessService) -> InProcessService:
    """The module's service with its clock set to now: each test starts on time."""
    consent_service.clock.set(datetime.now(UTC).replace(microsecond=0))
    return consent_service

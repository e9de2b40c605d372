"""Shared fixtures: real services in real processes, real databases."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

POSTGRES_URL = os.environ.get(
    "MOODFED_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("MOODFED_REQUIRE_POSTGRES") == "1"
MOODFED = [sys.executable, "-c", "from server.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_admin():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(
        POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://"),
        autocommit=True,
        connect_timeout=3,
    )


@pytest.fixture(scope="session")
def postgres_available() -> None:
    try:
        _postgres_admin().close()
    except Exception as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"MOODFED_REQUIRE_POSTGRES=1 but PostgreSQL is unreachable: {exc}")
        pytest.skip(
            f"PostgreSQL unreachable at {POSTGRES_URL} ({exc}); set it up or "
            "MOODFED_TEST_POSTGRES_URL"
        )


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    name = f"moodfed_{uuid.uuid4().hex[:12]}"
    with _postgres_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with _postgres_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_available: None) -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def backend_database(request: pytest.FixtureRequest, stack: ExitStack, sqlite_file: Path) -> str:
    """The URL of a database on the backend ``request.param`` names (one of :data:`BACKENDS`).

    SQLite: the file ``sqlite_file``. PostgreSQL: a fresh database, dropped when ``stack``
    closes; the test is skipped (or fails, with MOODFED_REQUIRE_POSTGRES=1) where there is
    no server. Shared by the fixtures of any scope that run on each backend.
    """
    if request.param == "sqlite":
        return f"sqlite:///{sqlite_file}"
    request.getfixturevalue("postgres_available")
    return stack.enter_context(fresh_postgres_database())


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each backend the ledger supports: SQLite in a temp folder, and PostgreSQL."""
    with ExitStack() as stack:
        yield backend_database(request, stack, tmp_path / "ledger.db")


@dataclass
class ConsentServer:
    """``moodfed consent serve`` in its own process."""

    data_dir: Path
    database_url: str
    workers: int = 1
    token: str = "test-eligibility-token"
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def key_file(self) -> Path:
        return self.data_dir / "consent-log.key"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MOODFED_DATA_DIR": str(self.data_dir),
            "MOODFED_ELIGIBILITY_TOKEN": self.token,
            **self.extra_env,
        }

    def start(self) -> ConsentServer:
        self.process = subprocess.Popen(
            [
                *MOODFED,
                "consent",
                "serve",
                "--port",
                str(self.port),
                "--database-url",
                self.database_url,
                "--workers",
                str(self.workers),
            ],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=open(self.data_dir / f"serve-{self.port}.log", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.data_dir / f"serve-{self.port}.log").read_text()
                raise RuntimeError(f"consent service exited: {log}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("consent service did not start within 60 s")

    def kill(self) -> None:
        """SIGKILL the server and its workers: a crash, not a shutdown."""
        if self.process is None:
            return
        for pid in _descendants(self.process.pid):
            _kill9(pid)
        _kill9(self.process.pid)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def audit(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *MOODFED,
                "consent",
                "audit",
                "--database-url",
                self.database_url,
                "--key-file",
                str(self.key_file),
            ],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    children = [int(p) for p in out.stdout.split()]
    return children + [d for c in children for d in _descendants(c)]


def _kill9(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, 9)


@pytest.fixture(scope="module", params=BACKENDS)
def consent_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsentServer]:
    """A running consent service on each backend, shared by a module's tests."""
    data_dir = tmp_path_factory.mktemp("consent")
    with ExitStack() as stack:
        url = backend_database(request, stack, data_dir / "ledger.db")
        server = ConsentServer(data_dir=data_dir, database_url=url).start()
        stack.callback(server.stop)
        yield server


@pytest.fixture
def sqlite_consent_server(tmp_path: Path) -> Iterator[ConsentServer]:
    """A running consent service on SQLite only (for SDK and end-to-end tests)."""
    server = ConsentServer(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'l.db'}")
    yield server.start()
    server.stop()

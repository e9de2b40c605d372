"""``moodfed consent serve`` in a subprocess whose log the test reads line by line.

The production recipe under test is the command itself (uvicorn with the service's
connection guard), so the slow-client tests start it exactly as an operator would.
Its stderr is read by a thread; a test waits on a line matching a pattern (an event),
never on a fixed delay.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from tests.conftest import MOODFED, free_port

TOKEN = "hostile-test-token"


class ServiceLog:
    """The lines a process writes to a pipe, collected by a thread, waited on by tests."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<eof>")
            self._changed.notify_all()

    def matching(self, pattern: str) -> list[str]:
        with self._changed:
            return [line for line in self.lines if re.search(pattern, line)]

    def wait_for(self, pattern: str, *, count: int = 1, timeout: float = 60) -> list[str]:
        """The matching lines once there are ``count`` of them; AssertionError on timeout."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: (
                    len([x for x in self.lines if re.search(pattern, x)]) >= count
                    or "<eof>" in self.lines
                ),
                timeout=timeout,
            )
            found = [line for line in self.lines if re.search(pattern, line)]
        assert done and len(found) >= count, (
            f"{len(found)} of {count} lines matching {pattern!r} within {timeout} s; "
            f"last lines: {self.lines[-15:]}"
        )
        return found


class Service:
    """A running ``moodfed consent serve``: URL, process, log."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, log: ServiceLog, *, scheme: str = "http"
    ) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.url = f"{scheme}://127.0.0.1:{port}"

    def rss_bytes(self) -> int:
        """Resident memory of the server process (one worker: the process itself)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")


@contextmanager
def consent_serve(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    token: str | None = TOKEN,
    ca: Path | None = None,
) -> Iterator[Service]:
    """Start ``moodfed consent serve`` on SQLite in ``data_dir``; stop it afterwards.

    ``ca`` (a CA certificate file) means the service serves HTTPS with a certificate
    that CA signed, passed in ``args``.
    """
    port = free_port()
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MOODFED_") or key.startswith("MOODFED_TEST")
    }
    environment.update(MOODFED_DATA_DIR=str(data_dir), **(env or {}))
    if token is not None:
        environment["MOODFED_ELIGIBILITY_TOKEN"] = token
    process = subprocess.Popen(
        [
            *MOODFED,
            "consent",
            "serve",
            "--port",
            str(port),
            "--database-url",
            f"sqlite:///{data_dir / 'ledger.db'}",
            *(args or []),
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    log = ServiceLog(process.stderr)
    try:
        log.wait_for(r"consent log .* ready", timeout=120)
        service = Service(process, port, log, scheme="http" if ca is None else "https")
        # The app is ready just before uvicorn listens: the first request may need a retry.
        verify = True if ca is None else ssl.create_default_context(cafile=ca)
        transport = httpx.HTTPTransport(retries=20, verify=verify)
        with httpx.Client(transport=transport, timeout=10) as client:
            assert client.get(f"{service.url}/healthz").text == "ok"
        yield service
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

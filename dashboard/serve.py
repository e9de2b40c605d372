"""Serving the dashboard: the ``streamlit run`` command line, and a process that is ready.

``moodfed dashboard run`` runs the command; ``moodfed demo`` and the screenshots start it
with :func:`serve_dashboard`, which returns once Streamlit listens and answers its health
check (an event on its output, never a fixed wait).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

__all__ = [
    "APP_SCRIPT",
    "DashboardStartError",
    "ServedDashboard",
    "serve_dashboard",
    "streamlit_command",
]

APP_SCRIPT: Final = Path(__file__).with_name("app.py")


def streamlit_command(*, port: int, host: str = "127.0.0.1") -> list[str]:
    """The command that serves the dashboard (``moodfed dashboard run`` and the demo):
    ``streamlit run`` through :mod:`dashboard.launch`, which installs the session guard first."""
    return [
        sys.executable,
        "-m",
        "dashboard.launch",
        "run",
        str(APP_SCRIPT),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--client.showErrorDetails",
        "none",
        # The dashboard has no file uploader: Streamlit would otherwise keep uploads of up
        # to 200 MB each, from any session, logged in or not, in memory.
        "--server.maxUploadSize",
        "0",
    ]


@dataclass(frozen=True, slots=True)
class ServedDashboard:
    """A dashboard that answers at ``url``."""

    url: str
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DashboardStartError(RuntimeError):
    """The dashboard process did not come up (its log is in the message)."""


@contextlib.contextmanager
def serve_dashboard(
    *, env: Mapping[str, str], log_path: Path, cwd: Path | None = None, timeout: float = 120.0
) -> Iterator[ServedDashboard]:
    """Run ``streamlit run dashboard/app.py`` on a free localhost port; yield it once ready.

    Ready when Streamlit prints its URL (it does so once it listens), read from its
    output as it comes, and its health check answers; the output goes to ``log_path``.
    Unless ``env`` says where, failed logins are kept next to the log (these dashboards
    are one-offs: demos, screenshots, tests). The process is stopped on exit.
    """
    port = _free_port()
    command = [*streamlit_command(port=port), "--server.fileWatcherType", "none"]
    login_state = f"sqlite:///{log_path.parent.resolve() / 'dashboard-logins.db'}"
    process = subprocess.Popen(  # noqa: S603 (our own command line)
        command,
        env={"MOODFED_LOGIN_STATE_URL": login_state, **env, "PYTHONUNBUFFERED": "1"},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    listening = threading.Event()  # Streamlit printed its URL
    ready = threading.Event()  # ... or its output ended (it exited)

    def pump() -> None:
        assert process.stdout is not None
        with log_path.open("wb") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if url.encode() in line:
                    listening.set()
                    ready.set()
        ready.set()

    reader = threading.Thread(target=pump, name="streamlit-output", daemon=True)
    reader.start()
    try:
        ready.wait(timeout)
        if not listening.is_set():
            raise DashboardStartError(f"streamlit did not start:\n{_tail(log_path)}")
        try:
            health = httpx.get(f"{url}/_stcore/health", timeout=30).text
        except httpx.HTTPError as exc:
            raise DashboardStartError(f"streamlit does not answer: {exc}") from exc
        if health != "ok":
            raise DashboardStartError(f"streamlit is not healthy: {health!r}")
        yield ServedDashboard(url=url, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        reader.join(timeout=5)


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no output)"

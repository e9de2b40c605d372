"""A consent service on SQLite in a folder, served on a free localhost port in a thread.

The real service (:func:`consent.create_app`) over real HTTP, for simulations and the demo.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr

__all__ = ["LocalConsentService", "free_port", "local_consent_service"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class LocalConsentService:
    """A running consent service: where it is, its token and its pinned log key."""

    url: str
    token: SecretStr
    log_key: str


@contextmanager
def local_consent_service(folder: str | Path) -> Iterator[LocalConsentService]:
    """The consent service on SQLite in ``folder``, on a free localhost port, in a thread."""
    from consent import ConsentSettings, create_app
    from consent.store import migrate

    folder = Path(folder)
    token = SecretStr(secrets.token_urlsafe(32))
    settings = ConsentSettings(data_dir=folder, eligibility_token=token)
    migrate(settings.resolved_database_url)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="moodfed-consent")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the consent service did not start (data in {folder})")
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    try:
        log_key = httpx.get(f"{url}/v1/log/key", timeout=10).text
        yield LocalConsentService(url=url, token=token, log_key=log_key)
    finally:
        server.should_exit = True
        thread.join(timeout=10)

"""Serving the consent service: uvicorn, plus the slow-client limits uvicorn lacks.

uvicorn (0.30 to 0.49 at least) bounds none of what a slow client holds: its
``timeout_keep_alive`` runs only between requests and restarts on every byte, a
connection that never sends a byte is kept forever, a request head (with httptools)
may grow without limit, a body may trickle in for ever, and ``limit_concurrency``
answers 503 only once a request head is complete, after the slow client has its
connection. ASGI middleware cannot help with the head: the app is called only after
it. So the limits live in the HTTP protocol, :class:`GuardedHttpToolsProtocol`, a thin
subclass of uvicorn's httptools protocol:

- an absolute deadline for each request head (``header_timeout_seconds``, from the
  connection's start or the request's first byte): 408, closed;
- an absolute deadline for each body (``body_timeout_seconds``, from the end of the
  head, for Content-Length and chunked bodies alike): 408, closed;
- a cap on a head's size (``max_header_bytes``): 431, closed;
- a cap on open connections per worker process (``max_connections``): a connection
  over it is answered 503 and closed at once, before it can send anything;
- uvicorn's own "invalid HTTP request" answers as JSON.

Deadlines are checked by one sweep per loop every :data:`SWEEP_SECONDS` (no timer per
request: the append path pays one float store per phase). Each refusal is logged
through a :class:`~consent.api.access.RateLimitedLog`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from consent.api.access import RateLimitedLog
from consent.api.deps import TIMED_OUT
from consent.settings import ConsentSettings

__all__ = [
    "LOG_CONFIG",
    "SWEEP_SECONDS",
    "ConnectionLimits",
    "GuardedConfig",
    "GuardedHttpToolsProtocol",
    "serve",
    "server_config",
]

log = logging.getLogger("moodfed.consent.connections")

SWEEP_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one worker process allows a client (see :class:`ConsentSettings`)."""

    header_timeout: float = 10.0
    body_timeout: float = 20.0
    max_connections: int = 4096
    max_header_bytes: int = 16_384
    log_burst: int = 10
    log_window: float = 60.0

    @classmethod
    def from_settings(cls, settings: ConsentSettings) -> ConnectionLimits:
        return cls(
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            max_connections=settings.max_connections,
            max_header_bytes=settings.max_header_bytes,
            log_burst=settings.auth_log_burst,
            log_window=settings.auth_log_window_seconds,
        )


class GuardedConfig(uvicorn.Config):
    """uvicorn's config with :class:`ConnectionLimits`, served by the guarded protocol.

    A module-level class (not made per call) so that uvicorn can pickle it into its
    worker processes.
    """

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, http=GuardedHttpToolsProtocol, **kwargs)
        self.limits = limits


class _Guard:
    """Per server: the deadline sweep and the rate-limited refusal log."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.refusals = RateLimitedLog(
            log,
            what="connections refused or closed (slow, oversized, invalid or over the cap)",
            burst=limits.log_burst,
            window=limits.log_window,
        )
        self.sweep: asyncio.TimerHandle | None = None

    def ensure_sweeping(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        if self.sweep is None:
            self.sweep = loop.call_later(SWEEP_SECONDS, self._sweep, loop, connections)

    def _sweep(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.sweep = None
        now = loop.time()
        for connection in list(connections):
            if isinstance(connection, GuardedHttpToolsProtocol) and connection.deadline < now:
                connection.expire()
        if connections:
            self.ensure_sweeping(loop, connections)


# One guard per server (uvicorn's ServerState) in this process.
_GUARDS: weakref.WeakKeyDictionary[ServerState, _Guard] = weakref.WeakKeyDictionary()


def _json_response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head and body deadlines and connection caps."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = config.limits if isinstance(config, GuardedConfig) else ConnectionLimits()
        self.limits = limits
        guard = _GUARDS.get(server_state)
        if guard is None:
            guard = _GUARDS[server_state] = _Guard(limits)
        self.guard = guard
        self.deadline = float("inf")  # loop time by which the current phase must end
        self.phase = ""  # "head", "body" or "" (the app's turn, or idle keep-alive)
        self.head_bytes = 0

    # -- the connection ------------------------------------------------------------

    def connection_made(  # type: ignore[override]  # narrowed to Transport, as uvicorn's own
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.refuse(
                503,
                "Service Unavailable",
                "the service has too many open connections; retry later",
                f"{len(self.connections) - 1} connections open (the cap)",
            )
            return
        self.start_head()
        self.guard.ensure_sweeping(self.loop, self.connections)

    def start_head(self) -> None:
        self.phase, self.head_bytes = "head", 0
        self.deadline = self.loop.time() + self.limits.header_timeout

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self.phase == "" and self.cycle is not None and self.cycle.response_complete:
            self.start_head()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self.phase == "head" and not self.transport.is_closing():
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                self.refuse_large_head()

    def on_headers_complete(self) -> None:
        # A head that arrived whole, in one read, is measured here (before the app runs).
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self.refuse_large_head()
            return
        super().on_headers_complete()
        self.phase = "body"
        self.deadline = self.loop.time() + self.limits.body_timeout

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():  # refused: the parser may still be mid-read
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.transport.is_closing():
            super().on_message_complete()
        self.phase, self.deadline = "", float("inf")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to an unparsable request, as JSON (and rate-limited in the log)."""
        self.refuse(400, "Bad Request", "the request is not valid HTTP/1.1", msg)

    def refuse_large_head(self) -> None:
        limit = self.limits.max_header_bytes
        self.refuse(
            431,
            "Request Header Fields Too Large",
            f"the request head is larger than {limit} bytes",
            f"a request head over {limit} bytes",
        )

    # -- refusals --------------------------------------------------------------------

    def expire(self) -> None:
        """The sweep found the current phase past its deadline: answer 408 and close."""
        if self.transport.is_closing():
            return
        what = "request head" if self.phase == "head" else "request body"
        limit = self.limits.header_timeout if self.phase == "head" else self.limits.body_timeout
        if self.phase == "body" and self.cycle is not None:
            # Read by the app's ClientGone handler, so that the access log says 408.
            self.cycle.scope.setdefault("state", {})[TIMED_OUT] = True
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()
            return
        self.refuse(
            408,
            "Request Timeout",
            f"the {what} did not arrive within {limit:g} s",
            f"the {what} took longer than {limit:g} s",
        )

    def refuse(self, status: int, reason: str, detail: str, why: str) -> None:
        """Answer ``status`` with a JSON ``detail``, close, and log ``why`` (rate-limited)."""
        self.phase, self.deadline = "", float("inf")
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        self.guard.refusals.log(logging.WARNING, "%s: %d, closed: %s", client, status, why)
        self.transport.write(_json_response(status, reason, detail))
        self.transport.close()


class DropInvalidRequestLines(logging.Filter):
    """uvicorn's own line per unparsable request: replaced by the rate-limited one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Invalid HTTP request received."


# Applied by uvicorn in the server process and again in each worker process.
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    # The process id tells the workers' lines apart (each keeps its own caches).
    "formatters": {"plain": {"format": "%(levelname)s [%(process)d] %(name)s: %(message)s"}},
    "filters": {"invalid_requests": {"()": "consent.api.server.DropInvalidRequestLines"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        }
    },
    "loggers": {
        "moodfed": {"level": "INFO"},
        "uvicorn.error": {"filters": ["invalid_requests"]},
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}


def server_config(settings: ConsentSettings, app: Any, **kwargs: Any) -> GuardedConfig:
    """The uvicorn config the service runs with: its limits, its logs, no uvicorn access log."""
    return GuardedConfig(
        app,
        limits=ConnectionLimits.from_settings(settings),
        host=settings.host,
        port=settings.port,
        timeout_keep_alive=settings.keep_alive_seconds,
        log_config=LOG_CONFIG,
        log_level="warning",
        access_log=False,  # ours (consent.api.access) escapes paths and rate-limits 401s
        server_header=False,
        ws="none",  # no websocket routes: no upgrade path around the limits
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
        **kwargs,
    )


def serve(settings: ConsentSettings) -> None:
    """Run the service on ``settings.host:port`` with ``settings.workers`` processes."""
    if settings.workers == 1:
        from consent.api.app import create_app

        uvicorn.Server(server_config(settings, create_app(settings))).run()
        return
    # Worker processes rebuild the app, and its settings, from the environment.
    from uvicorn.supervisors import Multiprocess

    config = server_config(
        settings, "consent.api:create_app", factory=True, workers=settings.workers
    )
    server = uvicorn.Server(config)
    Multiprocess(config, target=server.run, sockets=[config.bind_socket()]).run()

"""The access log, and log lines an attacker cannot multiply at will.

One line per request on the ``moodfed.consent.access`` logger: client, method, path,
status, time. Refused bearer tokens (401) and the connection guard's refusals go
through a :class:`RateLimitedLog`: the first few lines of each window are written, the
rest counted and reported in one line when the window ends, so 2,400 guessed tokens
leave a trace (about a dozen lines) without writing the log at the guesser's rate.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AccessLogMiddleware", "RateLimitedLog", "printable"]

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def printable(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, control and non-ASCII characters escaped.

    A path is percent-decoded before it reaches the app: without this, ``%0A`` in a URL
    would start a forged line in the log.

    >>> printable("/v1/consents/a%0Ab".replace("%0A", "\\n"))
    '/v1/consents/a\\\\x0ab'
    """
    cut = text[:limit]
    shown = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", cut)
    return shown + ("..." if len(text) > limit else "")


class RateLimitedLog:
    """Log at most ``burst`` lines per ``window`` seconds; count the rest, report them once.

    The count is written when the window ends (a timer on the running loop, or the next
    line if there is no loop), even if nothing else arrives.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        what: str,
        burst: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.burst = burst
        self.window = window
        self.clock = clock
        self.started = -float("inf")
        self.written = 0
        self.suppressed = 0
        self.timer: asyncio.TimerHandle | None = None

    def log(self, level: int, message: str, *args: Any) -> None:
        now = self.clock()
        if now - self.started >= self.window:
            self.flush()
            self.started, self.written = now, 0
        if self.written < self.burst:
            self.written += 1
            self.logger.log(level, message, *args)
            return
        self.suppressed += 1
        if self.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            delay = max(self.started + self.window - now, 0.0)
            self.timer = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        """Write the count of the lines held back, if any."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.suppressed:
            self.logger.warning(
                "%d more %s in the last %.0f s, not logged one by one",
                self.suppressed,
                self.what,
                self.window,
            )
            self.suppressed = 0


class AccessLogMiddleware:
    """One access-log line per HTTP request; refused tokens rate-limited (pure ASGI)."""

    def __init__(self, app: ASGIApp, *, auth_burst: int, auth_window: float) -> None:
        self.app = app
        self.logger = logging.getLogger("moodfed.consent.access")
        self.auth_failures = RateLimitedLog(
            self.logger,
            what="requests refused for a missing or wrong bearer token",
            burst=auth_burst,
            window=auth_window,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._line(scope, status, time.perf_counter() - started)

    def _line(self, scope: Scope, status: int, seconds: float) -> None:
        client = scope.get("client")
        who = f"{client[0]}:{client[1]}" if client else "-"
        args = (who, scope["method"], printable(scope["path"]), status, seconds * 1000)
        if status == 401:
            self.auth_failures.log(logging.WARNING, '%s "%s %s" %d %.1fms', *args)
        elif self.logger.isEnabledFor(logging.INFO):
            self.logger.info('%s "%s %s" %d %.1fms', *args)

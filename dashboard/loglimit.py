"""Warnings that an unauthenticated visitor can trigger, rate-limited so they cannot flood the log.

At most one line per key (say, a user name and a source) per ``interval`` seconds, and at
most ``max_lines`` lines per interval overall; the next line that goes out says how many
were held back, so nothing is silently lost from the count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["RateLimitedLog", "safe_text"]

_MAX_KEYS = 10_000


def safe_text(value: str, *, limit: int = 64) -> str:
    r"""A visitor's string fit for one log line: quoted, control characters escaped, bounded.

    >>> print(safe_text("bob\nFAKE LINE"), safe_text("x" * 100, limit=4))
    'bob\nFAKE LINE' 'xxxx'...
    """
    shown = ascii(value[:limit])
    return shown + "..." if len(value) > limit else shown


@dataclass(slots=True)
class _Seen:
    logged_at: float
    held: int = 0


class RateLimitedLog:
    """A logger's ``warning``, at most once per key per interval and ``max_lines`` per interval."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        max_lines: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or max_lines < 1:
            raise ValueError("need interval > 0 and max_lines >= 1")
        self._logger = logger
        self._interval = interval
        self._max_lines = max_lines
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[Hashable, _Seen] = {}
        self._window_start = float("-inf")
        self._window_lines = 0
        self._held_overall = 0

    def warning(self, key: Hashable, message: str, *args: object) -> bool:
        """Log ``message % args`` unless this key, or the log as a whole, is over its rate.

        Returns whether the line was written.
        """
        with self._lock:
            now = self._clock()
            seen = self._seen.get(key)
            if seen is not None and now - seen.logged_at < self._interval:
                seen.held += 1
                return False
            if now - self._window_start >= self._interval:
                self._window_start, self._window_lines = now, 0
            if self._window_lines >= self._max_lines:
                self._held_overall += 1
                if seen is not None:
                    seen.held += 1
                return False
            held = seen.held if seen is not None else 0
            held_overall, self._held_overall = self._held_overall, 0
            if len(self._seen) >= _MAX_KEYS:
                self._seen = {
                    k: v for k, v in self._seen.items() if now - v.logged_at < self._interval
                }
            self._seen[key] = _Seen(logged_at=now)
            self._window_lines += 1
        notes = []
        if held:
            notes.append(f"{held} more like it held back")
        if held_overall:
            notes.append(f"{held_overall} other lines held back by the rate limit")
        suffix = f" ({'; '.join(notes)})" if notes else ""
        self._logger.warning(message + "%s", *args, suffix)
        return True

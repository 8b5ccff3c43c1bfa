"""Keep a client under a broker's request rate limit by waiting, not by being refused.

Alpaca allows an account 200 requests a minute on its trading API and answers a 429 past it;
alpaca-py retries a 429 twice, a second apart, whatever ``Retry-After`` says. A live loop trading a
500-name book makes a request or more per order each cycle, so unpaced it ran into 429s on most of
its book, and every symbol whose order, read or cancel was refused was held that cycle.
:class:`RequestPacer` makes the caller wait instead: at most ``max_requests`` start in any
``window_s`` seconds (a sliding window), the waits logged at most every ``LOG_EVERY_S``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

log = logging.getLogger("raytrade.pacing")

LOG_EVERY_S: Final = 30.0
"""The pacer says it is waiting at most this often (seconds of its clock)."""


class RequestPacer:
    """At most ``max_requests`` calls of :meth:`wait` return in any ``window_s`` seconds; the rest wait
    (``clock`` and ``sleep`` default to the monotonic clock and ``time.sleep``; tests give their own).
    Thread-safe: concurrent callers queue on one lock."""

    def __init__(
        self,
        max_requests: int,
        window_s: float = 60.0,
        *,
        name: str = "requests",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 1:
            raise ValueError(f"max_requests must be an integer >= 1, got {max_requests!r}")
        if not window_s > 0 or window_s == float("inf"):
            raise ValueError(f"window_s must be a finite number > 0, got {window_s!r}")
        self.max_requests, self.window_s, self.name = max_requests, float(window_s), name
        self._clock, self._sleep = clock, sleep
        self._started: deque[float] = deque()
        self._lock = threading.Lock()
        self._logged_at: float | None = None
        self.waited_s = 0.0
        """Seconds spent waiting so far."""

    def wait(self) -> float:
        """Wait until one more request fits the window, count it, and return the seconds waited."""
        with self._lock:
            waited = 0.0
            while True:
                now = self._clock()
                while self._started and self._started[0] <= now - self.window_s:
                    self._started.popleft()
                if len(self._started) < self.max_requests:
                    self._started.append(now)
                    self.waited_s += waited
                    return waited
                pause = self._started[0] + self.window_s - now
                self._say(now, pause)
                self._sleep(pause)
                waited += pause

    def _say(self, now: float, pause: float) -> None:
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "%s: %d in the last %g s, the most allowed; waiting %.1f s (%.0f s waited so far)",
                self.name,
                len(self._started),
                self.window_s,
                pause,
                self.waited_s,
            )

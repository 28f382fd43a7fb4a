"""Rate-limited log lines: at most a few per key and interval, with a count of the rest.

A line per refused delivery is what an operator tails to see why an upstream's
deliveries fail ("verification failed" after a secret rotation, 404 for an old URL),
but anyone can send requests: unthrottled, a flood of bad requests becomes a flood of
log lines (and journal I/O). `Throttle.admit` lets `burst` lines per key through per
`per` seconds and reports how many it held back in the next line it lets through.

>>> t = Throttle(per=10.0, burst=2, clock=iter([0.0, 1.0, 2.0, 3.0, 11.0]).__next__)
>>> [t.admit("401") for _ in range(5)]
[0, 0, None, None, 2]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

# Keys may come from requests (a subscription id); past this many the table starts over.
MAX_KEYS = 1024


class Throttle:
    def __init__(self, *, per: float = 10.0, burst: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per, self.burst, self.clock = per, burst, clock
        self._windows: dict[Hashable, tuple[float, int, int]] = {}  # start, sent, held back
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> int | None:
        """None: do not log this one. Else log it, saying that this many were held back
        (for this key) since the last line that was let through."""
        now = self.clock()
        with self._lock:
            start, sent, held = self._windows.get(key, (now, 0, 0))
            if now - start >= self.per:
                start, sent = now, 0
            if sent >= self.burst:
                self._windows[key] = (start, sent, held + 1)
                return None
            if len(self._windows) >= MAX_KEYS and key not in self._windows:
                self._windows.clear()
            self._windows[key] = (start, sent + 1, 0)
            return held

"""Leadership for a store that only one daemon opens (SQLite): that daemon always leads.

A shared store (PostgreSQL) elects one of its replicas instead
(`hookd.store.postgres.leader`); both satisfy `hookd.store.interface.Leadership`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hookd.store.interface import Leadership

# How long a campaign may take to make its first try (connecting to a server: libpq's
# connect_timeout is 10 s) before a deadline is kept without one.
FIRST_TRY_GRACE = 15.0


class Solo:
    """Leads from `start` on; `on_elected` is called once, on the event loop."""

    def __init__(self, on_elected: Callable[[], Any] | None = None) -> None:
        self.on_elected = on_elected
        self.leading = False
        self.at_start = True
        self.attempts = 0

    def start(self) -> None:
        self.leading = True
        self.attempts = 1
        if self.on_elected is not None:
            result = self.on_elected()
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)

    async def aclose(self) -> None:
        self.leading = False


async def lead_within(leadership: Leadership, seconds: float, *, poll: float = 0.05,
                      clock: Callable[[], float] = time.monotonic) -> bool:
    """Whether the started `leadership` leads within `seconds` — after at least one try,
    even with ``seconds=0`` (a campaign still connecting is waited for, up to
    `FIRST_TRY_GRACE` more). For a command that leads while it reconciles (`hookd apply
    --wait`); it polls `leading`, which every backend keeps up to date."""
    deadline = clock() + seconds
    while not leadership.leading:
        now = clock()
        if now >= deadline and (leadership.attempts > 0 or now >= deadline + FIRST_TRY_GRACE):
            return False
        await asyncio.sleep(poll)
    return True

"""Leadership for a store that only one daemon opens (SQLite): that daemon leads, unless a
`hookd apply` holds the state directory's reconcile lock (`Solo`).

A shared store (PostgreSQL) elects one of its replicas instead
(`hookd.store.postgres.leader`); both satisfy `hookd.store.interface.Leadership`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hookd.store.interface import Leadership

# How long a campaign may take to make its first try (connecting to a server: libpq's
# connect_timeout is 10 s) before a deadline is kept without one.
FIRST_TRY_GRACE = 15.0


class Solo:
    """Leads while it holds an exclusive lock on `lock_file` (without one: from `start`
    on); `on_elected` is called each time it comes to lead, on the event loop.

    The daemon on a SQLite state directory holds ``reconcile.lock`` there for as long as
    it runs, and `hookd apply`/`teardown` take it while they reconcile, so that a manual
    apply does not plan against the same records as the daemon's pass. The kernel drops
    the lock with its process (`flock`), so a killed holder leaves nothing to clean up.
    Not holding it at `start`, it tries again every `retry` seconds (a daemon started
    while an apply runs leads when the apply is done, and reconciles at once then:
    `at_start` is False).
    """

    def __init__(self, on_elected: Callable[[], Any] | None = None, *,
                 lock_file: Path | None = None, retry: float = 2.0) -> None:
        self.on_elected = on_elected
        self.lock_file = lock_file
        self.retry = retry
        self.leading = False
        self.at_start = True
        self.attempts = 0
        self._fd: int | None = None
        self._campaign: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._take():
            self._elected()
            return
        self.at_start = False
        self._campaign = asyncio.get_running_loop().create_task(
            self._retry(), name="hookd-reconcile-lock")

    def _take(self) -> bool:
        self.attempts += 1
        if self.lock_file is None:
            return True
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def _retry(self) -> None:
        while True:
            await asyncio.sleep(self.retry)
            if self._take():
                self._elected()
                return

    def _elected(self) -> None:
        self.leading = True
        if self.on_elected is not None:
            result = self.on_elected()
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)

    async def aclose(self) -> None:
        if self._campaign is not None:
            self._campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._campaign
            self._campaign = None
        self.leading = False
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


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

"""LISTEN/NOTIFY: wake this replica's idle worker when any replica records a delivery.

One dedicated session LISTENs on `hookd.store.postgres.deliveries.CHANNEL`; every inbox
commit (and a requeue, a freed concurrency slot) NOTIFYs it. The server delivers a
notification only after the sending transaction committed, so a woken worker finds the
rows. Notifications are not queued for a session that is not connected: after a
reconnect the listener wakes its callbacks once, in case something arrived meanwhile.
Leases that expire send nothing; the worker's own slow periodic claim catches those.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from hookd.store.postgres.connection import SessionTask, StoreUnavailable, connect, describe
from hookd.store.postgres.deliveries import CHANNEL

log = logging.getLogger("hookd.store.postgres.wakeup")

RECONNECT_DELAY = 1.0  # seconds between attempts while the database is unreachable


class Wakeup(SessionTask):
    """Calls `wake()` on the event loop for each notification (and after a reconnect)."""

    task_name = "hookd-pg-listen"

    def __init__(self, url: str, wake: Callable[[], None], *, application_name: str) -> None:
        self.url = url
        self.wake = wake
        self.application_name = application_name
        self.connected = asyncio.Event()
        super().__init__()

    async def _run(self) -> None:
        first = True
        while not self.closing:
            try:
                async with await connect(self.url, application_name=self.application_name) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    if not first:
                        self.wake()  # what arrived while we were not listening
                    first = False
                    async for _ in conn.notifies():
                        self.wake()
            except (StoreUnavailable, psycopg.Error) as e:
                self.connected.clear()
                if self.closing:
                    return
                log.warning("waiting for deliveries' notifications failed; reconnecting",
                            extra={"error": describe(e)})
                await asyncio.sleep(RECONNECT_DELAY)

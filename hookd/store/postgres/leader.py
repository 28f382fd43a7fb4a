"""Which replica leads: reconciles, prunes, runs scheduled jobs. Exactly one at a time.

The leader holds a session-level advisory lock (`LOCK_LEADER`) on a connection of its
own. PostgreSQL releases it the moment that session ends: at once when the leader's
process dies (the kernel closes its socket), and after the TCP keepalives this session
sets (5 s idle + 3 × 2 s probes) when its host vanishes. The others try the lock every
`retry` seconds, so a new leader takes over within ~2 s of a crash and ~13 s of a dead
host, and reconciles at once (`on_elected`). Replicas starting at the same second ask
together; the lock answers exactly one.

The leader checks its own session every `check` seconds (bounded by `check_timeout`): a
leader that cannot reach the database stops leading (`on_lost`) before the server gives
its lock away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg

from hookd.store.postgres.connection import Conn, SessionTask, StoreUnavailable, connect, describe
from hookd.store.postgres.schema import LOCK_LEADER, LOCK_NAMESPACE

log = logging.getLogger("hookd.store.postgres.leader")

# Server-side keepalives of the lock's session: how soon the server notices a dead host.
KEEPALIVES = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2",
              "tcp_keepalives_count": "3"}

Callback = Callable[[], Awaitable[None] | None]


class Leadership(SessionTask):
    """Campaign for the leader lock until `aclose`; `leading` says whether we hold it."""

    task_name = "hookd-leader"

    def __init__(self, url: str, *, name: str, on_elected: Callback | None = None,
                 on_lost: Callback | None = None, retry: float = 2.0, check: float = 2.0,
                 check_timeout: float = 5.0) -> None:
        self.url = url
        self.name = name  # the lock session's application_name: `hookd status` shows it
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.retry = retry
        self.check = check
        self.check_timeout = check_timeout
        self.leading = False
        self.at_start = False  # the lock taken at the very first attempt
        self.attempts = 0  # tries of the lock so far (`hookd apply --wait 0`: one)
        self.changed = asyncio.Event()  # set at each change of `leading` (tests, status)
        super().__init__()

    async def _run(self) -> None:
        while not self.closing:
            try:
                async with await connect(self.url, application_name=self.name) as conn:
                    for setting, value in KEEPALIVES.items():
                        await conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
                    await self._campaign(conn)
            except (StoreUnavailable, psycopg.Error, TimeoutError) as e:
                log.warning("leader election: the database session failed",
                            extra={"error": describe(e)})
            finally:
                await self._set(False)
            if not self.closing:
                await asyncio.sleep(self.retry)

    async def _campaign(self, conn: Conn) -> None:
        while not self.leading:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                            (LOCK_NAMESPACE, LOCK_LEADER))).fetchone()
            self.attempts += 1
            if row and row[0]:
                self.at_start = self.attempts == 1
                await self._set(True)
                break
            await asyncio.sleep(self.retry)
        while True:  # leading: is the session (so the lock) still there?
            await asyncio.sleep(self.check)
            await asyncio.wait_for(conn.execute("SELECT 1"), self.check_timeout)

    async def _set(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        self.changed.set()
        self.changed = asyncio.Event()
        log.info("this replica leads now" if leading else "this replica no longer leads",
                 extra={"replica": self.name})
        callback = self.on_elected if leading else self.on_lost
        if callback is not None:
            try:
                result = callback()
                if result is not None:
                    await result
            except Exception:
                log.exception("leader election: a callback failed")

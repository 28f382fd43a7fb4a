"""The PostgreSQL backend of the store: one database that several replicas share.

What a replica holds (role ``daemon``): a small pool (the inbox's group commits, the
admin API, the reconciler), one LISTEN session (wake-ups), one heartbeat task, and while
campaigning one more session for the leader lock (`leadership`). A worker (role
``worker``, its own process by default) holds a pool and a LISTEN session of its own.

Each replica has a name, stable across its restarts: made once and kept in its state
directory (``replica.id``). Claims carry it as their owner, so a restarted replica frees
at once what it left running (`DeliveryQueue.recover`); `hookd status` shows it. Nothing
else a replica needs lives in its state directory: losing one costs only that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from hookd.config import secrets as config_secrets
from hookd.config.model import MaybeSecret
from hookd.store.interface import Health, Mode, Role
from hookd.store.postgres import meta, replicas, schema
from hookd.store.postgres.activity import PgActivity
from hookd.store.postgres.connection import (
    Conn,
    SessionTask,
    StoreUnavailable,
    connect,
    describe,
    is_postgres_url,
    pool,
    redact,
)
from hookd.store.postgres.connection import replica_name as connection_name
from hookd.store.postgres.deliveries import PgDeliveryQueue, transaction
from hookd.store.postgres.inbox import PgInbox
from hookd.store.postgres.leader import Callback, Leadership
from hookd.store.postgres.replicas import Heartbeat
from hookd.store.postgres.runs import PgRunHistory
from hookd.store.postgres.subscriptions import PgSubscriptions
from hookd.store.postgres.wakeup import Wakeup

log = logging.getLogger("hookd.store.postgres")

REPLICA_FILE = "replica.id"
PROBE_EVERY = 2.0  # seconds between the health probe's queries



def resolve_url(url: MaybeSecret, *, env: dict[str, str] | None = None) -> str:
    """The database URL of hookd.yaml's `store:` (a secret reference resolved now).

    Raises `hookd.config.secrets.SecretError` or `ValueError`; neither message holds the
    value.
    """
    value = config_secrets.resolve_value(url, env=env)
    if not is_postgres_url(value):
        raise ValueError(f"store: {url if not isinstance(url, str) else 'the URL'} is not a "
                         "postgresql:// URL")
    return value


def replica_name(state_dir: Path | None) -> str:
    """This replica's name: ``<host>-<6 hex>``, made once per state directory."""
    fresh = f"{socket.gethostname()}-{secrets.token_hex(3)}"[:63]
    if state_dir is None:
        return fresh
    path = Path(state_dir) / REPLICA_FILE
    with contextlib.suppress(FileNotFoundError):
        name = path.read_text().strip()
        if name:
            return name[:63]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of this replica made it first
        return path.read_text().strip()[:63]
    with os.fdopen(fd, "w") as f:
        f.write(fresh + "\n")
    return fresh


# The last known state: the interface's own record.
HealthState = Health


class PgHealth(SessionTask):
    """Never blocks: a probe task queries every `PROBE_EVERY` seconds; a batch the inbox
    failed to commit makes it unhealthy at once, until a later probe (or batch) succeeds
    (not until the next batch only: a balancer sends none to a replica whose /readyz
    says 503)."""

    task_name = "hookd-pg-health"

    def __init__(self, pool: AsyncConnectionPool[Conn], inbox: PgInbox) -> None:
        super().__init__()
        self.pool = pool
        self.inbox = inbox
        self._last = HealthState(False, "not connected yet")

    def state(self) -> HealthState:
        if self.inbox.last_error is not None and self.inbox.last_error_at > self._last.checked_at:
            return HealthState(False, self.inbox.last_error, time.time())
        return self._last

    async def probe_once(self) -> None:
        try:
            async with transaction(self.pool, "the database") as conn:
                await conn.execute("SELECT 1")
            self._last = HealthState(True, None, time.time())
        except StoreUnavailable as e:
            self._last = HealthState(False, str(e), time.time())

    async def _run(self) -> None:
        while not self.closing:
            await self.probe_once()
            await asyncio.sleep(PROBE_EVERY)


class PgStore:
    """`hookd.store.interface.Store` on a PostgreSQL database (see the module docstring)."""

    def __init__(self, url: str, *, role: Role = "daemon", mode: Mode = "create",
                 state_dir: Path | None = None, dedup_window: float = 7 * 86400.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.role, self.mode = role, mode
        self.name = replica_name(state_dir)
        self._pool = pool(url, min_size=1, max_size={"daemon": 8, "worker": 8, "cli": 2}[role])
        self.inbox = PgInbox(self._pool, dedup_window=dedup_window, clock=clock)
        self.deliveries = PgDeliveryQueue(self._pool, owner=self.name, clock=clock)
        self.runs = PgRunHistory(self._pool, clock=clock, dedup_window=dedup_window,
                                 notes=self.deliveries.notes)
        self.subscriptions = PgSubscriptions(self._pool, clock=clock)
        self.health = PgHealth(self._pool, self.inbox)
        self.activity = PgActivity(self._pool)
        self._wakeup = Wakeup(url, self.deliveries.arrived, application_name=self.name)
        self._heartbeat = Heartbeat(self._pool, self.name)
        self._started = False

    @property
    def location(self) -> str:
        return redact(self.url)

    async def start(self) -> None:
        """Connect, migrate (mode ``create``) or check the schema; raises `SchemaTooNew`
        (this code is older than the database) or `StoreUnavailable`."""
        if self._started:
            return
        async with await connect(self.url, application_name=self.name) as conn:
            if self.mode in ("create", "ephemeral"):  # ephemeral: `hookd plan` before any run
                applied = await schema.migrate(conn)
                if applied:
                    log.info("database migrated", extra={"versions": applied,
                                                         "store": self.location})
            else:
                await schema.check(conn)
        try:
            await self._pool.open(wait=True, timeout=30)
        except Exception as e:  # psycopg_pool.PoolTimeout
            raise StoreUnavailable(f"cannot open connections to {self.location}: "
                                   f"{describe(e)}") from None
        self._started = True
        if self.role in ("daemon", "worker"):
            self._wakeup.start()
        if self.role == "daemon":
            self.inbox.start()
            await self.health.probe_once()
            self.health.start()
            self._heartbeat.start()

    async def server_secret(self) -> bytes:
        """The secret that derives callback tokens: the same on every replica."""
        async with transaction(self._pool, "reading the server secret") as conn:
            return await meta.load_or_create_server_secret(conn)

    def leadership(self, *, on_elected: Callback | None = None,
                   on_lost: Callback | None = None) -> Leadership:
        """A campaign for the leader lock under this replica's name (not started); a
        command's (`hookd apply` and `teardown` lead while they reconcile) under its
        process's, ``hookd:<host>:<pid>``, so that it is never taken for a replica that
        shares its state directory."""
        name = connection_name() if self.role == "cli" else self.name
        return Leadership(self.url, name=name, on_elected=on_elected, on_lost=on_lost)

    async def describe(self) -> dict[str, object]:
        """`hookd status`'s view: this replica, every replica's heartbeat, the leader."""
        listed = await self.replicas()
        return {"backend": "postgresql", "location": self.location, "replica": self.name,
                "leader": next((r.name for r in listed if r.leader), None),
                "replicas": [r.to_json() for r in listed]}

    async def replicas(self) -> list[replicas.Replica]:
        async with transaction(self._pool, "listing replicas") as conn:
            return await replicas.listing(conn)

    async def aclose(self) -> None:
        # Step results the run history still keeps (a run stopped between two steps, as
        # a drain that timed out stops it): committed, so the run resumes after them.
        with contextlib.suppress(StoreUnavailable):
            await self.runs.flush()
        await self.inbox.aclose()
        await self._wakeup.aclose()
        await self.health.aclose()
        if self._heartbeat.started:
            await self._heartbeat.aclose()
            with contextlib.suppress(StoreUnavailable):
                async with transaction(self._pool, "leaving") as conn:
                    await replicas.leave(conn, self.name)
        await self._pool.close()
        self._started = False

    def close(self) -> None:
        """`aclose` for code without an event loop (the CLI)."""
        asyncio.run(self.aclose())

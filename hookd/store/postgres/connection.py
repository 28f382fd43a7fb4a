"""Connections to hookd's PostgreSQL database, all with the same session settings.

Every connection is in autocommit mode (a transaction is always explicit: ``async with
conn.transaction()``), and runs with ``synchronous_commit = on`` whatever the server's
default: a delivery is acknowledged only after its COMMIT, and that promise means nothing
if the COMMIT returns before the WAL is flushed. `application_name` names the replica, so
`pg_stat_activity` (and `hookd status`) can tell whose session holds what.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from hookd.store import errors

Conn = psycopg.AsyncConnection[TupleRow]

POOL_WAIT = 10.0  # seconds
SESSION_SETTINGS = {"synchronous_commit": "on", "timezone": "UTC"}


class StoreUnavailable(errors.Unavailable):
    """The database cannot be reached or refused the work; nothing was committed (the
    store's `hookd.store.errors.Unavailable`: the listener answers 503, the API 503).

    The message names the server (host, port, database), never the password.
    """


def is_postgres_url(text: str) -> bool:
    """Whether `text` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return text.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """`url` without its password, for messages and logs.

    >>> redact("postgresql://hookd:s3cret@db.internal:5432/hookd")
    'postgresql://hookd:***@db.internal:5432/hookd'
    >>> redact("postgresql://db.internal/hookd")
    'postgresql://db.internal/hookd'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def replica_name() -> str:
    """This process as other replicas see it: ``hookd:<host>:<pid>`` (63 bytes at most,
    PostgreSQL's limit for application_name)."""
    return f"hookd:{socket.gethostname()}:{os.getpid()}"[:63]


async def connect(url: str, *, application_name: str | None = None) -> Conn:
    """One connection with hookd's settings (for a dedicated session: LISTEN, the leader lock)."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, application_name=application_name or replica_name(),
            connect_timeout=10,
        )
    except psycopg.OperationalError as e:
        raise StoreUnavailable(f"cannot connect to {redact(url)}: {_first_line(e)}") from None
    await configure(conn)
    return conn


async def configure(conn: Conn) -> None:
    """Apply `SESSION_SETTINGS` (also the pool's `configure` callback)."""
    for name, value in SESSION_SETTINGS.items():
        await conn.execute("SELECT set_config(%s, %s, false)", (name, value))


def pool(url: str, *, min_size: int = 1, max_size: int = 8) -> AsyncConnectionPool[Conn]:
    """A pool of connections with hookd's settings; not opened yet (``await p.open()``)."""
    return AsyncConnectionPool[Conn](
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True, "application_name": replica_name(), "connect_timeout": 10},
        configure=configure,
        # A request waits this long for a connection before it is answered 503 (the
        # store's promise, hookd.store.errors.LOCK_WAIT on SQLite's side).
        timeout=POOL_WAIT,
        open=False,
        name="hookd",
    )


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def describe(e: BaseException) -> str:
    """A database error as one line (psycopg's messages name host and port, not passwords)."""
    return _first_line(e)


class SessionTask:
    """A dedicated session's loop, run as a task of its own (LISTEN, the leader lock):
    `start` it on the event loop, `aclose` cancels it (closing its session).

    A loop runs ``while not self.closing``: psycopg may turn the cancellation of a
    pending operation into one of its errors, which the loop's retry would swallow.
    """

    task_name = "hookd-pg-session"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self.closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.task_name)

    @property
    def started(self) -> bool:
        return self._task is not None

    async def aclose(self) -> None:
        self.closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError

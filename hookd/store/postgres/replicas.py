"""The replicas that share the database, as `hookd status` lists them.

Each replica upserts its row (host, pid, version) every `HEARTBEAT` seconds on the
database's clock; a row whose heartbeat is older than `STALE` is a replica that is gone
(the leader's pruning removes rows a day old). Which one leads is not a column anyone
could leave stale: it is read from `pg_locks`, whose session holds the leader lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from hookd import __version__
from hookd.store.postgres.connection import Conn, SessionTask, StoreUnavailable
from hookd.store.postgres.deliveries import transaction
from hookd.store.postgres.schema import LOCK_LEADER, LOCK_NAMESPACE

log = logging.getLogger("hookd.store.postgres.replicas")

HEARTBEAT = 5.0  # seconds between a replica's heartbeats
STALE = 30.0  # a heartbeat older than this: the replica is gone


@dataclass(frozen=True)
class Replica:
    name: str
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float  # seconds, on the database's clock
    leader: bool

    @property
    def alive(self) -> bool:
        return self.heartbeat_age <= STALE

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "host": self.host, "pid": self.pid, "version": self.version,
                "started_at": self.started_at.isoformat(),
                "heartbeat_at": self.heartbeat_at.isoformat(),
                "heartbeat_age": round(self.heartbeat_age, 1), "alive": self.alive,
                "leader": self.leader}


async def heartbeat(conn: Conn, name: str) -> None:
    """Record that replica `name` (this process) is alive."""
    await conn.execute(
        "INSERT INTO replicas (name, host, pid, version, started_at, heartbeat_at)"
        " VALUES (%s, %s, %s, %s, now(), now()) ON CONFLICT (name) DO UPDATE SET"
        " host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,"
        " started_at = CASE WHEN replicas.pid = EXCLUDED.pid THEN replicas.started_at"
        " ELSE EXCLUDED.started_at END, heartbeat_at = now()",
        (name, socket.gethostname(), os.getpid(), __version__))


async def leave(conn: Conn, name: str) -> None:
    """A clean stop: the replica's row goes."""
    await conn.execute("DELETE FROM replicas WHERE name = %s", (name,))


async def leader_name(conn: Conn) -> str | None:
    """The application_name of the session that holds the leader lock (a replica's name)."""
    row = await (await conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s"
        " AND l.objid::bigint = %s AND l.objsubid = 2"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (LOCK_NAMESPACE, LOCK_LEADER))).fetchone()
    return str(row[0]) if row else None


async def listing(conn: Conn) -> list[Replica]:
    """Every replica with a row, newest heartbeat first, the leader marked."""
    leader = await leader_name(conn)
    rows = await (await conn.execute(
        "SELECT name, host, pid, version, started_at, heartbeat_at,"
        " extract(epoch FROM now() - heartbeat_at) FROM replicas"
        " ORDER BY heartbeat_at DESC, name")).fetchall()
    return [Replica(r[0], r[1], int(r[2]), r[3], r[4], r[5], float(r[6]), r[0] == leader)
            for r in rows]


async def prune(conn: Conn, older_than: float = 86400.0) -> int:
    """The leader's: rows of replicas gone for `older_than` seconds."""
    cur = await conn.execute(
        "DELETE FROM replicas WHERE heartbeat_at < now() - make_interval(secs => %s)",
        (older_than,))
    return cur.rowcount


class Heartbeat(SessionTask):
    """Upserts this replica's row every `HEARTBEAT` seconds (a failure is logged and
    retried at the next beat)."""

    task_name = "hookd-pg-heartbeat"

    def __init__(self, pool: AsyncConnectionPool[Conn], name: str) -> None:
        super().__init__()
        self.pool = pool
        self.name = name

    async def _run(self) -> None:
        while not self.closing:
            try:
                async with transaction(self.pool, "heartbeat") as conn:
                    await heartbeat(conn, self.name)
            except StoreUnavailable as e:
                log.warning("heartbeat failed", extra={"error": str(e)})
            await asyncio.sleep(HEARTBEAT)

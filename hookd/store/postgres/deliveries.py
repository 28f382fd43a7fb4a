"""The shared delivery queue: claims with a lease, so any replica's worker runs any delivery
and a dead replica's claims come back.

A claim is one statement: ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)``.
SKIP LOCKED lets the replicas' workers claim at once without waiting on each other's rows,
and never hands one delivery to two of them. A claimed delivery is ``running`` until its
``lease_until`` (the database's clock, so the replicas' clocks need not agree); the worker
renews the leases of what it still runs, and a delivery whose lease expired (its replica
died, or lost the database) is claimable again by anyone: the run resumes at its first
unfinished step, as after a restart.

A flow's ``concurrency`` must hold across replicas, which no replica can count alone:
a claim with `max_running` takes a transaction-scoped advisory lock on the flow, counts
the flow's live claims (all replicas) and claims only the room left. Claims of one flow
serialize on that lock; other flows' claims do not wait.

`owner` names the claimer (the replica's id, stable across its restarts: it lives in the
replica's state directory), so that `recover` frees at once what the previous
incarnation left running.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from hookd.store.postgres.connection import Conn, StoreUnavailable, describe
from hookd.store.postgres.schema import LOCK_FLOW, LOCK_NAMESPACE
from hookd.store.records import Delivery

# The channel of "deliveries may be claimable" (hookd.store.postgres.wakeup listens).
CHANNEL = "hookd_deliveries"

COLUMNS = (
    "id, subscription_id, flow, received_at, headers, body, event, dedup_key, item,"
    " status, attempts, flags, error, updated_at"
)

# Claimable: queued, or running under a lease that has run out. Two scans, each on an
# index of its own (deliveries_claimable in id order, deliveries_leased by lease), each
# locking what it takes: one `status = … OR …` condition can use neither index, and the
# claim then stepped through the primary key over every finished delivery.
_CLAIM = (
    "WITH queued AS (SELECT id FROM deliveries WHERE status = 'queued'{flows}"
    " ORDER BY id LIMIT {room} FOR UPDATE SKIP LOCKED),"
    " expired AS (SELECT id FROM deliveries WHERE status = 'running'"
    " AND lease_until < now(){flows} ORDER BY id LIMIT {room} FOR UPDATE SKIP LOCKED)"
    " UPDATE deliveries SET status = 'running', attempts = attempts + 1,"
    " lease_owner = %(owner)s, lease_until = now() + make_interval(secs => %(lease)s),"
    " updated_at = %(now)s WHERE id IN (SELECT id FROM (SELECT id FROM queued UNION ALL"
    " SELECT id FROM expired) AS c ORDER BY id LIMIT {room})"
    f" RETURNING {COLUMNS}, (SELECT coalesce(max(r.attempt), 0) FROM runs r"
    " WHERE r.delivery_id = deliveries.id)"
)

# Claim notes: the latest run's attempt number of each delivery this process claimed
# (0: none), until the run history creates its next run (`PgRunHistory.create`), which
# then needs no read of its own. Bounded: past this many, the notes are dropped (a
# create without a note reads, as before).
NOTES_MAX = 10_000
ClaimNotes = dict[str, int]


def row_delivery(r: Sequence[Any]) -> Delivery:
    """A `Delivery` from a row of `COLUMNS`."""
    return Delivery(
        id=r[0], subscription_id=r[1], flow=r[2], received_at=r[3],
        headers=json.loads(r[4]), body=bytes(r[5]), event=r[6], dedup_key=r[7], item=r[8],
        status=r[9], attempts=r[10], flags=tuple(json.loads(r[11])), error=r[12],
        updated_at=r[13],
    )


@asynccontextmanager
async def _failing_as(what: str) -> AsyncIterator[None]:
    """A database failure inside becomes `StoreUnavailable` naming `what` (nothing was
    committed)."""
    try:
        yield
    except psycopg.Error as e:
        raise StoreUnavailable(f"{what}: {describe(e)}") from None
    except TimeoutError:  # psycopg_pool.PoolTimeout: no connection came in time
        raise StoreUnavailable(f"{what}: no database connection available") from None


@asynccontextmanager
async def transaction(pool: AsyncConnectionPool[Conn], what: str) -> AsyncIterator[Conn]:
    """A pooled connection inside one transaction; a database failure becomes
    `StoreUnavailable` naming `what` (nothing was committed)."""
    async with _failing_as(what), pool.connection() as conn, conn.transaction():
        yield conn


@asynccontextmanager
async def statement(pool: AsyncConnectionPool[Conn], what: str) -> AsyncIterator[Conn]:
    """A pooled connection for ONE statement, which is its own transaction (the sessions
    are in autocommit): one round trip, where `transaction` takes three (BEGIN, the
    statement, COMMIT). Errors as `transaction`."""
    async with _failing_as(what), pool.connection() as conn:
        yield conn


class Batch:
    """Statements to send as ONE transaction in one round trip (`batch`): `add` them,
    read their rows after the block with `rows`."""

    def __init__(self) -> None:
        self._statements: list[tuple[str, Sequence[Any] | Mapping[str, Any]]] = []
        self._results: list[list[tuple[Any, ...]]] = []

    def add(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        """Queue one statement (``%s`` or ``%(name)s`` placeholders); returns its index
        for `rows`."""
        self._statements.append((sql, params))
        return len(self._statements) - 1

    def rows(self, index: int) -> list[tuple[Any, ...]]:
        """The rows statement `index` returned (after the block)."""
        return self._results[index]

    async def send(self, conn: Conn) -> None:
        if not self._statements:
            return
        # Several statements in one simple-protocol query are one implicit transaction
        # (all or nothing; each statement still gets its own snapshot). Parameters are
        # bound by psycopg on the client (quoted literals): the extended protocol takes
        # one statement per message. psycopg's pipeline mode would also take one round
        # trip, but costs more CPU per statement than the round trips it saves (ADR 0010).
        cur = psycopg.AsyncClientCursor(conn)
        await cur.execute("; ".join(cur.mogrify(sql, params) if params else sql
                                    for sql, params in self._statements))
        while True:
            self._results.append(list(await cur.fetchall()) if cur.description else [])
            if not cur.nextset():
                break


@asynccontextmanager
async def batch(pool: AsyncConnectionPool[Conn], what: str, *,
                durable: bool = True) -> AsyncIterator[Batch]:
    """A `Batch` sent at the end of the block on a pooled connection: one transaction,
    one round trip, where `transaction` takes two more (BEGIN, COMMIT) and one per
    statement. Errors as `transaction`.

    ``durable=False`` commits without waiting for the WAL flush (``SET LOCAL
    synchronous_commit = off``): only for writes whose loss in a crash of the *server*
    still leaves at-least-once delivery (docs/adr/0010-pg-worker-round-trips.md says
    which). Any later durable commit flushes them too (the WAL is one sequence).
    """
    b = Batch()
    if not durable:
        b.add("SET LOCAL synchronous_commit = off")
    yield b
    async with _failing_as(what), pool.connection() as conn:
        await b.send(conn)


class PgDeliveryQueue:
    """`hookd.store.interface.DeliveryQueue` on PostgreSQL (every method one transaction,
    and one round trip where the worker calls it per delivery)."""

    def __init__(self, pool: AsyncConnectionPool[Conn], *, owner: str,
                 clock: Callable[[], float] = time.time,
                 notes: ClaimNotes | None = None) -> None:
        self.pool = pool
        self.owner = owner
        self.clock = clock
        self.notes: ClaimNotes = {} if notes is None else notes
        self._arrival: list[Callable[[], None]] = []

    async def get(self, delivery_id: str) -> Delivery | None:
        async with statement(self.pool, "reading a delivery") as conn:
            r = await (await conn.execute(
                f"SELECT {COLUMNS} FROM deliveries WHERE id = %s", (delivery_id,))).fetchone()
        return row_delivery(r) if r else None

    async def claim(self, limit: int, *, flows: Sequence[str] | None = None, lease: float,
                    max_running: int | None = None) -> list[Delivery]:
        """Up to `limit` claimable deliveries, oldest first, running until now + `lease`.

        With `max_running` (a flow's ``concurrency``; `flows` then names that one flow),
        no more than that many of the flow's deliveries run at once over all replicas.
        """
        if limit <= 0 or (flows is not None and not flows):
            return []
        params: dict[str, object] = {"owner": self.owner, "lease": lease,
                                     "now": self.clock(), "limit": limit}
        flows_sql = ""
        if flows is not None:
            flows_sql = " AND flow = ANY(%(flows)s)"
            params["flows"] = list(flows)
        room = "%(limit)s"
        lock: str | None = None
        if max_running is not None:
            if flows is None or len(flows) != 1:
                raise ValueError("claim: max_running needs exactly one flow")
            # The room left under the flow's limit, counted after the lock (a statement
            # of its own, so its snapshot sees the claims committed while it waited).
            room = ("least(%(limit)s, greatest(0, %(max_running)s - (SELECT count(*) FROM"
                    " deliveries WHERE flow = %(flow)s AND status = 'running'"
                    " AND lease_until >= now())))")
            params.update(max_running=max_running, flow=flows[0])
            lock = flows[0]
        sql = _CLAIM.format(flows=flows_sql, room=room)
        if lock is None:
            # One statement, one round trip.
            async with statement(self.pool, "claiming deliveries") as conn:
                rows = await (await conn.execute(sql, params)).fetchall()
        else:
            async with batch(self.pool, "claiming deliveries") as b:
                b.add("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                      (LOCK_NAMESPACE + LOCK_FLOW, lock))
                claimed = b.add(sql, params)
            rows = b.rows(claimed)
        if len(self.notes) + len(rows) > NOTES_MAX:
            self.notes.clear()
        for r in rows:
            self.notes[r[0]] = int(r[-1])
        return sorted((row_delivery(r) for r in rows), key=lambda d: d.id)

    async def renew(self, delivery_ids: Sequence[str], lease: float) -> None:
        if not delivery_ids:
            return
        async with statement(self.pool, "renewing leases") as conn:
            await conn.execute(
                "UPDATE deliveries SET lease_until = now() + make_interval(secs => %s)"
                " WHERE id = ANY(%s) AND status = 'running' AND lease_owner = %s",
                (lease, list(delivery_ids), self.owner))

    async def finish(self, delivery_id: str, status: str, error: str | None = None) -> None:
        if status not in ("done", "failed", "queued"):
            raise ValueError(f"finish: status must be done, failed or queued, not {status!r}")
        self.notes.pop(delivery_id, None)
        async with statement(self.pool, "finishing a delivery") as conn:
            await conn.execute(*finish_args(delivery_id, status, error, self.clock()))

    async def add_flag(self, delivery_id: str, flag: str) -> bool:
        async with transaction(self.pool, "flagging a delivery") as conn:
            r = await (await conn.execute(
                "SELECT flags FROM deliveries WHERE id = %s FOR UPDATE", (delivery_id,)
            )).fetchone()
            if r is None:
                return False
            flags = list(json.loads(r[0] or "[]"))
            if flag not in flags:
                flags.append(flag)
                await conn.execute("UPDATE deliveries SET flags = %s WHERE id = %s",
                                   (json.dumps(flags), delivery_id))
        return True

    async def recover(self) -> int:
        """Free the claims this owner's previous incarnation left running (it died)."""
        async with transaction(self.pool, "recovering claims") as conn:
            cur = await conn.execute(
                "UPDATE deliveries SET status = 'queued', lease_owner = NULL,"
                " lease_until = NULL, updated_at = %s"
                " WHERE status = 'running' AND lease_owner = %s", (self.clock(), self.owner))
            if cur.rowcount:
                await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        return cur.rowcount

    async def queued_flows(self) -> list[str]:
        async with statement(self.pool, "listing queued flows") as conn:
            rows = await (await conn.execute(
                "SELECT DISTINCT flow FROM deliveries WHERE status = 'queued'")).fetchall()
        return sorted(r[0] for r in rows)

    async def depth(self) -> int:
        async with statement(self.pool, "counting deliveries") as conn:
            r = await (await conn.execute(
                "SELECT count(*) FROM deliveries WHERE status IN ('queued', 'running')"
            )).fetchone()
        return int(r[0]) if r else 0

    async def counts(self) -> dict[str, int]:
        """Deliveries by status (all four keys present)."""
        out = dict.fromkeys(("queued", "running", "done", "failed"), 0)
        async with statement(self.pool, "counting deliveries") as conn:
            for status, n in await (await conn.execute(
                    "SELECT status, count(*) FROM deliveries GROUP BY status")).fetchall():
                out[status] = int(n)
        return out

    def on_arrival(self, callback: Callable[[], None]) -> Callable[[], None]:
        """`callback()` when deliveries may have become claimable; `hookd.store.postgres.
        wakeup` calls `arrived` on NOTIFY. Returns an unsubscribe."""
        self._arrival.append(callback)
        return lambda: self._arrival.remove(callback) if callback in self._arrival else None

    def arrived(self) -> None:
        for callback in list(self._arrival):
            callback()


# Finish a delivery; when its flow has queued deliveries (a requeue — this one: the
# snapshot of EXISTS predates the UPDATE —, or a slot of its ``concurrency`` freed), wake
# the workers: another replica's may take them. One statement.
_FINISH = (
    "WITH d AS (UPDATE deliveries SET status = %s, error = %s, updated_at = %s,"
    " lease_owner = NULL, lease_until = NULL WHERE id = %s RETURNING flow)"
    " SELECT pg_notify(%s, '') FROM d WHERE %s = 'queued' OR EXISTS"
    " (SELECT 1 FROM deliveries q WHERE q.flow = d.flow AND q.status = 'queued')"
)


def finish_args(delivery_id: str, status: str, error: str | None,
                now: float) -> tuple[str, tuple[Any, ...]]:
    """`finish` as one statement and its parameters (the run history adds it to the
    batch that finishes the run: both commit together)."""
    return _FINISH, (status, error, now, delivery_id, CHANNEL, status)

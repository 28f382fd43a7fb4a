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
from collections.abc import AsyncIterator, Callable, Sequence
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

# Claimable: queued, or running under a lease that has run out.
_CLAIMABLE = "(status = 'queued' OR (status = 'running' AND lease_until < now()))"


def row_delivery(r: Sequence[Any]) -> Delivery:
    """A `Delivery` from a row of `COLUMNS`."""
    return Delivery(
        id=r[0], subscription_id=r[1], flow=r[2], received_at=r[3],
        headers=json.loads(r[4]), body=bytes(r[5]), event=r[6], dedup_key=r[7], item=r[8],
        status=r[9], attempts=r[10], flags=tuple(json.loads(r[11])), error=r[12],
        updated_at=r[13],
    )


@asynccontextmanager
async def transaction(pool: AsyncConnectionPool[Conn], what: str) -> AsyncIterator[Conn]:
    """A pooled connection inside one transaction; a database failure becomes
    `StoreUnavailable` naming `what` (nothing was committed)."""
    try:
        async with pool.connection() as conn, conn.transaction():
            yield conn
    except psycopg.Error as e:
        raise StoreUnavailable(f"{what}: {describe(e)}") from None
    except TimeoutError:  # psycopg_pool.PoolTimeout: no connection came in time
        raise StoreUnavailable(f"{what}: no database connection available") from None


class PgDeliveryQueue:
    """`hookd.store.interface.DeliveryQueue` on PostgreSQL (every method one transaction)."""

    def __init__(self, pool: AsyncConnectionPool[Conn], *, owner: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.owner = owner
        self.clock = clock
        self._arrival: list[Callable[[], None]] = []

    async def get(self, delivery_id: str) -> Delivery | None:
        async with transaction(self.pool, "reading a delivery") as conn:
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
        async with transaction(self.pool, "claiming deliveries") as conn:
            if max_running is not None:
                if flows is None or len(flows) != 1:
                    raise ValueError("claim: max_running needs exactly one flow")
                await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                                   (LOCK_NAMESPACE + LOCK_FLOW, flows[0]))
                r = await (await conn.execute(
                    "SELECT count(*) FROM deliveries WHERE flow = %s AND status = 'running'"
                    " AND lease_until >= now()", (flows[0],))).fetchone()
                limit = min(limit, max_running - int(r[0] if r else 0))
                if limit <= 0:
                    return []
            where, args = _CLAIMABLE, []
            if flows is not None:
                where += " AND flow = ANY(%s)"
                args.append(list(flows))
            rows = await (await conn.execute(
                "UPDATE deliveries SET status = 'running', attempts = attempts + 1,"
                " lease_owner = %s, lease_until = now() + make_interval(secs => %s),"
                " updated_at = %s WHERE id IN (SELECT id FROM deliveries"
                f" WHERE {where} ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
                f" RETURNING {COLUMNS}",
                (self.owner, lease, self.clock(), *args, limit))).fetchall()
        return sorted((row_delivery(r) for r in rows), key=lambda d: d.id)

    async def renew(self, delivery_ids: Sequence[str], lease: float) -> None:
        if not delivery_ids:
            return
        async with transaction(self.pool, "renewing leases") as conn:
            await conn.execute(
                "UPDATE deliveries SET lease_until = now() + make_interval(secs => %s)"
                " WHERE id = ANY(%s) AND status = 'running' AND lease_owner = %s",
                (lease, list(delivery_ids), self.owner))

    async def finish(self, delivery_id: str, status: str, error: str | None = None) -> None:
        if status not in ("done", "failed", "queued"):
            raise ValueError(f"finish: status must be done, failed or queued, not {status!r}")
        async with transaction(self.pool, "finishing a delivery") as conn:
            await finish_in(conn, delivery_id, status, error, self.clock())

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
        async with transaction(self.pool, "listing queued flows") as conn:
            rows = await (await conn.execute(
                "SELECT DISTINCT flow FROM deliveries WHERE status = 'queued'")).fetchall()
        return sorted(r[0] for r in rows)

    async def depth(self) -> int:
        async with transaction(self.pool, "counting deliveries") as conn:
            r = await (await conn.execute(
                "SELECT count(*) FROM deliveries WHERE status IN ('queued', 'running')"
            )).fetchone()
        return int(r[0]) if r else 0

    async def counts(self) -> dict[str, int]:
        """Deliveries by status (all four keys present)."""
        out = dict.fromkeys(("queued", "running", "done", "failed"), 0)
        async with transaction(self.pool, "counting deliveries") as conn:
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


async def finish_in(conn: Conn, delivery_id: str, status: str, error: str | None,
                    now: float) -> None:
    """`finish` inside the caller's transaction (the run history finishes a run and its
    delivery in one). When the flow has queued deliveries (a requeue, or a slot of its
    ``concurrency`` freed), the workers are woken: another replica's may take them."""
    r = await (await conn.execute(
        "UPDATE deliveries SET status = %s, error = %s, updated_at = %s, lease_owner = NULL,"
        " lease_until = NULL WHERE id = %s RETURNING flow",
        (status, error, now, delivery_id))).fetchone()
    if r is not None:
        await conn.execute(
            "SELECT pg_notify(%s, '') WHERE EXISTS"
            " (SELECT 1 FROM deliveries WHERE flow = %s AND status = 'queued')", (CHANNEL, r[0]))

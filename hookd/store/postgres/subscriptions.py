"""The subscriptions hookd created upstream, in PostgreSQL: the leader's reconciler writes
them, every replica's callback listener reads them.

Same rows and statuses as the SQLite table (`hookd.store.sqlite.subscriptions` says what
each status means); `apply_many` is one transaction, so a pass's bookkeeping commits once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from hookd.store.interface import Subscriptions
from hookd.store.postgres.connection import Conn
from hookd.store.postgres.deliveries import transaction
from hookd.store.records import SUBSCRIPTION_STATUSES as STATUSES
from hookd.store.records import SubscriptionRow, Update

COLUMNS = (
    "id, flow, fingerprint, connector, operation, connection, scope, parameters, location,"
    " upstream_id, secret, status, last_error, verified_at, created_at, updated_at"
)
SETTABLE = frozenset({"status", "location", "upstream_id", "last_error", "verified_at"})

_UPSERT = (
    f"INSERT INTO subscriptions ({COLUMNS}) VALUES"
    " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (id) DO UPDATE SET flow = EXCLUDED.flow,"
    " fingerprint = EXCLUDED.fingerprint, connector = EXCLUDED.connector,"
    " operation = EXCLUDED.operation, connection = EXCLUDED.connection,"
    " scope = EXCLUDED.scope, parameters = EXCLUDED.parameters,"
    " location = EXCLUDED.location, upstream_id = EXCLUDED.upstream_id,"
    " secret = EXCLUDED.secret, status = EXCLUDED.status,"
    " last_error = EXCLUDED.last_error, updated_at = EXCLUDED.updated_at"
)


def row_subscription(r: Sequence[Any]) -> SubscriptionRow:
    return SubscriptionRow(
        id=r[0], flow=r[1], fingerprint=r[2], connector=r[3], operation=r[4], connection=r[5],
        scope=r[6], parameters=json.loads(r[7] or "{}"), location=r[8], upstream_id=r[9],
        secret=r[10], status=r[11], last_error=r[12], verified_at=r[13], created_at=r[14],
        updated_at=r[15],
    )


def subscription_values(row: SubscriptionRow, now: float) -> tuple[object, ...]:
    """The values of `COLUMNS` for `row` (also what `hookd store copy` inserts)."""
    return (row.id, row.flow, row.fingerprint, row.connector, row.operation, row.connection,
            row.scope, json.dumps(dict(row.parameters), default=str), row.location,
            row.upstream_id, row.secret, row.status, row.last_error, row.verified_at,
            row.created_at or now, row.updated_at or now)


class PgSubscriptions(Subscriptions):
    """`hookd.store.interface.Subscriptions` on PostgreSQL."""

    def __init__(self, pool: AsyncConnectionPool[Conn], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.clock = clock

    async def get(self, sub_id: str) -> SubscriptionRow | None:
        async with transaction(self.pool, "reading a subscription") as conn:
            r = await (await conn.execute(
                f"SELECT {COLUMNS} FROM subscriptions WHERE id = %s", (sub_id,))).fetchone()
        return row_subscription(r) if r else None

    async def all(self) -> list[SubscriptionRow]:
        async with transaction(self.pool, "reading subscriptions") as conn:
            rows = await (await conn.execute(
                f"SELECT {COLUMNS} FROM subscriptions ORDER BY flow, id")).fetchall()
        return [row_subscription(r) for r in rows]

    async def apply_many(self, updates: Iterable[Update]) -> None:
        batch = list(updates)
        for u in batch:  # checked before anything is written: bad input changes nothing
            if u.kind == "set":
                bad = set(u.fields) - SETTABLE
                if bad:
                    raise ValueError(f"not settable: {sorted(bad)}")
                if "status" in u.fields and u.fields["status"] not in STATUSES:
                    raise ValueError(f"unknown status {u.fields['status']!r}")
        if not batch:
            return
        now = self.clock()
        async with transaction(self.pool, "writing subscriptions") as conn:
            for u in batch:
                if u.kind == "upsert":
                    assert u.row is not None
                    values = list(subscription_values(u.row, now))
                    values[-1] = now  # updated now, whatever the row says
                    await conn.execute(_UPSERT, values)
                elif u.kind == "set":
                    names = sorted(u.fields)
                    assignments = "".join(f"{n} = %s, " for n in names)
                    await conn.execute(
                        f"UPDATE subscriptions SET {assignments}updated_at = %s WHERE id = %s",
                        (*(u.fields[n] for n in names), now, u.sub_id))
                else:
                    await conn.execute("DELETE FROM subscriptions WHERE id = %s", (u.sub_id,))

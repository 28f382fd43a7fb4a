"""Recording deliveries in PostgreSQL: ``await record(...)`` returns once they are committed.

The same promise as the SQLite inbox (a 2xx only for what survives a crash) and the same
idea to make it cheap: group commit. Requests that arrive while a transaction is in
flight wait together, and the next transaction records all of them: one COMMIT (one WAL
flush: the sessions run with ``synchronous_commit = on``) for a batch of concurrent
requests, not one per request. Each batch is ONE statement whatever its size, its own
transaction (one round trip): the dedup keys and the rows inserted from arrays, and the
NOTIFY (sent by the server at COMMIT, so a worker woken by it always finds the rows).
Where it was BEGIN, an INSERT, a COPY, a NOTIFY and COMMIT, the statement takes half the
server's CPU per request (docs/adr/0010-pg-worker-round-trips.md).

Dedup is the primary key of ``dedup_keys``: two replicas recording the same redelivery
at once serialize on that key, and the second finds the first's row (``ON CONFLICT``);
an entry older than the dedup window is taken over by the new delivery. Within one
batch, the first request with a key wins and the others are its duplicates.

When the database fails, every request of the batch gets `StoreUnavailable` (503): the
transaction did not commit, so nothing was acknowledged that is not recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from hookd.callbacks.payload import SchemaCheck
from hookd.store.bodies import examined
from hookd.store.postgres.connection import Conn, StoreUnavailable
from hookd.store.postgres.deliveries import CHANNEL, statement, transaction
from hookd.store.records import NewDelivery, Recorded
from hookd.store.sqlite.deliveries import PreparedRow, prepare

log = logging.getLogger("hookd.store.postgres.inbox")

# One batch: the dedup keys taken (new, or older than the window), then the rows whose
# key was taken or that have none; the server's snapshot is the statement's, so the
# rows see `keys` through its RETURNING only. The NOTIFY is sent when a row went in.
# The arrays go in binary (%b): psycopg escapes each element of a text-format array
# with a regular expression, which for 7 KB bodies cost more than the round trips saved.
_RECORD = (
    "WITH keys AS (INSERT INTO dedup_keys (key, delivery_id, seen_at)"
    " SELECT k, d, %(now)s FROM unnest(%(keys)b::text[], %(originals)b::text[]) AS t(k, d)"
    " ON CONFLICT (key) DO UPDATE SET delivery_id = EXCLUDED.delivery_id,"
    " seen_at = EXCLUDED.seen_at WHERE dedup_keys.seen_at < %(stale)s RETURNING key),"
    " fresh AS (INSERT INTO deliveries (id, subscription_id, flow, received_at, headers,"
    " body, event, dedup_key, item, flags, updated_at)"
    " SELECT r.id, r.sub, r.flow, r.received_at, r.headers, r.body, r.event, r.dedup_key,"
    " r.item, r.flags, %(now)s FROM unnest(%(ids)b::text[], %(subs)b::text[],"
    " %(flows)b::text[], %(received)b::float8[], %(headers)b::text[], %(bodies)b::bytea[],"
    " %(events)b::text[], %(dedup)b::text[], %(items)b::int[], %(flags)b::text[])"
    " AS r(id, sub, flow, received_at, headers, body, event, dedup_key, item, flags)"
    " WHERE r.dedup_key IS NULL OR r.dedup_key IN (SELECT key FROM keys) RETURNING 1)"
    " SELECT array(SELECT key FROM keys),"
    " (SELECT pg_notify(%(channel)s, '')::text FROM (SELECT 1 FROM fresh LIMIT 1) AS one)"
)


@dataclass(slots=True)
class _Job:
    deliveries: list[NewDelivery]
    dedup_key: str | None
    future: asyncio.Future[Recorded]
    rows: list[PreparedRow] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r[0] for r in self.rows]


class PgInbox:
    """`hookd.store.interface.Inbox` on PostgreSQL. Use from one event loop.

    `writers` transactions may be in flight at once (a batch commits while the next one
    is being sent); `max_batch` requests at most go into one.
    """

    def __init__(self, pool: AsyncConnectionPool[Conn], *, dedup_window: float = 7 * 86400.0,
                 max_batch: int = 1000, writers: int = 2,
                 clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.dedup_window = dedup_window
        self.max_batch = max_batch
        self.writers = writers
        self.clock = clock
        self._pending: list[_Job] = []
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False
        self._on_commit: list[Callable[[int, int, float], None]] = []
        self.last_error: str | None = None
        self.last_error_at = 0.0  # time.time() of the last failed batch

    def on_commit(self, callback: Callable[[int, int, float], None]) -> None:
        """``callback(requests, deliveries, seconds)`` after each commit (metrics)."""
        self._on_commit.append(callback)

    def start(self) -> None:
        self._closed = False

    async def record(self, deliveries: Sequence[NewDelivery], *,
                     dedup_key: str | None = None) -> Recorded:
        """Record one request's deliveries; returns once committed."""
        if self._closed:
            raise StoreUnavailable("the inbox is closed (hookd is stopping)")
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(list(deliveries), dedup_key, future))
        self._hand_over()
        return await future

    async def record_body(self, delivery: NewDelivery, *, dedup_key: str | None = None,
                          check: SchemaCheck | None = None, policy: str = "off",
                          batch: bool = False) -> Recorded:
        """`record` for a raw body, checked first (raises `payload.Refused`)."""
        return await self.record(examined(delivery, check, policy, batch), dedup_key=dedup_key)

    async def mark_verified(self, subscription_id: str, when: float) -> bool:
        async with transaction(self.pool, "stamping a subscription verified") as conn:
            cur = await conn.execute("UPDATE subscriptions SET verified_at = %s WHERE id = %s",
                                     (when, subscription_id))
        return cur.rowcount == 1

    async def aclose(self) -> None:
        """Commit what is pending, then refuse further records."""
        self._closed = True
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # ------------------------------------------------------------------ batching

    def _hand_over(self) -> None:
        while self._pending and len(self._running) < self.writers:
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            task = asyncio.get_running_loop().create_task(self._write(batch))
            self._running.add(task)
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._hand_over()

    async def _write(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            await self._commit(batch)
        except Exception as e:
            error = e if isinstance(e, StoreUnavailable) else StoreUnavailable(
                f"recording deliveries failed: {type(e).__name__}")
            if not isinstance(e, StoreUnavailable):
                log.exception("inbox: recording a batch failed")
            self.last_error = str(error)
            self.last_error_at = time.time()
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        self.last_error = None
        rows = 0
        for job in batch:
            rows += 0 if job.future.done() else len(job.ids)
            if not job.future.done():
                job.future.set_result(Recorded(job.ids))
        for callback in self._on_commit:
            with contextlib.suppress(Exception):
                callback(len(batch), rows, time.perf_counter() - started)

    async def _commit(self, batch: list[_Job]) -> None:
        now = self.clock()
        for job in batch:
            job.rows = [prepare(d, job.dedup_key) for d in job.deliveries]
        first, repeats = _first_by_key(batch)
        later = {id(job) for job in repeats}
        rows = [row for job in batch if id(job) not in later for row in job.rows]
        columns = list(zip(*rows, strict=True)) if rows else [()] * 10
        keys = list(first)
        async with statement(self.pool, "recording deliveries") as conn:
            r = await (await conn.execute(_RECORD, {
                "now": now, "stale": now - self.dedup_window, "channel": CHANNEL,
                "keys": keys, "originals": [first[k].ids[0] for k in keys],
                "ids": list(columns[0]), "subs": list(columns[1]), "flows": list(columns[2]),
                "received": list(columns[3]), "headers": list(columns[4]),
                "bodies": list(columns[5]), "events": list(columns[6]),
                "dedup": list(columns[7]), "items": list(columns[8]),
                "flags": list(columns[9]),
            })).fetchone()
            taken = set(r[0]) if r else set()
            seen = [k for k in keys if k not in taken]
            originals = {k: first[k].ids[0] for k in taken}
            if seen:  # redeliveries: the ids they were first recorded under
                for key, delivery_id in await (await conn.execute(
                        "SELECT key, delivery_id FROM dedup_keys WHERE key = ANY(%s)",
                        (seen,))).fetchall():
                    originals[key] = delivery_id
        for job in [first[k] for k in seen] + repeats:
            original = originals.get(job.dedup_key or "", job.ids[0])
            job.future.set_result(Recorded([original], duplicate=True))


def _first_by_key(batch: list[_Job]) -> tuple[dict[str, _Job], list[_Job]]:
    """The first job of each dedup key in the batch (it may be recorded) and the later
    ones (duplicates of it, whatever the database says)."""
    first: dict[str, _Job] = {}
    repeats: list[_Job] = []
    for job in batch:
        if job.dedup_key is None or not job.ids:
            continue
        if job.dedup_key in first:
            repeats.append(job)
        else:
            first[job.dedup_key] = job
    return first, repeats

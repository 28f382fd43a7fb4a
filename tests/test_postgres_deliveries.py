"""The PostgreSQL inbox and delivery queue as several replicas use them: group commit,
dedup as a unique key, claims with SKIP LOCKED and leases, per-flow concurrency across
replicas, LISTEN/NOTIFY wake-ups (hookd.store.postgres.inbox, .deliveries, .wakeup)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import pytest

from hookd.store.postgres import connection, schema
from hookd.store.postgres.connection import StoreUnavailable
from hookd.store.postgres.deliveries import _CLAIM, PgDeliveryQueue
from hookd.store.postgres.inbox import PgInbox
from hookd.store.postgres.wakeup import Wakeup
from hookd.store.sqlite.deliveries import NewDelivery

T = TypeVar("T")


def delivery(flow: str = "f", body: bytes = b'{"n": 1}', key: str | None = None) -> NewDelivery:
    return NewDelivery(subscription_id="s1", flow=flow, received_at=time.time(),
                       headers={"x-github-event": "push"}, body=body, event="push",
                       dedup_key=key)


@dataclass
class Replica:
    inbox: PgInbox
    queue: PgDeliveryQueue


@asynccontextmanager
async def replica(url: str, owner: str) -> AsyncIterator[Replica]:
    """What one hookd replica holds: a pool, its inbox and its queue."""
    pool = connection.pool(url, max_size=4)
    await pool.open(wait=True)
    try:
        yield Replica(PgInbox(pool), PgDeliveryQueue(pool, owner=owner))
    finally:
        await pool.close()


def run(url: str, go: Callable[[str], Awaitable[T]]) -> T:
    async def main() -> T:
        async with await connection.connect(url) as conn:
            await schema.migrate(conn)
        return await go(url)

    return asyncio.run(main())


def test_a_record_is_committed_when_it_returns_and_concurrent_ones_share_commits(
        postgres_url: str) -> None:
    async def go(url: str) -> tuple[list[str], list[int]]:
        async with replica(url, "r1") as r:
            batches: list[int] = []
            r.inbox.on_commit(lambda requests, rows, seconds: batches.append(requests))
            results = await asyncio.gather(*(r.inbox.record([delivery(body=b'{"n": %d}' % i)])
                                              for i in range(200)))
        # Read back on a connection of its own: what record() returned is committed.
        async with await connection.connect(url) as conn:
            rows = await (await conn.execute("SELECT id FROM deliveries ORDER BY id")).fetchall()
        assert sorted(i for rec in results for i in rec.ids) == [r[0] for r in rows]
        return [r[0] for r in rows], batches

    ids, batches = run(postgres_url, go)
    assert len(ids) == 200
    assert sum(batches) == 200
    assert len(batches) < 20  # group commit: not one transaction per request


def test_replicas_receiving_the_same_redelivery_record_it_once(postgres_url: str) -> None:
    async def go(url: str) -> tuple[list[bool], set[str], int]:
        async with replica(url, "r1") as a, replica(url, "r2") as b:
            results = await asyncio.gather(
                *(inbox.record([delivery(key="s1:guid-1")], dedup_key="s1:guid-1")
                  for _ in range(5) for inbox in (a.inbox, b.inbox)))
            depth = await a.queue.depth()
        return [r.duplicate for r in results], {i for r in results for i in r.ids}, depth

    duplicates, ids, depth = run(postgres_url, go)
    assert sorted(duplicates) == [False] + [True] * 9
    assert len(ids) == 1  # every duplicate answers with the original's id
    assert depth == 1


def test_a_key_older_than_the_dedup_window_is_a_new_delivery(postgres_url: str) -> None:
    async def go(url: str) -> tuple[bool, bool]:
        async with replica(url, "r1") as r:
            r.inbox.dedup_window = 0.05
            first = await r.inbox.record([delivery(key="k")], dedup_key="k")
            await asyncio.sleep(0.1)
            second = await r.inbox.record([delivery(key="k")], dedup_key="k")
        return first.duplicate, second.duplicate

    assert run(postgres_url, go) == (False, False)


def test_claims_never_hand_one_delivery_to_two_replicas(postgres_url: str) -> None:
    async def go(url: str) -> tuple[list[str], list[str]]:
        async with replica(url, "r1") as a, replica(url, "r2") as b:
            recorded = await asyncio.gather(*(a.inbox.record([delivery()]) for _ in range(60)))
            claimed: list[str] = []
            for _ in range(10):
                batches = await asyncio.gather(*(q.claim(4, lease=30) for q in
                                                 (a.queue, b.queue, a.queue, b.queue)))
                claimed += [d.id for batch in batches for d in batch]
        return sorted(i for r in recorded for i in r.ids), claimed

    recorded, claimed = run(postgres_url, go)
    assert len(claimed) == len(set(claimed)) == 60
    assert sorted(claimed) == recorded


def test_an_expired_lease_makes_the_delivery_claimable_by_another_replica(
        postgres_url: str) -> None:
    async def go(url: str) -> tuple[list[str], list[str], list[str], int]:
        async with replica(url, "dead") as a, replica(url, "alive") as b:
            await a.inbox.record([delivery()])
            [taken] = await a.queue.claim(1, lease=0.5)
            before = [d.id for d in await b.queue.claim(1, lease=30)]
            await asyncio.sleep(0.7)  # the lease is over: replica "dead" renewed nothing
            after = await b.queue.claim(1, lease=30)
            # A renewal keeps it: the alive replica's claim holds past its first lease.
            await b.queue.renew([after[0].id], 30)
        return [taken.id], before, [d.id for d in after], after[0].attempts

    taken, before, after, attempts = run(postgres_url, go)
    assert before == []
    assert after == taken
    assert attempts == 2


def test_recover_frees_at_once_what_this_owners_previous_incarnation_left(
        postgres_url: str) -> None:
    async def go(url: str) -> tuple[int, int]:
        async with replica(url, "replica-a") as a:
            await a.inbox.record([delivery(), delivery()])
            await a.queue.claim(2, lease=300)
        async with replica(url, "replica-a") as again, replica(url, "other") as other:
            await other.queue.claim(0, lease=1)
            freed = await again.queue.recover()
            claimable = len(await other.queue.claim(5, lease=30))
        return freed, claimable

    assert run(postgres_url, go) == (2, 2)


def test_a_flows_concurrency_holds_across_replicas(postgres_url: str) -> None:
    async def go(url: str) -> list[int]:
        async with replica(url, "r1") as a, replica(url, "r2") as b, replica(url, "r3") as c:
            await asyncio.gather(*(a.inbox.record([delivery(flow="one")]) for _ in range(10)))
            running: list[int] = []
            for _ in range(3):
                # Every replica asks for 2 at once; the flow allows 2 over all of them.
                got = await asyncio.gather(*(r.queue.claim(2, flows=["one"], lease=30,
                                                           max_running=2)
                                             for r in (a, b, c)))
                running.append(sum(map(len, got)))
                for d in (d for batch in got for d in batch):
                    await a.queue.finish(d.id, "done")
        return running

    assert run(postgres_url, go) == [2, 2, 2]


def test_a_notify_wakes_an_idle_replica_when_another_records(postgres_url: str) -> None:
    async def go(url: str) -> float:
        woken = asyncio.Event()
        listener = Wakeup(url, woken.set, application_name="hookd-test")
        listener.start()
        try:
            await asyncio.wait_for(listener.connected.wait(), 10)
            async with replica(url, "r2") as other:
                started = time.monotonic()
                await other.inbox.record([delivery()])
                await asyncio.wait_for(woken.wait(), 5)
                return time.monotonic() - started
        finally:
            await listener.aclose()

    assert run(postgres_url, go) < 5


def test_a_database_that_is_down_acknowledges_nothing() -> None:
    async def go() -> None:
        pool = connection.pool("postgresql://hookd@127.0.0.1:1/hookd", max_size=1)
        pool.timeout = 1.0
        await pool.open(wait=False)
        try:
            with pytest.raises(StoreUnavailable):
                await PgInbox(pool).record([delivery()])
        finally:
            await pool.close()

    asyncio.run(go())


def test_a_claim_reads_the_queue_not_the_finished_deliveries_kept_for_retention(
        postgres_url: str) -> None:
    """A claim's cost must not grow with the deliveries kept after they ran (retention
    keeps days of them): it reads the queue through its own index."""
    async def go(url: str) -> int:
        async with replica(url, "a") as r, r.queue.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO deliveries (id, subscription_id, flow, received_at, headers,"
                " body, updated_at) SELECT lpad(i::text, 10, '0'), 's1', 'f', 0, '{}',"
                " convert_to(repeat('x', 7000), 'UTF8'), 0 FROM generate_series(1, 5000) i")
            await conn.execute("UPDATE deliveries SET status = 'done' WHERE id < '0000004990'")
            await conn.execute("ANALYZE deliveries")  # as autovacuum does, soon
            # What the claim's statement reads: its buffers (EXPLAIN ANALYZE, rolled back).
            async with conn.transaction(force_rollback=True):
                plan = await (await conn.execute(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
                    + _CLAIM.format(flows="", room="%(limit)s"),
                    {"owner": "a", "lease": 30, "now": time.time(), "limit": 1},
                )).fetchone()
            assert plan is not None
            top = plan[0][0]["Plan"]
            claimed = await r.queue.claim(1, lease=30)
            assert [d.id for d in claimed] == ["0000004990"]
            return int(top["Shared Hit Blocks"] + top["Shared Read Blocks"])

    read = run(postgres_url, go)
    # Through the primary key (one `queued OR expired` condition) it read ~10,000.
    assert read < 1000, f"the claim read {read} blocks to take one of 11 queued deliveries"

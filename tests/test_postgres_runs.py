"""Run history and subscriptions in PostgreSQL, read from another replica than the one
that wrote them (hookd.store.postgres.runs, .subscriptions)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from hookd.store import errors
from hookd.store.postgres import connection, schema
from hookd.store.postgres.deliveries import PgDeliveryQueue
from hookd.store.postgres.inbox import PgInbox
from hookd.store.postgres.runs import PgRunHistory
from hookd.store.postgres.subscriptions import PgSubscriptions
from hookd.store.sqlite.deliveries import NewDelivery
from hookd.store.sqlite.subscriptions import SubscriptionRow, Update


@asynccontextmanager
async def pool(url: str) -> AsyncIterator[object]:
    p = connection.pool(url, max_size=3)
    await p.open(wait=True)
    try:
        yield p
    finally:
        await p.close()


def run_with(url: str, go):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        async with await connection.connect(url) as conn:
            await schema.migrate(conn)
        async with pool(url) as a, pool(url) as b:
            return await go(a, b)

    return asyncio.run(main())


@pytest.mark.parametrize("claim_notes", [True, False], ids=["as-a-store", "runs-alone"])
def test_a_run_written_on_one_replica_resumes_on_another(postgres_url: str,
                                                        claim_notes: bool) -> None:
    """As a store wires them (the claim's notes shared: a run's row goes with its first
    step's start), and a run history alone (it reads the attempt number itself)."""
    async def go(a, b):  # type: ignore[no-untyped-def]
        inbox, queue_a, queue_b = PgInbox(a), PgDeliveryQueue(a, owner="a"), PgDeliveryQueue(b, owner="b")
        runs_a = PgRunHistory(a, notes=queue_a.notes if claim_notes else None)
        runs_b = PgRunHistory(b, notes=queue_b.notes if claim_notes else None)
        [did] = (await inbox.record([NewDelivery("s", "f", time.time(), {}, b"{}")])).ids
        [d] = await queue_a.claim(1, lease=0.3)
        run = await runs_a.create(d.id, "f", status="running")
        await runs_a.step_started(run.id, "one", 0, "log", 1, {"message": "hi"})
        await runs_a.step_finished(run.id, "one", "succeeded", output={"ok": True})
        await runs_a.step_started(run.id, "two", 1, "http", 1, {"url": "x"})
        # Replica a dies here. Its lease runs out; b claims and sees what a did.
        await asyncio.sleep(0.4)
        [again] = await queue_b.claim(1, lease=30)
        latest = await runs_b.latest_for_delivery(again.id)
        assert latest is not None
        steps = await runs_b.steps(latest.id)
        assert [(s.step_id, s.status) for s in steps] == [("one", "succeeded"), ("two", "running")]
        assert steps[0].output == {"ok": True}
        second = await runs_b.create(again.id, "f", status="running")
        assert second.attempt == 2
        await runs_b.finish(second.id, "succeeded", delivery_id=again.id)
        assert (await queue_a.get(did)).status == "done"  # type: ignore[union-attr]
        listed = await runs_a.list(flow="f")
        assert [r.id for r in listed] == [second.id, run.id]
        assert (await runs_a.get(second.id[:16], steps=False)).id == second.id  # a unique prefix (10 chars can be shared by two runs created in the same few seconds)  # type: ignore[union-attr]
        assert await runs_a.since(0) == {"running": 1, "succeeded": 1}
        # Replay: the finished delivery is queued again; an unknown one is refused.
        assert await runs_a.replay(second.id) == did
        with pytest.raises(errors.Conflict):
            await runs_a.replay(second.id)
        with pytest.raises(errors.NotFound):
            await runs_a.replay("nosuchrun")
        # The replayed delivery's run on a: attempt 3. Replica a dies before that run's
        # first step started: b finds the run without steps (or none: its row had not
        # been sent), numbers its own next, and its run's steps are there for a to read.
        [replayed] = await queue_a.claim(1, lease=0.3)
        third = await runs_a.create(replayed.id, "f", status="running")
        assert third.attempt == 3
        await asyncio.sleep(0.4)
        [again] = await queue_b.claim(1, lease=30)
        latest = await runs_b.latest_for_delivery(again.id)
        assert latest is not None and latest.attempt in (2, 3)
        fourth = await runs_b.create(again.id, "f", status="running")
        assert fourth.attempt == latest.attempt + 1
        await runs_b.step_started(fourth.id, "one", 0, "log", 1, {"message": "hi"})
        await runs_b.step_finished(fourth.id, "one", "succeeded", output={"ok": 1})
        await runs_b.finish(fourth.id, "succeeded", delivery_id=again.id)
        got = await runs_a.get(fourth.id)
        assert got is not None and got.status == "succeeded" and got.attempt == fourth.attempt
        assert [(s.step_id, s.status, s.output) for s in got.steps] == [
            ("one", "succeeded", {"ok": 1})]

    run_with(postgres_url, go)


def test_prune_keeps_unfinished_work(postgres_url: str) -> None:
    async def go(a, b):  # type: ignore[no-untyped-def]
        now = [time.time() - 100 * 86400]
        inbox = PgInbox(a, clock=lambda: now[0])
        queue, runs = PgDeliveryQueue(a, owner="a"), PgRunHistory(a, clock=lambda: now[0])
        old = [NewDelivery("s", "f", now[0], {}, b"{}") for _ in range(3)]
        await inbox.record(old, dedup_key="s:old")
        claimed = await queue.claim(2, lease=30)
        for d in claimed[:1]:
            r = await runs.create(d.id, "f", status="running")
            await runs.finish(r.id, "succeeded", delivery_id=d.id)
        now[0] = time.time()
        pruned = await PgRunHistory(a).prune(max_age=30 * 86400, max_runs=100,
                                             dedup_window=7 * 86400)
        assert pruned == {"runs": 1, "deliveries": 1, "dedup_keys": 1, "replicas": 0}
        assert await queue.depth() == 2  # one running, one queued: kept

    run_with(postgres_url, go)


def test_subscriptions_written_by_the_leader_are_read_by_every_replica(
        postgres_url: str) -> None:
    row = SubscriptionRow(id="sub1", flow="f", fingerprint="fp", connector="github",
                          operation="push", connection="gh", scope=None,
                          parameters={"owner": "o"}, location=None, upstream_id=None,
                          secret="s3cret")

    async def go(a, b):  # type: ignore[no-untyped-def]
        leader, other = PgSubscriptions(a), PgSubscriptions(b)
        await leader.upsert(row)
        await leader.apply_many([Update("set", "sub1", fields={"status": "active",
                                                                "upstream_id": "42"})])
        got = await other.get("sub1")
        assert got is not None and got.status == "active" and got.upstream_id == "42"
        assert got.parameters == {"owner": "o"} and got.secret == "s3cret"
        assert await PgInbox(b).mark_verified("sub1", 123.0)
        assert (await leader.get("sub1")).verified_at == 123.0  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="not settable"):
            await leader.apply_many([Update("remove", "sub1"),
                                     Update("set", "sub1", fields={"secret": "x"})])
        assert [s.id for s in await other.all()] == ["sub1"]  # bad input changed nothing
        await leader.remove("sub1")
        assert await other.all() == []

    run_with(postgres_url, go)

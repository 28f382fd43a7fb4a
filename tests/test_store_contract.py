"""The store interface's contract, one suite run against every backend (SQLite, and
PostgreSQL when the test server is there): what callers may rely on whichever store
hookd.yaml names (hookd.store.interface)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hookd import store as stores
from hookd.config.model import Settings, StoreSetting
from hookd.store import errors
from hookd.store.interface import Store
from hookd.store.records import NewDelivery, SubscriptionRow, Update

T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings naming a fresh store of each backend."""
    base = Settings(public_url="https://hooks.example.net", state_dir=tmp_path / "state")
    if request.param == "sqlite":
        yield base
        return
    url = request.getfixturevalue("postgres_url")
    yield dataclasses.replace(base, store=StoreSetting("postgresql", url))


def with_store(settings: Settings, go: Callable[[Store], Awaitable[T]], *,
               role: Any = "daemon", clock: Callable[[], float] = time.time) -> T:
    """`go(store)` on a store of `settings` opened (and closed) on an event loop of its own."""
    async def main() -> T:
        store = stores.open(settings, role=role, clock=clock)
        await store.start()
        try:
            return await go(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


def delivery(flow: str = "f", n: int = 0, key: str | None = None) -> NewDelivery:
    return NewDelivery(subscription_id="s1", flow=flow, received_at=time.time(),
                       headers={"x-event": "push"}, body=b'{"n": %d}' % n, event="push",
                       dedup_key=key)


def test_a_recorded_delivery_is_claimed_once_and_finished(settings: Settings) -> None:
    async def go(store: Store) -> None:
        recorded = await store.inbox.record([delivery(n=1)])
        [claimed] = await store.deliveries.claim(5, lease=30)
        assert claimed.id == recorded.ids[0] and claimed.json() == {"n": 1}
        assert claimed.headers == {"x-event": "push"} and claimed.attempts == 1
        assert await store.deliveries.claim(5, lease=30) == []  # never twice
        assert await store.deliveries.depth() == 1
        await store.deliveries.finish(claimed.id, "done")
        assert await store.deliveries.depth() == 0
        got = await store.deliveries.get(claimed.id)
        assert got is not None and got.status == "done"

    with_store(settings, go)


def test_a_repeated_delivery_id_is_recorded_once(settings: Settings) -> None:
    async def go(store: Store) -> None:
        first = await store.inbox.record([delivery(key="s1:a")], dedup_key="s1:a")
        again = await store.inbox.record([delivery(key="s1:a")], dedup_key="s1:a")
        other = await store.inbox.record([delivery(key="s1:b")], dedup_key="s1:b")
        assert not first.duplicate and again.duplicate and not other.duplicate
        assert again.ids == first.ids
        assert await store.deliveries.depth() == 2

    with_store(settings, go)


def test_concurrent_requests_are_deduplicated_as_if_one_by_one(settings: Settings) -> None:
    async def go(store: Store) -> None:
        earlier = await store.inbox.record([delivery(key="s1:old")], dedup_key="s1:old")
        # Concurrent requests share group commits (which of two concurrent ones with the
        # same key commits first is the database's call): a key twice, a key recorded
        # before, a request of two deliveries (a batch body split), one without a key.
        twice_a, twice_b, old, split, keyless = await asyncio.gather(
            store.inbox.record([delivery(n=1, key="s1:x")], dedup_key="s1:x"),
            store.inbox.record([delivery(n=2, key="s1:x")], dedup_key="s1:x"),
            store.inbox.record([delivery(n=3, key="s1:old")], dedup_key="s1:old"),
            store.inbox.record([delivery(n=4), delivery(n=5)], dedup_key="s1:split"),
            store.inbox.record([delivery(n=6)]),
        )
        first, repeat = (twice_a, twice_b) if twice_b.duplicate else (twice_b, twice_a)
        assert not first.duplicate and repeat.duplicate and repeat.ids == first.ids
        assert old.duplicate and old.ids == earlier.ids
        assert not split.duplicate and len(split.ids) == 2
        assert not keyless.duplicate and len(keyless.ids) == 1
        claimed = await store.deliveries.claim(10, lease=30)
        n_first = 1 if first is twice_a else 2
        assert sorted(d.json()["n"] for d in claimed) == sorted([0, n_first, 4, 5, 6])
        again = await store.inbox.record([delivery(n=7)], dedup_key="s1:split")
        assert again.duplicate and again.ids == [split.ids[0]]

    with_store(settings, go)


def test_an_expired_lease_makes_a_delivery_claimable_again(settings: Settings) -> None:
    async def go(store: Store) -> None:
        await store.inbox.record([delivery()])
        [first] = await store.deliveries.claim(1, lease=0.2)
        await asyncio.sleep(0.4)
        [again] = await store.deliveries.claim(1, lease=30)
        assert again.id == first.id and again.attempts == 2
        await store.deliveries.renew([again.id], 30)
        assert await store.deliveries.claim(1, lease=30) == []

    with_store(settings, go)


def test_a_flows_concurrency_limits_its_claims(settings: Settings) -> None:
    async def go(store: Store) -> None:
        for n in range(4):
            await store.inbox.record([delivery(flow="one", n=n)])
        first = await store.deliveries.claim(3, flows=["one"], lease=30, max_running=1)
        assert len(first) == 1 or settings.store.kind == "sqlite"  # SQLite: the worker counts
        assert await store.deliveries.queued_flows() == ["one"]

    with_store(settings, go)


def test_a_run_and_its_delivery_finish_together_and_replay_says_why_not(
        settings: Settings) -> None:
    async def go(store: Store) -> None:
        await store.inbox.record([delivery()])
        [d] = await store.deliveries.claim(1, lease=30)
        run = await store.runs.create(d.id, "f", status="running")
        await store.runs.step_started(run.id, "one", 0, "log", 1, {"message": "hi"})
        await store.runs.step_finished(run.id, "one", "succeeded", output={"ok": True})
        await store.runs.finish(run.id, "succeeded", delivery_id=d.id)
        got = await store.runs.get(run.id)
        assert got is not None and got.status == "succeeded"
        assert [(s.step_id, s.status, s.output) for s in got.steps] == [
            ("one", "succeeded", {"ok": True})]
        assert (await store.deliveries.get(d.id)).status == "done"  # type: ignore[union-attr]
        assert [r.id for r in await store.runs.list(flow="f")] == [run.id]
        assert await store.runs.replay(run.id) == d.id
        with pytest.raises(errors.Conflict):
            await store.runs.replay(run.id)  # queued already
        with pytest.raises(errors.NotFound):
            await store.runs.replay("nosuch")
        again = await store.runs.create(d.id, "f")
        assert again.attempt == 2

    with_store(settings, go)


def test_subscriptions_apply_in_one_go_and_refuse_bad_fields(settings: Settings) -> None:
    row = SubscriptionRow(id="sub1", flow="f", fingerprint="fp", connector="github",
                          operation="push", connection=None, scope=None,
                          parameters={"owner": "o"}, location=None, upstream_id=None,
                          secret="s3cret")

    async def go(store: Store) -> None:
        await store.subscriptions.apply_many([
            Update("upsert", "sub1", row=row),
            Update("set", "sub1", fields={"status": "active", "upstream_id": "7"})])
        got = await store.subscriptions.get("sub1")
        assert got is not None and (got.status, got.upstream_id) == ("active", "7")
        assert "s3cret" not in repr(got)
        with pytest.raises(ValueError):
            await store.subscriptions.set("sub1", secret="other")
        assert await store.inbox.mark_verified("sub1", 5.0)
        assert not await store.inbox.mark_verified("nosuch", 5.0)
        await store.subscriptions.remove("sub1")
        assert await store.subscriptions.all() == []

    with_store(settings, go)


def test_the_server_secret_is_made_once_and_leadership_is_held(settings: Settings) -> None:
    async def go(store: Store) -> tuple[bytes, bytes, bool, dict[str, Any]]:
        first = await store.server_secret()
        lead = store.leadership()
        lead.start()
        for _ in range(200):
            if lead.leading:
                break
            await asyncio.sleep(0.05)
        described = await store.describe()
        await lead.aclose()
        return first, await store.server_secret(), lead.leading or True, described

    first, second, _, described = with_store(settings, go)
    assert first == second and len(first) == 32
    assert described["backend"] == settings.store.kind
    # Reopened, it is the same secret.
    assert with_store(settings, lambda s: s.server_secret()) == first


def test_health_is_known_without_waiting(settings: Settings) -> None:
    async def go(store: Store) -> bool:
        return store.health.state().ok

    assert with_store(settings, go)


def test_the_history_summaries_read_what_was_recorded(settings: Settings) -> None:
    """`Store.activity` (the status page's reads) on every backend: the newest first,
    keyset pages, what is new after a cursor, counts and each flow's facts."""
    async def go(store: Store) -> None:
        since = time.time() - 1
        assert await store.activity.cursors() == ("", "")
        ids = [(await store.inbox.record([delivery(flow, n)])).ids[0]
               for n, flow in enumerate(["f", "g", "f"])]
        for did, status in zip(ids, ["succeeded", "failed", "succeeded"], strict=True):
            run = await store.runs.create(did, "f" if did != ids[1] else "g", status="running")
            await store.runs.finish(run.id, status, delivery_id=did)  # type: ignore[arg-type]
        newest = await store.activity.deliveries(limit=2)
        assert [d.id for d in newest] == ids[:0:-1]
        assert [d.id for d in await store.activity.deliveries(before=newest[-1].id)] == ids[:1]
        assert [d.id for d in await store.activity.deliveries(status="failed")] == [ids[1]]
        assert [d.id for d in await store.activity.deliveries_after(ids[0])] == ids[1:]
        runs = await store.activity.runs_after("")
        assert [r.delivery_id for r in runs] == ids
        assert await store.activity.cursors() == (ids[-1], runs[-1].id)
        counts = await store.activity.counts_since(since)
        assert (counts.deliveries, counts.runs) == (3, {"succeeded": 2, "failed": 1})
        facts = await store.activity.flow_facts(["f", "g"], 5)
        assert facts["f"].outcomes == ["succeeded", "succeeded"]
        assert facts["g"].last_delivery is not None and facts["g"].last_delivery.id == ids[1]
        minute = since - since % 60
        assert sum(m.deliveries for m in await store.activity.per_minute(minute, 3)) == 3
        assert await store.activity.body(ids[0]) == b'{"n": 0}'

    with_store(settings, go)

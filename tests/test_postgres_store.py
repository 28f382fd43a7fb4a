"""The PostgreSQL store as replicas hold it: start migrates, every replica gets the same
server secret, a record on one wakes the others, the replicas' list (hookd.store.postgres.store)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from hookd.store.postgres import schema
from hookd.store.postgres.store import PgStore, replica_name
from hookd.store.sqlite.deliveries import NewDelivery


def test_replicas_share_secret_queue_and_wake_each_other(postgres_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        a = PgStore(postgres_url, state_dir=tmp_path / "a")
        b = PgStore(postgres_url, state_dir=tmp_path / "b")
        await asyncio.gather(a.start(), b.start())
        try:
            assert a.name != b.name
            assert await a.server_secret() == await b.server_secret()
            assert a.health.state().ok
            woken = asyncio.Event()
            b.deliveries.on_arrival(woken.set)
            await asyncio.wait_for(b._wakeup.connected.wait(), 10)
            await a.inbox.record([NewDelivery("s", "f", time.time(), {}, b"{}")])
            await asyncio.wait_for(woken.wait(), 5)
            [claimed] = await b.deliveries.claim(5, lease=30)
            assert claimed.flow == "f"
            listed = {r.name for r in await a.replicas()}
            assert listed == {a.name, b.name}
            assert "password" not in a.location
        finally:
            await a.aclose()
        assert [r.name for r in await b.replicas()] == [b.name]  # a left cleanly
        await b.aclose()

    asyncio.run(go())


def test_a_replica_keeps_its_name_across_restarts(tmp_path: Path) -> None:
    first = replica_name(tmp_path)
    assert replica_name(tmp_path) == first
    assert (tmp_path / "replica.id").stat().st_mode & 0o077 == 0
    assert replica_name(tmp_path / "other") != first


def test_an_older_replica_refuses_to_start_on_a_newer_schema(postgres_url: str) -> None:
    async def go() -> None:
        newer = (*schema.MIGRATIONS, schema.Migration(schema.LATEST + 1, "SELECT 1"))
        store = PgStore(postgres_url, role="cli")
        await store.start()
        await store.aclose()
        from hookd.store.postgres import connection

        async with await connection.connect(postgres_url) as conn:
            await schema.migrate(conn, newer)
        with pytest.raises(schema.SchemaTooNew, match="upgrade hookd on this replica"):
            await PgStore(postgres_url).start()

    asyncio.run(go())


def test_a_step_result_kept_for_the_next_write_is_committed_when_the_store_closes(
        postgres_url: str, tmp_path: Path) -> None:
    """A run stopped between two steps (a drain that timed out): the finished step's
    result, kept to ride on the run's next write, is committed by `aclose`, so the run
    resumes after that step instead of repeating it."""
    async def go() -> None:
        a = PgStore(postgres_url, state_dir=tmp_path / "a")
        await a.start()
        try:
            await a.inbox.record([NewDelivery("s", "f", time.time(), {}, b"{}")])
            [d] = await a.deliveries.claim(1, lease=30)
            run = await a.runs.create(d.id, "f", status="running")
            await a.runs.step_started(run.id, "one", 0, "log", 1, {"message": "hi"})
            await a.runs.step_finished(run.id, "one", "succeeded", output={"ok": True})
        finally:
            await a.aclose()
        b = PgStore(postgres_url, state_dir=tmp_path / "b")
        await b.start()
        try:
            steps = await b.runs.steps(run.id)
            assert [(s.step_id, s.status, s.output) for s in steps] == [
                ("one", "succeeded", {"ok": True})]
        finally:
            await b.aclose()

    asyncio.run(go())

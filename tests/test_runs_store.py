"""hookd.store.sqlite.runs: the run history as `hookd runs` and the API read it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from hookd import store as stores
from hookd.store import errors
from hookd.store.sqlite import db as dbmod
from hookd.store.sqlite.batch import LoopBatchingDb
from hookd.store.sqlite.deliveries import DeliveryStore
from hookd.store.sqlite.runs import RunStore, encode, replay, steps_done
from tests.pipeline_util import record


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return dbmod.open_db(tmp_path / "state")


def test_run_lifecycle_and_steps(conn: sqlite3.Connection) -> None:
    clock = Clock()
    store = RunStore(conn, clock=clock)
    run = store.create("d1", "flow")
    assert (run.status, run.attempt, run.started_at) == ("queued", 1, None)
    clock.now += 1
    store.start(run.id)
    store.step_started(run.id, "a", 0, "http", 1, {"url": "u"})
    store.step_retrying(run.id, "a", "attempt 1 failed: boom", {"status": 500})
    mid = store.get(run.id)
    assert mid is not None and mid.steps[0].status == "running"
    assert mid.steps[0].error == "attempt 1 failed: boom"
    store.step_started(run.id, "a", 0, "http", 2, {"url": "u"})
    clock.now += 0.5
    store.step_finished(run.id, "a", "succeeded", output={"status": 200})
    store.step_finished(run.id, "b", "skipped", index=1, kind="log")
    clock.now += 1
    store.finish(run.id, "succeeded")
    got = store.get(run.id)
    assert got is not None
    assert (got.status, got.duration) == ("succeeded", 1.5)
    a, b = got.steps
    assert (a.step_id, a.attempt, a.status, a.duration, a.output, a.error) == (
        "a", 2, "succeeded", 0.5, {"status": 200}, None)
    assert (b.step_id, b.status, b.kind) == ("b", "skipped", "log")
    assert set(steps_done(got.steps)) == {"a", "b"}
    doc = got.to_json()
    assert doc["delivery"] == "d1" and [s["id"] for s in doc["steps"]] == ["a", "b"]
    json.dumps(doc)  # serialisable as is


def test_attempts_count_per_delivery_and_latest(conn: sqlite3.Connection) -> None:
    store = RunStore(conn)
    first = store.create("d1", "f")
    store.finish(first.id, "failed", "boom")
    second = store.create("d1", "f", status="running")
    assert second.attempt == 2 and second.started_at is not None
    latest = store.latest_for_delivery("d1")
    assert latest is not None and latest.id == second.id
    assert store.latest_for_delivery("other") is None


def test_list_filters_newest_first_and_pages(conn: sqlite3.Connection) -> None:
    store = RunStore(conn)
    ids = []
    for i in range(5):
        r = store.create(f"d{i}", "a" if i % 2 else "b")
        store.finish(r.id, "failed" if i == 3 else "succeeded")
        ids.append(r.id)
    assert [r.id for r in store.list()] == ids[::-1]
    assert [r.id for r in store.list(flow="a")] == [ids[3], ids[1]]
    assert [r.id for r in store.list(status="failed")] == [ids[3]]
    assert [r.id for r in store.list(limit=2)] == [ids[4], ids[3]]
    assert [r.id for r in store.list(before=ids[2])] == [ids[1], ids[0]]
    assert store.counts()["succeeded"] == 4


def test_get_by_unique_prefix(conn: sqlite3.Connection) -> None:
    store = RunStore(conn)
    run = store.create("d", "f")
    got = store.get(run.id[:12])
    assert got is not None and got.id == run.id
    assert store.get("zz") is None


def test_large_output_is_capped_with_a_preview(conn: sqlite3.Connection) -> None:
    store = RunStore(conn, output_cap=1000)
    run = store.create("d", "f")
    store.step_started(run.id, "s", 0, "run", 1, {})
    store.step_finished(run.id, "s", "succeeded", output={"stdout": "x" * 5000})
    got = store.get(run.id)
    assert got is not None
    out = got.steps[0].output
    assert out["truncated"] is True and out["size"] > 5000 and out["preview"].startswith('{"stdout"')
    assert len(encode({"stdout": "x" * 5000}, 1000)) <= 1000


def test_prune_by_age_and_count_keeps_unfinished(conn: sqlite3.Connection) -> None:
    clock = Clock()
    store = RunStore(conn, clock=clock)
    old = store.create("d0", "f")
    store.finish(old.id, "succeeded")
    running_old = store.create("d1", "f", status="running")
    clock.now += 100
    recent = []
    for i in range(4):
        r = store.create(f"n{i}", "f")
        store.finish(r.id, "succeeded")
        recent.append(r.id)
    assert store.prune(max_age=50) == 1  # the old finished one
    assert store.prune(max_runs=2) == 2  # the two oldest finished beyond the newest two
    left = {r.id for r in store.list()}
    assert left == {running_old.id, recent[2], recent[3]}


def test_retention_prunes_old_finished_runs_and_deliveries(tmp_path: Path) -> None:
    """The daemon's retention job (docs/daemon.md: finished runs older than max_age or
    beyond max_runs, and finished deliveries older than max_age), through the store."""
    import asyncio

    state = tmp_path / "state"
    ids = record(state, "f", [{}, {}, {}])
    conn = dbmod.open_db(state)
    deliveries, runs = DeliveryStore(conn), RunStore(conn)
    for d in deliveries.claim(2):
        deliveries.finish(d.id, "done")
    conn.execute("UPDATE deliveries SET received_at = 0")  # all three are old
    unfinished = runs.create(ids[0], "f", status="running")
    old = runs.create(ids[1], "f")
    runs.finish(old.id, "succeeded")
    conn.execute("UPDATE runs SET created_at = 0")
    store = stores.open(state, role="cli")
    try:
        pruned = asyncio.run(store.runs.prune(max_age=3600, max_runs=100))
    finally:
        store.close()
    assert pruned == {"runs": 1, "deliveries": 2}
    assert deliveries.get(ids[2]) is not None  # still queued: never pruned
    assert runs.get(unfinished.id) is not None and runs.get(old.id) is None


def test_replay_by_run_or_delivery(tmp_path: Path) -> None:
    state = tmp_path / "state"
    [did] = record(state, "f", [{}])
    conn = dbmod.open_db(state)
    deliveries = DeliveryStore(conn)
    with pytest.raises(errors.Conflict):
        replay(conn, did)  # still queued: it will run anyway
    [d] = deliveries.claim(1)
    run = RunStore(conn).create(did, "f")
    deliveries.finish(d.id, "failed", "boom")
    assert replay(conn, run.id, kind="run") == did
    assert deliveries.get(did).status == "queued"  # type: ignore[union-attr]
    deliveries.claim(1)
    deliveries.finish(did, "done")
    assert replay(conn, did, kind="delivery") == did
    with pytest.raises(errors.NotFound):
        replay(conn, "nope")
    with pytest.raises(errors.NotFound):
        replay(conn, did, kind="run")  # a delivery id is not a run id
    conn.execute("DELETE FROM deliveries")
    with pytest.raises(errors.Gone):
        replay(conn, run.id)


def test_batched_writes_commit_together_and_isolate_a_failure(tmp_path: Path) -> None:
    import asyncio

    state = tmp_path / "state"
    batch = LoopBatchingDb(lambda: dbmod.open_db(state))

    async def go() -> list[object]:
        conn = batch.start()
        store = RunStore(conn)

        def boom() -> None:
            raise ValueError("bad call")

        results = await asyncio.gather(
            batch.call(store.create, "d1", "f"),
            batch.call(boom),
            batch.call(store.create, "d2", "f"),
            return_exceptions=True,
        )
        batch.close()
        return list(results)

    first, failed, second = asyncio.run(go())
    assert isinstance(failed, ValueError)
    listed = RunStore(dbmod.open_db(state)).list()
    assert {r.delivery_id for r in listed} == {"d1", "d2"}

"""The delivery store: record, dedup lookup, claim/finish, requeue after a crash, prune."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hookd.store.sqlite.db import DB_NAME, connect, migrate, open_db
from hookd.store.sqlite.deliveries import MIGRATIONS, Delivery, DeliveryStore, NewDelivery, new_id


def _new(n: int = 0, *, flow: str = "f", dedup: str | None = None, at: float = 1000.0) -> NewDelivery:
    return NewDelivery(
        subscription_id="sub1",
        flow=flow,
        received_at=at + n,
        headers={"x-github-event": "push"},
        body=b'{"n": %d}' % n,
        event="push",
        dedup_key=dedup,
    )


@pytest.fixture
def store(tmp_path: Path) -> DeliveryStore:
    return DeliveryStore(open_db(tmp_path))


def test_record_many_returns_ids_and_rows_round_trip(store: DeliveryStore) -> None:
    ids = store.record_many([_new(0), _new(1, dedup="sub1:abc")])
    assert len(ids) == 2 and ids == sorted(ids)
    d = store.get(ids[1])
    assert d is not None
    assert d.status == "queued" and d.attempts == 0
    assert d.body == b'{"n": 1}' and d.json() == {"n": 1}
    assert d.headers == {"x-github-event": "push"}
    assert d.event == "push" and d.delivery_id == "abc"
    assert store.get("nope") is None


def test_any_header_value_and_flags_round_trip(store: DeliveryStore) -> None:
    # Header values arrive decoded as latin-1; a lone surrogate cannot come from the
    # server but must not make recording fail either.
    headers = {"x-name": "café ✓", "x-odd": "\ud800", "x-quote": 'a"b\\c'}
    new = NewDelivery("sub1", "f", 1000.0, headers, b"{}", flags=("schema-warning",))
    (delivery_id,) = store.record_many([new])
    d = store.get(delivery_id)
    assert d is not None
    assert dict(d.headers) == headers and d.flags == ("schema-warning",)


def test_ids_sort_in_generation_order_within_one_millisecond() -> None:
    ids = [new_id(5.0) for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000


def test_record_many_is_one_transaction(store: DeliveryStore) -> None:
    bad = NewDelivery("sub1", "f", 1.0, {}, None)  # type: ignore[arg-type]  # NOT NULL body
    with pytest.raises(sqlite3.IntegrityError):
        store.record_many([_new(0), bad])
    assert store.depth() == 0


def test_rows_are_durable_across_connections(tmp_path: Path) -> None:
    ids = DeliveryStore(open_db(tmp_path)).record_many([_new(0)])
    assert DeliveryStore(open_db(tmp_path)).get(ids[0]) is not None


def test_claim_oldest_first_and_finish(store: DeliveryStore) -> None:
    ids = store.record_many([_new(i) for i in range(5)])
    first = store.claim(2)
    assert [d.id for d in first] == ids[:2]
    assert all(d.status == "running" and d.attempts == 1 for d in first)
    assert [d.id for d in store.claim(10)] == ids[2:]
    assert store.claim(1) == []
    store.finish(ids[0], "done")
    store.finish(ids[1], "failed", error="step deploy: exit 1")
    assert store.get(ids[1]).error == "step deploy: exit 1"  # type: ignore[union-attr]
    assert store.counts() == {"queued": 0, "running": 3, "done": 1, "failed": 1}
    assert store.depth() == 3
    with pytest.raises(ValueError):
        store.finish(ids[2], "running")
    store.finish_many(ids[2:], "done")
    assert store.counts() == {"queued": 0, "running": 0, "done": 4, "failed": 1}


def test_claim_by_flow(store: DeliveryStore) -> None:
    store.record_many([_new(0, flow="a"), _new(1, flow="b")])
    assert [d.flow for d in store.claim(5, flows=["b"])] == ["b"]
    assert store.claim(5, flows=[]) == []


def test_concurrent_claims_never_hand_out_a_delivery_twice(tmp_path: Path) -> None:
    DeliveryStore(open_db(tmp_path)).record_many([_new(i) for i in range(200)])
    got: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        s = DeliveryStore(open_db(tmp_path))
        while batch := s.claim(3):
            with lock:
                got.extend(d.id for d in batch)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 200 and len(set(got)) == 200


def test_requeue_running_after_crash(store: DeliveryStore) -> None:
    ids = store.record_many([_new(i) for i in range(3)])
    store.claim(2)
    store.finish(ids[0], "done")
    assert store.requeue_running() == 1
    again = store.claim(5)
    assert [d.id for d in again] == ids[1:]
    assert again[0].attempts == 2  # the attempt the crash interrupted counts


def test_seen_within_window(store: DeliveryStore) -> None:
    ids = store.record_many([_new(0, dedup="sub1:x", at=1000.0), _new(1, dedup="sub1:x", at=1000.0)])
    assert store.seen("sub1:x", since=900.0) == ids[0]
    assert store.seen("sub1:x", since=2000.0) is None
    assert store.seen("sub1:y", since=0.0) is None


def test_prune_keeps_unfinished(store: DeliveryStore) -> None:
    ids = store.record_many([_new(i, at=100.0) for i in range(3)])
    store.claim(1)
    store.finish(ids[0], "done")
    assert store.prune(before=10_000.0) == 1
    assert store.get(ids[0]) is None and store.depth() == 2


def test_requeue_for_replay(store: DeliveryStore) -> None:
    (i,) = store.record_many([_new(0)])
    assert store.requeue(i) is False  # still queued
    store.claim(1)
    store.finish(i, "failed", "boom")
    assert store.requeue(i) is True
    assert store.get(i).status == "queued"  # type: ignore[union-attr]
    assert [d.id for d in store.recent(flow="f")] == [i]


def test_deliveries_by_the_upstreams_own_delivery_id(store: DeliveryStore) -> None:
    a, b, _ = store.record_many([_new(0, dedup="sub1:72d3162e-cc78"), _new(1, dedup="sub2:72d3162e-cc78"),
                                 _new(2, dedup="sub1:x72d3162e-cc78")])
    assert store.with_upstream_id("72d3162e-cc78") == [a, b]
    assert store.with_upstream_id("cc78") == [] and store.with_upstream_id("%") == []


def _plans(store: DeliveryStore, call: Callable[[], object]) -> list[str]:
    """The query plan of every statement `call` makes the store run (as SQLite chose it)."""
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    try:
        call()
    finally:
        store.conn.set_trace_callback(None)
    plans = []
    for sql in statements:
        if sql.split()[0].upper() in ("BEGIN", "COMMIT", "ROLLBACK"):
            continue
        rows = store.conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
        plans.append(" | ".join(r[3] for r in rows))
    return plans


def _history(store: DeliveryStore, n: int = 300) -> None:
    """`n` finished deliveries of flow f (with big bodies, as GitHub's are) and one queued."""
    store.record_many([
        NewDelivery("sub1", "f", 1000.0 + i, {}, b"x" * 7000) for i in range(n)
    ])
    store.claim(n)
    store.finish_many([d.id for d in store.recent(n, flow="f")], "done")
    store.record_many([_new(n, flow="f")])


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "after-ANALYZE"])
def test_claim_seeks_the_queued_rows_whatever_the_history(
    store: DeliveryStore, analyzed: bool
) -> None:
    # A claim for one flow (the worker's per-flow concurrency path) once walked the
    # (flow, id) index over every finished row of the flow: 30-50 ms per claim after a
    # few thousand deliveries. It must use the partial index of queued rows, also after
    # SQLite has gathered statistics.
    _history(store)
    if analyzed:
        store.conn.execute("ANALYZE")
    claimed: list[Delivery] = []
    *expiry, one_flow = _plans(store, lambda: claimed.extend(store.claim(1, flows=["f"])))
    assert "deliveries_queued" in one_flow, one_flow
    # The look for expired leases (at most every EXPIRY_CHECK_INTERVAL) seeks the running
    # rows, whatever the history.
    assert all("deliveries_status" in p and "SCAN" not in p for p in expiry), expiry
    assert [d.body for d in claimed] == [b'{"n": 300}']  # the queued one, not history
    store.finish(claimed[0].id, "queued")
    *_, any_flow = _plans(store, lambda: claimed.extend(store.claim(1)))
    assert "SCAN" not in any_flow and "deliveries_flow" not in any_flow, any_flow
    assert claimed[1].id == claimed[0].id


def test_seen_and_depth_use_indexes(store: DeliveryStore) -> None:
    _history(store, 50)
    for call in (lambda: store.seen("sub1:x", since=0.0), store.depth,
                 lambda: store.seen_many(["sub1:x", "sub1:y"], since=0.0)):
        (plan,) = _plans(store, call)
        assert "USING" in plan and "SCAN" not in plan, plan


def test_existing_database_gets_the_queued_index(tmp_path: Path) -> None:
    # A state file written before migration 2 (only version 1 applied) is upgraded on open.
    conn = connect(tmp_path / DB_NAME)
    migrate(conn, [m for m in MIGRATIONS if m.version == 1])
    DeliveryStore(conn).record_many([_new(0)])
    conn.close()
    store = DeliveryStore(open_db(tmp_path))
    names = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "deliveries_queued" in names
    assert [d.flow for d in store.claim(1, flows=["f"])] == ["f"]


def test_add_flag_adds_once_and_says_when_there_is_no_such_delivery(tmp_path: Path) -> None:
    store = DeliveryStore(open_db(tmp_path))
    [did] = store.record_many([NewDelivery("sub1", "f", 1000.0, {}, b"{}")])
    assert store.add_flag(did, "schema-warning") and store.add_flag(did, "schema-warning")
    assert store.get(did).flags == ("schema-warning",)  # type: ignore[union-attr]
    assert store.add_flag("nope", "schema-warning") is False


def _open_when_released(state_dir: str, barrier: Any) -> None:
    barrier.wait()
    open_db(Path(state_dir)).close()


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    """The daemon and its worker child start together on a fresh state directory: each
    migration is applied once, by whichever takes the write lock first (the others used to
    fail: "duplicate column name: lease_until")."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for attempt in range(5):
        state = tmp_path / f"state{attempt}"
        barrier = context.Barrier(4)
        procs = [context.Process(target=_open_when_released, args=(str(state), barrier))
                 for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 4

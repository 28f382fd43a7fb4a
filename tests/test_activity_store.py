"""The status page's summaries of the history (`hookd.store.sqlite.activity`) on a real file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hookd.store.sqlite import db
from hookd.store.sqlite.activity import ActivityStore, id_at
from hookd.store.sqlite.deliveries import DeliveryStore, NewDelivery
from hookd.store.sqlite.runs import RunStore

# Ids come from one process-wide generator that never goes back in time, so each test
# gets times later than every earlier test's (and than now): ids then follow the times.
_NEXT = [1_800_000_000.0]


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return db.open_db(tmp_path)


@pytest.fixture
def start() -> float:
    """A minute boundary later than any id made so far."""
    _NEXT[0] += 100_000
    return _NEXT[0]


def record(conn: sqlite3.Connection, flow: str, at: float, status: str = "succeeded") -> str:
    (did,) = DeliveryStore(conn).record_many(
        [NewDelivery("s", flow, at, {}, b'{"a": 1}', event="push")])
    runs = RunStore(conn, clock=lambda: at)
    run = runs.create(did, flow, status="running")
    runs.finish(run.id, status)  # type: ignore[arg-type]
    return did


def test_per_minute_counts_land_in_their_minute(conn: sqlite3.Connection, start: float) -> None:
    record(conn, "a", start + 0.5)
    record(conn, "a", start + 59.9, "failed")
    record(conn, "a", start + 60.0, "failed")
    record(conn, "a", start - 1)  # before the window
    minutes = ActivityStore(conn).per_minute(start, 3)
    assert [(m.start, m.deliveries, m.failed_runs) for m in minutes] == [
        (start, 2, 1), (start + 60, 1, 1), (start + 120, 0, 0)]


def test_counts_since_and_each_flows_facts(conn: sqlite3.Connection, start: float) -> None:
    for i, status in enumerate(["succeeded", "failed", "succeeded", "cancelled"]):
        record(conn, "a", start + i, status)
    record(conn, "b", start + 10)
    activity = ActivityStore(conn)
    counts = activity.counts_since(start + 1)
    assert counts.deliveries == 4
    assert counts.runs == {"failed": 1, "succeeded": 2, "cancelled": 1}
    assert activity.outcomes("a", 3) == ["cancelled", "succeeded", "failed"]
    facts = activity.flow_facts(["a", "b", "none"], 2)
    assert facts["a"].outcomes == ["cancelled", "succeeded"]
    assert facts["a"].last_run is not None and facts["a"].last_run.status == "cancelled"
    assert facts["b"].last_delivery is not None and facts["b"].last_delivery.flow == "b"
    assert facts["none"].last_run is None and facts["none"].outcomes == []


def test_delivery_lists_filter_and_page_back(conn: sqlite3.Connection, start: float) -> None:
    ids = [record(conn, "a" if i % 2 else "b", start + i) for i in range(10)]
    DeliveryStore(conn).finish(ids[3], "failed")
    activity = ActivityStore(conn)
    first = activity.deliveries(limit=4)
    assert [d.id for d in first] == ids[::-1][:4]
    assert [d.id for d in activity.deliveries(before=first[-1].id, limit=4)] == ids[::-1][4:8]
    assert {d.flow for d in activity.deliveries(flow="a")} == {"a"}
    assert [d.id for d in activity.deliveries(status="failed")] == [ids[3]]
    assert [d.id for d in activity.deliveries(since=start + 7, until=start + 9)] == [
        ids[8], ids[7]]
    assert first[0].size == len(b'{"a": 1}') and first[0].event == "push"
    assert [d.id for d in activity.deliveries_after(ids[7])] == ids[8:]
    runs = activity.runs_after("")
    assert len(runs) == 10 and runs[0].delivery_id == ids[0]
    assert activity.cursors() == (ids[-1], runs[-1].id)
    assert activity.body(ids[0]) == b'{"a": 1}' and activity.body("nope") is None


def test_ids_begin_with_their_time(start: float) -> None:
    assert id_at(start) < id_at(start + 0.001)
    assert len(id_at(start)) == 12

"""The status page's summaries of the history (`hookd.store.interface.Activity`,
``store.activity``) on both backends: a real SQLite file, and a fresh PostgreSQL database
when the test server is there (tests/pgserver.py; skipped without it, failing under
``CI=true``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from hookd.config.model import Settings, StoreSetting
from hookd.store.activity import id_at
from hookd.store.interface import Store
from hookd.store.records import NewDelivery
from tests.test_store_contract import with_store

T = TypeVar("T")

# Ids come from one process-wide generator that never goes back in time, so each test
# gets times later than every earlier test's (and than now): ids then follow the times.
_NEXT = [1_800_000_000.0]


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    base = Settings(public_url="https://hooks.example.net", state_dir=tmp_path / "state")
    if request.param == "sqlite":
        return base
    return dataclasses.replace(
        base, store=StoreSetting("postgresql", request.getfixturevalue("postgres_url")))


@pytest.fixture
def start() -> float:
    """A minute boundary later than any id made so far."""
    _NEXT[0] += 100_000
    return _NEXT[0]


class History:
    """A store whose clock the test sets: what it records happens at the given time."""

    def __init__(self, store: Store, clock: list[float]) -> None:
        self.store, self.clock = store, clock
        self.activity = store.activity

    async def record(self, flow: str, at: float, status: str = "succeeded") -> str:
        self.clock[0] = at
        (did,) = (await self.store.inbox.record(
            [NewDelivery("s", flow, at, {}, b'{"a": 1}', event="push")])).ids
        run = await self.store.runs.create(did, flow, status="running")
        await self.store.runs.finish(run.id, status, delivery_id=did)  # type: ignore[arg-type]
        return did


def with_history(settings: Settings, go: Callable[[History], Awaitable[T]]) -> T:
    clock = [0.0]
    return with_store(settings, lambda store: go(History(store, clock)),
                      clock=lambda: clock[0])


def test_per_minute_counts_land_in_their_minute(settings: Settings, start: float) -> None:
    async def go(h: History) -> None:
        await h.record("a", start + 0.5)
        await h.record("a", start + 59.9, "failed")
        await h.record("a", start + 60.0, "failed")
        minutes = await h.activity.per_minute(start, 3)
        assert [(m.start, m.deliveries, m.failed_runs) for m in minutes] == [
            (start, 2, 1), (start + 60, 1, 1), (start + 120, 0, 0)]
        # A minute earlier: one more minute, and the same counts in the next ones.
        earlier = await h.activity.per_minute(start - 60, 2)
        assert [(m.deliveries, m.failed_runs) for m in earlier] == [(0, 0), (2, 1)]

    with_history(settings, go)


def test_counts_since_and_each_flows_facts(settings: Settings, start: float) -> None:
    async def go(h: History) -> None:
        for i, status in enumerate(["succeeded", "failed", "succeeded", "cancelled"]):
            await h.record("a", start + i, status)
        await h.record("b", start + 10)
        counts = await h.activity.counts_since(start + 1)
        assert counts.deliveries == 4
        assert counts.runs == {"failed": 1, "succeeded": 2, "cancelled": 1}
        facts = await h.activity.flow_facts(["a", "b", "none"], 3)
        assert facts["a"].outcomes == ["cancelled", "succeeded", "failed"]
        assert facts["a"].last_run is not None and facts["a"].last_run.status == "cancelled"
        assert facts["a"].last_delivery is not None
        assert facts["a"].last_delivery.received_at == start + 3
        assert facts["b"].last_delivery is not None and facts["b"].last_delivery.flow == "b"
        assert facts["none"].last_run is None and facts["none"].outcomes == []
        assert facts["none"].last_delivery is None

    with_history(settings, go)


def test_delivery_lists_filter_and_page_back(settings: Settings, start: float) -> None:
    async def go(h: History) -> None:
        ids = [await h.record("a" if i % 2 else "b", start + i) for i in range(10)]
        await h.store.deliveries.finish(ids[3], "failed", "it broke")
        activity = h.activity
        first = await activity.deliveries(limit=4)
        assert [d.id for d in first] == ids[::-1][:4]
        assert [d.id for d in await activity.deliveries(before=first[-1].id, limit=4)] == \
            ids[::-1][4:8]
        assert {d.flow for d in await activity.deliveries(flow="a")} == {"a"}
        failed = await activity.deliveries(status="failed")
        assert [(d.id, d.error) for d in failed] == [(ids[3], "it broke")]
        assert await activity.deliveries(status="failed", flow="b") == []
        assert [d.id for d in await activity.deliveries(since=start + 7, until=start + 9)] == [
            ids[8], ids[7]]
        assert [d.id for d in await activity.deliveries(flow="b", status="done",
                                                        before=ids[8], limit=2)] == [
            ids[6], ids[4]]
        assert first[0].size == len(b'{"a": 1}') and first[0].event == "push"
        assert first[0].received_at == start + 9 and first[0].status == "done"
        assert [d.id for d in await activity.deliveries_after(ids[7])] == ids[8:]
        runs = await activity.runs_after("")
        assert len(runs) == 10 and runs[0].delivery_id == ids[0]
        assert [r.delivery_id for r in await activity.runs_after(runs[7].id, limit=1)] == [
            ids[8]]
        assert await activity.cursors() == (ids[-1], runs[-1].id)
        assert await activity.body(ids[0]) == b'{"a": 1}'
        assert await activity.body("nope") is None

    with_history(settings, go)


def test_an_empty_history_has_no_cursors(settings: Settings, start: float) -> None:
    async def go(h: History) -> None:
        assert await h.activity.cursors() == ("", "")
        assert (await h.activity.counts_since(0)).deliveries == 0
        assert await h.activity.deliveries() == []

    with_history(settings, go)


def test_ids_begin_with_their_time(start: float) -> None:
    assert id_at(start) < id_at(start + 0.001)
    assert len(id_at(start)) == 12

"""What the status page reads from the store, as async Protocols shaped like the store
interface's parts (``subscriptions``, ``runs``, ``deliveries``) plus ``activity`` (the
summaries only this page needs: `hookd.store.sqlite.activity`).

The page never holds a connection: it awaits these methods, and the store decides where
they run. `SqliteReads` provides them over today's SQLite file (each call on a thread
with a short-lived connection of its own, as the runs API does); a store object with the
same parts (the store interface) fits as it is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from starlette.concurrency import run_in_threadpool

from hookd.store.activity import Counts, DeliverySummary, FlowFacts, Minute
from hookd.store.sqlite import db as dbmod
from hookd.store.sqlite.activity import ActivityStore
from hookd.store.sqlite.deliveries import Delivery, DeliveryStore
from hookd.store.sqlite.runs import Run, RunStore, replay
from hookd.store.sqlite.subscriptions import SubscriptionRow, SubscriptionStore

T = TypeVar("T")


class Subscriptions(Protocol):
    async def get(self, sub_id: str) -> SubscriptionRow | None: ...

    async def all(self) -> list[SubscriptionRow]: ...


class Runs(Protocol):
    async def get(self, run_id: str, *, steps: bool = True) -> Run | None: ...

    async def list(self, *, flow: str | None = None, status: str | None = None,
                   delivery_id: str | None = None, limit: int = 50,
                   before: str | None = None) -> list[Run]: ...

    async def latest_for_delivery(self, delivery_id: str) -> Run | None: ...

    async def replay(self, ident: str, *, kind: str | None = None) -> str:
        """Queue the delivery of run (or delivery) `ident` again; its id. Raises
        `hookd.store.sqlite.runs.ReplayError` (with an HTTP-like status)."""


class Deliveries(Protocol):
    async def get(self, delivery_id: str) -> Delivery | None: ...

    async def depth(self) -> int: ...


class Activity(Protocol):
    async def counts_since(self, since: float) -> Counts: ...

    async def per_minute(self, start: float, minutes: int) -> list[Minute]: ...

    async def deliveries(self, *, flow: str | None = None, status: str | None = None,
                         since: float | None = None, until: float | None = None,
                         before: str | None = None, limit: int = 50) -> list[DeliverySummary]: ...

    async def deliveries_after(self, after: str, limit: int = 100) -> list[DeliverySummary]: ...

    async def runs_after(self, after: str, limit: int = 100) -> list[Run]: ...

    async def flow_facts(self, flows: list[str], rate_of: int) -> dict[str, FlowFacts]: ...

    async def cursors(self) -> tuple[str, str]: ...

    async def body(self, delivery_id: str) -> bytes | None: ...


class Reads(Protocol):
    subscriptions: Subscriptions
    runs: Runs
    deliveries: Deliveries
    activity: Activity


# --------------------------------------------------------------------------- SQLite


class _Calls:
    def __init__(self, db_path: Callable[[], Path]) -> None:
        self._db_path = db_path

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def work() -> T:
            conn = dbmod.connect(self._db_path())
            try:
                return fn(conn)
            finally:
                conn.close()

        return await run_in_threadpool(work)


class _Subscriptions(_Calls):
    async def get(self, sub_id: str) -> SubscriptionRow | None:
        return await self.call(lambda c: SubscriptionStore(c).get(sub_id))

    async def all(self) -> list[SubscriptionRow]:
        return await self.call(lambda c: SubscriptionStore(c).all())


class _Runs(_Calls):
    async def get(self, run_id: str, *, steps: bool = True) -> Run | None:
        return await self.call(lambda c: RunStore(c).get(run_id, steps=steps))

    async def list(self, *, flow: str | None = None, status: str | None = None,
                   delivery_id: str | None = None, limit: int = 50,
                   before: str | None = None) -> list[Run]:
        return await self.call(lambda c: RunStore(c).list(
            flow=flow, status=status, delivery_id=delivery_id, limit=limit, before=before))

    async def latest_for_delivery(self, delivery_id: str) -> Run | None:
        return await self.call(lambda c: RunStore(c).latest_for_delivery(delivery_id))

    async def replay(self, ident: str, *, kind: str | None = None) -> str:
        return await self.call(lambda c: replay(c, ident, kind=kind))


class _Deliveries(_Calls):
    async def get(self, delivery_id: str) -> Delivery | None:
        return await self.call(lambda c: DeliveryStore(c).get(delivery_id))

    async def depth(self) -> int:
        return await self.call(lambda c: DeliveryStore(c).depth())


class _Activity(_Calls):
    async def counts_since(self, since: float) -> Counts:
        return await self.call(lambda c: ActivityStore(c).counts_since(since))

    async def per_minute(self, start: float, minutes: int) -> list[Minute]:
        return await self.call(lambda c: ActivityStore(c).per_minute(start, minutes))

    async def deliveries(self, *, flow: str | None = None, status: str | None = None,
                         since: float | None = None, until: float | None = None,
                         before: str | None = None, limit: int = 50) -> list[DeliverySummary]:
        return await self.call(lambda c: ActivityStore(c).deliveries(
            flow=flow, status=status, since=since, until=until, before=before, limit=limit))

    async def deliveries_after(self, after: str, limit: int = 100) -> list[DeliverySummary]:
        return await self.call(lambda c: ActivityStore(c).deliveries_after(after, limit))

    async def runs_after(self, after: str, limit: int = 100) -> list[Run]:
        return await self.call(lambda c: ActivityStore(c).runs_after(after, limit))

    async def flow_facts(self, flows: list[str], rate_of: int) -> dict[str, FlowFacts]:
        return await self.call(lambda c: ActivityStore(c).flow_facts(flows, rate_of))

    async def cursors(self) -> tuple[str, str]:
        return await self.call(lambda c: ActivityStore(c).cursors())

    async def body(self, delivery_id: str) -> bytes | None:
        return await self.call(lambda c: ActivityStore(c).body(delivery_id))


class SqliteReads:
    """`Reads` over the SQLite file at `db_path()` (a callable: a reload may move it)."""

    def __init__(self, db_path: Callable[[], Path]) -> None:
        self.subscriptions: Subscriptions = _Subscriptions(db_path)
        self.runs: Runs = _Runs(db_path)
        self.deliveries: Deliveries = _Deliveries(db_path)
        self.activity: Activity = _Activity(db_path)

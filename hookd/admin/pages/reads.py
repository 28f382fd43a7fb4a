"""What the status page reads: the store's parts (`hookd.store.interface`) and the history's
summaries only this page needs (`Activity`).

The page never holds a connection: it awaits these methods, and the store decides where
they run. `Activity` is not (yet) a part of the store interface: the SQLite store has it
(``store.activity``, `hookd.store.sqlite.store.SqliteActivity`); the PostgreSQL store has
no such part yet, so there the page says it needs the SQLite store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hookd.store import interface
from hookd.store.activity import Counts, DeliverySummary, FlowFacts, Minute
from hookd.store.records import Run


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


@dataclass(frozen=True)
class Reads:
    """The parts of the store the page reads, and its summaries."""

    subscriptions: interface.Subscriptions
    runs: interface.RunHistory
    deliveries: interface.DeliveryQueue
    activity: Activity

    @classmethod
    def of(cls, store: interface.Store, activity: Activity) -> Reads:
        return cls(store.subscriptions, store.runs, store.deliveries, activity)

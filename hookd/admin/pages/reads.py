"""What the status page reads: the store's parts (`hookd.store.interface`), among them the
history's summaries only this page needs (`hookd.store.interface.Activity`, which both
backends have: ``store.activity``).

The page never holds a connection: it awaits these methods, and the store decides where
they run.
"""

from __future__ import annotations

from dataclasses import dataclass

from hookd.store import interface


@dataclass(frozen=True)
class Reads:
    """The parts of the store the page reads, and its summaries."""

    subscriptions: interface.Subscriptions
    runs: interface.RunHistory
    deliveries: interface.DeliveryQueue
    activity: interface.Activity

    @classmethod
    def of(cls, store: interface.Store) -> Reads:
        return cls(store.subscriptions, store.runs, store.deliveries, store.activity)

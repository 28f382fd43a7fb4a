"""The records of the history's summaries (what the status page shows), the same for every
backend: `hookd.store.sqlite.activity` returns them today.
"""

from __future__ import annotations

from dataclasses import dataclass

from hookd.store.records import Run


@dataclass(frozen=True)
class DeliverySummary:
    """A delivery without its headers and body (a list row)."""

    id: str
    flow: str
    subscription_id: str
    received_at: float
    event: str | None
    status: str
    attempts: int
    size: int  # bytes of body
    error: str | None


@dataclass(frozen=True)
class Minute:
    start: float  # unix time of the minute's first second
    deliveries: int
    failed_runs: int


@dataclass(frozen=True)
class Counts:
    deliveries: int
    runs: dict[str, int]  # status → count (statuses with none left out)


@dataclass(frozen=True)
class FlowFacts:
    """One flow's newest delivery and run, and its last finished runs' statuses."""

    last_delivery: DeliverySummary | None
    last_run: Run | None
    outcomes: list[str]  # newest first

"""The records of the history's summaries (what the status page shows, through
`hookd.store.interface.Activity`), and what both backends' queries share: the columns of
a delivery summary, the row → record step, and `id_at`, which turns a time into an id
bound so that a time range is a seek on the primary key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hookd.store.records import Run

# The columns a `DeliverySummary` is made of, in `summary`'s order (the same SQL on SQLite
# and PostgreSQL: `length` of a blob / bytea is its size in bytes).
SUMMARY_COLUMNS = ("id, flow, subscription_id, received_at, event, status, attempts,"
                   " length(body) AS size, error")


def id_at(ts: float) -> str:
    """The smallest id created at `ts` or later: delivery and run ids begin with 12 hex
    digits of their creation time in ms (`hookd.store.records.new_id`), never earlier.

    >>> id_at(1.5)
    '0000000005dc'
    """
    return f"{int(ts * 1000):012x}"


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


def summary(r: Sequence[Any]) -> DeliverySummary:
    """A `DeliverySummary` from a row of `SUMMARY_COLUMNS` (either backend's row)."""
    return DeliverySummary(r[0], r[1], r[2], float(r[3]), r[4], r[5], int(r[6]), int(r[7]),
                           r[8])


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


def delivery_filter(*, flow: str | None, status: str | None, since: float | None,
                    until: float | None, before: str | None,
                    mark: str) -> tuple[str, list[object]]:
    """The WHERE clause (``""`` for none) and its arguments of `Activity.deliveries`'s
    filters, with `mark` the driver's placeholder (``?`` or ``%s``).

    >>> delivery_filter(flow="a", status=None, since=1.5, until=None, before="x", mark="?")
    ('WHERE flow = ? AND id >= ? AND received_at >= ? AND id < ?', ['a', '0000000005dc', 1.5, 'x'])
    """
    clauses: list[str] = []
    args: list[object] = []
    if flow:
        clauses.append(f"flow = {mark}")
        args.append(flow)
    if status:
        clauses.append(f"status = {mark}")
        args.append(status)
    if since is not None:
        # The id bound lets the primary key seek; received_at makes it exact.
        clauses.append(f"id >= {mark} AND received_at >= {mark}")
        args.extend((id_at(since), since))
    if until is not None:
        clauses.append(f"received_at < {mark}")
        args.append(until)
    if before:
        clauses.append(f"id < {mark}")
        args.append(before)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args


def by_minute(start: float, count: int, deliveries: dict[int, int],
            failed: dict[int, int]) -> list[Minute]:
    """`count` minutes from `start`, from per-bucket counts (bucket i: minute i)."""
    return [Minute(start + i * 60, int(deliveries.get(i, 0)), int(failed.get(i, 0)))
            for i in range(count)]

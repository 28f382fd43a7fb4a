"""Store: read-only summaries of the history for the status page (counts, per-minute
activity, filtered delivery lists, what is new since a cursor), over SQLite: the
`hookd.store.interface.Activity` part (``store.activity``, `SqliteActivity` runs these
off the event loop). The records, the summary's columns and `id_at` are
`hookd.store.activity`'s, shared with `hookd.store.postgres.activity`.

These are the reads no other part needs, kept here so that only the store knows the
tables. Every query is a seek on an index whatever the history's size:

- time ranges become id ranges: delivery and run ids start with their creation time in
  hex milliseconds (`hookd.store.records.new_id`), never earlier, as the
  generator only moves forward; so "since T" is ``id >= id_at(T)`` on the primary key or
  on ``(status, id)`` (with the time column where it must be exact);
- lists are keyset-paginated (``id < before``), newest first;
- per-flow facts read the ``(flow, id)`` indexes with ``LIMIT``;
- the per-minute counts are grouped by SQLite over covering indexes.
"""

from __future__ import annotations

import sqlite3

from hookd.store.activity import (
    SUMMARY_COLUMNS,
    Counts,
    DeliverySummary,
    FlowFacts,
    Minute,
    by_minute,
    delivery_filter,
    id_at,
    summary,
)
from hookd.store.sqlite.runs import _RUN_COLUMNS, FINISHED, RUN_STATUSES, Run, _run

__all__ = ["ActivityStore", "id_at"]


class ActivityStore:
    """Summaries over one SQLite connection (reads only)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def counts_since(self, since: float) -> Counts:
        """Deliveries and runs (by status) created since `since`."""
        bound = id_at(since)
        runs = {}
        for status in RUN_STATUSES:  # one seek per status on (status, id)
            (n,) = self.conn.execute("SELECT count(*) FROM runs WHERE status = ? AND id >= ?",
                                     (status, bound)).fetchone()
            if n:
                runs[status] = int(n)
        (deliveries,) = self.conn.execute("SELECT count(*) FROM deliveries WHERE id >= ?",
                                          (bound,)).fetchone()
        return Counts(int(deliveries), runs)

    def per_minute(self, start: float, minutes: int) -> list[Minute]:
        """Deliveries received and failed runs created in each minute from `start`."""
        deliveries = dict(self.conn.execute(
            "SELECT CAST((received_at - ?) / 60 AS INTEGER) AS b, count(*) FROM deliveries"
            " WHERE received_at >= ? GROUP BY b", (start, start)).fetchall())
        failed = dict(self.conn.execute(
            "SELECT CAST((created_at - ?) / 60 AS INTEGER) AS b, count(*) FROM runs"
            " WHERE status = 'failed' AND id >= ? GROUP BY b", (start, id_at(start))).fetchall())
        return by_minute(start, minutes, deliveries, failed)

    def deliveries(self, *, flow: str | None = None, status: str | None = None,
                   since: float | None = None, until: float | None = None,
                   before: str | None = None, limit: int = 50) -> list[DeliverySummary]:
        """Newest first; `before` (a delivery id) pages further back."""
        where, args = delivery_filter(flow=flow, status=status, since=since, until=until,
                                      before=before, mark="?")
        rows = self.conn.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM deliveries {where} ORDER BY id DESC LIMIT ?",
            (*args, max(0, limit))).fetchall()
        return [summary(r) for r in rows]

    def deliveries_after(self, after: str, limit: int = 100) -> list[DeliverySummary]:
        """Deliveries recorded after the one with id `after`, oldest first."""
        rows = self.conn.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM deliveries WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit)).fetchall()
        return [summary(r) for r in rows]

    def runs_after(self, after: str, limit: int = 100) -> list[Run]:
        """Runs created after the one with id `after`, oldest first, without steps."""
        rows = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit)).fetchall()
        return [_run(r) for r in rows]

    def outcomes(self, flow: str, limit: int) -> list[str]:
        """The statuses of `flow`'s last `limit` finished runs, newest first."""
        marks = ",".join("?" * len(FINISHED))
        return [s for (s,) in self.conn.execute(
            f"SELECT status FROM runs WHERE flow = ? AND status IN ({marks})"
            " ORDER BY id DESC LIMIT ?", (flow, *FINISHED, limit))]

    def flow_facts(self, flows: list[str], rate_of: int) -> dict[str, FlowFacts]:
        """`FlowFacts` of each flow, in one call (three seeks per flow on its indexes)."""
        out = {}
        for flow in flows:
            newest = self.deliveries(flow=flow, limit=1)
            last = self.conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE flow = ? ORDER BY id DESC LIMIT 1",
                (flow,)).fetchone()
            out[flow] = FlowFacts(newest[0] if newest else None,
                                  _run(last) if last is not None else None,
                                  self.outcomes(flow, rate_of))
        return out

    def cursors(self) -> tuple[str, str]:
        """The newest delivery and run ids ("" when there is none)."""
        (d,) = self.conn.execute("SELECT max(id) FROM deliveries").fetchone()
        (r,) = self.conn.execute("SELECT max(id) FROM runs").fetchone()
        return d or "", r or ""

    def body(self, delivery_id: str) -> bytes | None:
        r = self.conn.execute("SELECT body FROM deliveries WHERE id = ?",
                              (delivery_id,)).fetchone()
        return bytes(r[0]) if r is not None else None

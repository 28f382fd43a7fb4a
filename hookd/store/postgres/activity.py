"""The history's summaries for the status page on PostgreSQL: the
`hookd.store.interface.Activity` part (``store.activity``), with the semantics of
`hookd.store.sqlite.activity` (the records, the summary's columns, the filters and
`id_at` are `hookd.store.activity`'s, shared by both).

Every read is a seek on an index whatever the history's size (100,000 runs and more):

- "since T" is ``id >= id_at(T)``: ids begin with their creation time, so a time range
  is a range of the primary key, or of ``(status, id)``;
- lists are keyset paginated (``id < before``) newest first, ``ORDER BY id DESC LIMIT``;
  with a flow on ``deliveries_flow (flow, id)``, with a status on that status's partial
  index (``deliveries_failed``, ``deliveries_claimable``, ``deliveries_leased``; done
  deliveries are most rows, the primary key finds them at once);
- the per-minute counts read ``deliveries_received`` and ``runs_failed`` (failed runs'
  ids with their ``created_at``) as index-only scans;
- each flow's facts are three ``LIMIT`` seeks on ``(flow, id)``, all flows in one
  transaction.

The indexes the history needed beyond the others are migration 4
(`hookd.store.postgres.schema`; why partial, and the plans with 100,000 runs:
docs/adr/0011-pg-status-page-indexes.md).
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

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
from hookd.store.postgres.connection import Conn
from hookd.store.postgres.deliveries import transaction
from hookd.store.postgres.runs import RUN_COLUMNS, row_run
from hookd.store.records import FINISHED, RUN_STATUSES, Run


class PgActivity:
    """`hookd.store.interface.Activity` on PostgreSQL (reads only, each one transaction)."""

    def __init__(self, pool: AsyncConnectionPool[Conn]) -> None:
        self.pool = pool

    async def counts_since(self, since: float) -> Counts:
        bound = id_at(since)
        async with transaction(self.pool, "counting the history") as conn:
            # One index-only count per status on runs_status (status, id).
            rows = await (await conn.execute(
                "SELECT s, (SELECT count(*) FROM runs WHERE status = s AND id >= %s)"
                " FROM unnest(%s::text[]) AS s", (bound, list(RUN_STATUSES)))).fetchall()
            d = await (await conn.execute("SELECT count(*) FROM deliveries WHERE id >= %s",
                                          (bound,))).fetchone()
        return Counts(int(d[0]) if d else 0, {str(s): int(n) for s, n in rows if n})

    async def per_minute(self, start: float, minutes: int) -> list[Minute]:
        async with transaction(self.pool, "counting the history by minute") as conn:
            deliveries = await (await conn.execute(
                "SELECT floor((received_at - %s) / 60)::int AS b, count(*) FROM deliveries"
                " WHERE received_at >= %s GROUP BY b", (start, start))).fetchall()
            failed = await (await conn.execute(
                "SELECT floor((created_at - %s) / 60)::int AS b, count(*) FROM runs"
                " WHERE status = 'failed' AND id >= %s GROUP BY b",
                (start, id_at(start)))).fetchall()
        return by_minute(start, minutes, {int(b): int(n) for b, n in deliveries},
                         {int(b): int(n) for b, n in failed})

    async def deliveries(self, *, flow: str | None = None, status: str | None = None,
                         since: float | None = None, until: float | None = None,
                         before: str | None = None, limit: int = 50) -> list[DeliverySummary]:
        where, args = delivery_filter(flow=flow, status=status, since=since, until=until,
                                      before=before, mark="%s")
        async with transaction(self.pool, "listing deliveries") as conn:
            return await _summaries(conn, f"{where} ORDER BY id DESC LIMIT %s",
                                    (*args, max(0, limit)))

    async def deliveries_after(self, after: str, limit: int = 100) -> list[DeliverySummary]:
        async with transaction(self.pool, "listing new deliveries") as conn:
            return await _summaries(conn, "WHERE id > %s ORDER BY id LIMIT %s", (after, limit))

    async def runs_after(self, after: str, limit: int = 100) -> list[Run]:
        async with transaction(self.pool, "listing new runs") as conn:
            rows = await (await conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE id > %s ORDER BY id LIMIT %s",
                (after, limit))).fetchall()
        return [row_run(r) for r in rows]

    async def flow_facts(self, flows: list[str], rate_of: int) -> dict[str, FlowFacts]:
        out = {}
        async with transaction(self.pool, "reading each flow's history") as conn:
            for flow in flows:
                newest = await _summaries(conn, "WHERE flow = %s ORDER BY id DESC LIMIT 1",
                                          (flow,))
                last = await (await conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE flow = %s ORDER BY id DESC LIMIT 1",
                    (flow,))).fetchone()
                outcomes = await (await conn.execute(
                    "SELECT status FROM runs WHERE flow = %s AND status = ANY(%s)"
                    " ORDER BY id DESC LIMIT %s", (flow, list(FINISHED), rate_of))).fetchall()
                out[flow] = FlowFacts(newest[0] if newest else None,
                                      row_run(last) if last is not None else None,
                                      [str(s) for (s,) in outcomes])
        return out

    async def cursors(self) -> tuple[str, str]:
        async with transaction(self.pool, "reading the newest ids") as conn:
            r = await (await conn.execute(
                "SELECT (SELECT max(id) FROM deliveries), (SELECT max(id) FROM runs)"
            )).fetchone()
        return (r[0] or "", r[1] or "") if r else ("", "")

    async def body(self, delivery_id: str) -> bytes | None:
        async with transaction(self.pool, "reading a delivery's body") as conn:
            r = await (await conn.execute("SELECT body FROM deliveries WHERE id = %s",
                                          (delivery_id,))).fetchone()
        return bytes(r[0]) if r is not None else None


async def _summaries(conn: Conn, rest: str, args: tuple[object, ...]) -> list[DeliverySummary]:
    rows = await (await conn.execute(
        f"SELECT {SUMMARY_COLUMNS} FROM deliveries {rest}", args)).fetchall()
    return [summary(r) for r in rows]

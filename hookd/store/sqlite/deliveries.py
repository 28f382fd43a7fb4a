"""The durable inbox: every notification hookd answered 2xx for, until it has run.

The callback server records deliveries here (through `hookd.store.sqlite.inbox`, which batches many
requests into one transaction) *before* it answers, and the worker takes them out with
`claim` (with a lease, renewed while it runs) and reports with `finish`. Because the
row is committed first, a delivery acknowledged to the upstream survives a crash;
`requeue_running` at start puts back the ones that were being processed when the process
died, and a claim whose lease expired (its worker could not write its outcome) is
claimable again, so each runs at least once.

Ids are time-ordered (``<ms timestamp hex><sequence hex><random hex>``) so that sorting
by id is sorting by arrival, and `claim` hands out the oldest first.

Statuses: ``queued`` → ``running`` → ``done`` | ``failed`` (or back to ``queued`` when
the worker wants another attempt later).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from hookd.store.records import (
    FINAL_STATUSES,
    FLAG_SCHEMA_WARNING,
    Delivery,
    DeliveryStatus,
    NewDelivery,
    new_id,
)
from hookd.store.sqlite.db import Migration, immediate_transaction, where_equal

Status = DeliveryStatus
__all__ = ["FINAL_STATUSES", "FLAG_SCHEMA_WARNING", "Delivery", "DeliveryStore", "NewDelivery",
           "new_id", "prepare"]

MIGRATIONS: list[Migration] = [
    Migration(
        "deliveries",
        1,
        """
        CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            subscription_id TEXT NOT NULL,
            flow TEXT NOT NULL,
            received_at REAL NOT NULL,
            headers TEXT NOT NULL,
            body BLOB NOT NULL,
            event TEXT,
            dedup_key TEXT,
            item INTEGER,
            status TEXT NOT NULL DEFAULT 'queued',
            attempts INTEGER NOT NULL DEFAULT 0,
            flags TEXT NOT NULL DEFAULT '[]',
            error TEXT,
            updated_at REAL NOT NULL
        );
        CREATE INDEX deliveries_status ON deliveries (status, id);
        CREATE INDEX deliveries_dedup ON deliveries (dedup_key, received_at)
            WHERE dedup_key IS NOT NULL;
        CREATE INDEX deliveries_received ON deliveries (received_at);
        CREATE INDEX deliveries_flow ON deliveries (flow, id)
        """,
    ),
    # `claim(flows=[one])` (the worker's per-flow concurrency path) made the planner walk
    # deliveries_flow over every finished row of the flow, reading past their bodies:
    # 0.5 ms per claim became 30-50 ms after a few thousand deliveries. A partial index
    # holds only the queued rows (few, and short-lived), so the claim is a seek whatever
    # the history; it also makes the worker's ``DISTINCT flow … WHERE status = 'queued'``
    # covering.
    Migration(
        "deliveries",
        2,
        """
        CREATE INDEX deliveries_queued ON deliveries (flow, id) WHERE status = 'queued'
        """,
    ),
    # Leases (issue 16 item 10): a claim is ``running`` until `lease_until`; a worker that
    # cannot write its outcome (disk full) or dies stops renewing it, and the delivery is
    # claimable again once it expired, instead of staying ``running`` until a restart.
    Migration(
        "deliveries",
        3,
        """
        ALTER TABLE deliveries ADD COLUMN lease_until REAL
        """,
    ),
]

DEFAULT_LEASE = 60.0  # seconds a claim lasts unless the claimer says otherwise
# Seconds between two looks for expired leases by one connection: the look is cheap (the
# status index holds few running rows) but a claim runs many times a second.
EXPIRY_CHECK_INTERVAL = 0.25


_COLUMNS = (
    "id, subscription_id, flow, received_at, headers, body, event, dedup_key, item,"
    " status, attempts, flags, error, updated_at"
)


# id, subscription_id, flow, received_at, headers (JSON), body, event, dedup_key, item, flags
PreparedRow = tuple[str, str, str, float, str, bytes, str | None, str | None, int | None, str]
_ROW_PLACEHOLDERS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0)"
_ROWS_PER_INSERT = 500  # 11 variables each: well under SQLite's 32766


def prepare(d: NewDelivery, dedup_key: str | None) -> PreparedRow:
    """The row for `d`, with a fresh id, recorded under `dedup_key` (the inbox passes the
    request's key rather than copying `d` to set it; `insert` passes ``d.dedup_key``)."""
    return (
        new_id(d.received_at),
        d.subscription_id,
        d.flow,
        d.received_at,
        _headers_json(d.headers),
        d.body,
        d.event,
        dedup_key,
        d.item,
        json.dumps(list(d.flags)) if d.flags else "[]",
    )


def _headers_json(headers: Mapping[str, str]) -> str:
    """The headers as a JSON object. orjson takes ~0.5 µs where `json.dumps` takes ~7 µs,
    and this runs once per delivery in the inbox's writer thread; `json` remains for what
    orjson refuses (a lone surrogate), and `_row` reads either back with `json.loads`."""
    try:
        return orjson.dumps(dict(headers)).decode()
    except TypeError:  # orjson.JSONEncodeError subclasses TypeError
        return json.dumps(dict(headers), separators=(",", ":"))


def _row(r: sqlite3.Row) -> Delivery:
    return Delivery(
        id=r["id"],
        subscription_id=r["subscription_id"],
        flow=r["flow"],
        received_at=r["received_at"],
        headers=json.loads(r["headers"]),
        body=bytes(r["body"]),
        event=r["event"],
        dedup_key=r["dedup_key"],
        item=r["item"],
        status=r["status"],
        attempts=r["attempts"],
        flags=tuple(json.loads(r["flags"])),
        error=r["error"],
        updated_at=r["updated_at"],
    )


class DeliveryStore:
    """Deliveries over one SQLite connection (autocommit mode, as `hookd.store.sqlite.db` opens it).

    Each method is one transaction. A connection must not be shared between threads
    while a method runs; the inbox writer and the worker each open their own.
    """

    def __init__(self, conn: sqlite3.Connection, *, clock: Any = time.time) -> None:
        self.conn = conn
        self._clock = clock
        self._expiry_checked = 0.0

    # ------------------------------------------------------------------ writing

    def record_many(self, deliveries: Sequence[NewDelivery]) -> list[str]:
        """Insert all `deliveries` in one transaction; returns their ids in order.

        When this returns, the rows are committed (``synchronous=FULL`` makes that
        survive power loss).
        """
        if not deliveries:
            return []
        with immediate_transaction(self.conn):
            return self.insert(deliveries)

    def insert(self, deliveries: Sequence[NewDelivery]) -> list[str]:
        """Insert without managing a transaction (the caller's, e.g. the inbox writer's)."""
        rows = [prepare(d, d.dedup_key) for d in deliveries]
        self.insert_prepared(rows)
        return [r[0] for r in rows]

    def insert_prepared(self, rows: Sequence[PreparedRow]) -> None:
        """Insert rows made by `prepare`, several per statement, in the caller's transaction.

        Multi-row INSERTs rather than `executemany`: each SQLite step releases and
        re-takes the GIL, and the inbox writer wants as few of those as possible while
        the event loop is busy.
        """
        now = self._clock()
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start:start + _ROWS_PER_INSERT]
            values = ",".join([_ROW_PLACEHOLDERS] * len(chunk))
            args: list[object] = []
            for row in chunk:
                args.extend(row)
                args.append(now)
            self.conn.execute(
                "INSERT INTO deliveries (id, subscription_id, flow, received_at, headers, body,"
                f" event, dedup_key, item, flags, updated_at, status, attempts) VALUES {values}",
                args,
            )

    def claim(self, limit: int = 1, *, flows: Sequence[str] | None = None,
              lease: float = DEFAULT_LEASE) -> list[Delivery]:
        """Move up to `limit` claimable deliveries to running until ``now + lease``, oldest
        first, and return them.

        Atomic: two workers (or processes) never claim the same delivery. `flows`
        restricts the claim to those flows (e.g. to respect per-flow concurrency). Running
        deliveries whose lease expired are put back in the queue first (`expire`).
        """
        if limit <= 0:
            return []
        where = "status = 'queued'"
        args: list[object] = []
        if flows is not None:
            if not flows:
                return []
            where += f" AND flow IN ({','.join('?' * len(flows))})"
            args.extend(flows)
        now = self._clock()
        with immediate_transaction(self.conn):
            if now - self._expiry_checked >= EXPIRY_CHECK_INTERVAL:
                self._expiry_checked = now
                self.expire(now)
            rows = self.conn.execute(
                f"UPDATE deliveries SET status = 'running', attempts = attempts + 1,"
                f" updated_at = ?, lease_until = ? WHERE id IN (SELECT id FROM deliveries"
                f" WHERE {where} ORDER BY id LIMIT ?) RETURNING {_COLUMNS}",
                (now, now + lease, *args, limit),
            ).fetchall()
        return sorted((_row(r) for r in rows), key=lambda d: d.id)

    def expire(self, now: float) -> int:
        """Running deliveries whose lease ended go back to queued (in the caller's
        transaction); a missing lease (a row claimed before leases existed) has ended."""
        cur = self.conn.execute(
            "UPDATE deliveries SET status = 'queued', lease_until = NULL, updated_at = ?"
            " WHERE status = 'running' AND (lease_until IS NULL OR lease_until < ?)",
            (now, now),
        )
        return max(cur.rowcount, 0)

    def renew(self, delivery_ids: Sequence[str], lease: float = DEFAULT_LEASE) -> None:
        """Extend the leases of running deliveries (one statement per 500)."""
        until = self._clock() + lease
        with immediate_transaction(self.conn):
            for start in range(0, len(delivery_ids), 500):
                chunk = list(delivery_ids[start:start + 500])
                self.conn.execute(
                    f"UPDATE deliveries SET lease_until = ? WHERE status = 'running'"
                    f" AND id IN ({','.join('?' * len(chunk))})",
                    (until, *chunk),
                )

    def queued_flows(self) -> list[str]:
        """The flows with queued deliveries (covered by the deliveries_queued index)."""
        rows = self.conn.execute(
            "SELECT DISTINCT flow FROM deliveries WHERE status = 'queued'").fetchall()
        return [r[0] for r in rows]

    def finish(self, delivery_id: str, status: Status, error: str | None = None) -> None:
        """Record the outcome of a claimed delivery: done, failed, or queued (try again)."""
        if status not in ("done", "failed", "queued"):
            raise ValueError(f"finish: status must be done, failed or queued, not {status!r}")
        with immediate_transaction(self.conn):
            self.conn.execute(
                "UPDATE deliveries SET status = ?, error = ?, updated_at = ?, lease_until = NULL"
                " WHERE id = ?",
                (status, error, self._clock(), delivery_id),
            )

    def add_flag(self, delivery_id: str, flag: str) -> bool:
        """Add `flag` to a delivery's flags (once); False when there is no such delivery."""
        with immediate_transaction(self.conn):
            row = self.conn.execute("SELECT flags FROM deliveries WHERE id = ?",
                                    (delivery_id,)).fetchone()
            if row is None:
                return False
            flags = list(json.loads(row[0] or "[]"))
            if flag not in flags:
                flags.append(flag)
                self.conn.execute("UPDATE deliveries SET flags = ? WHERE id = ?",
                                  (json.dumps(flags), delivery_id))
        return True

    def finish_many(self, delivery_ids: Sequence[str], status: Status, error: str | None = None) -> None:
        """`finish` for several deliveries in one transaction (one fsync)."""
        if status not in ("done", "failed", "queued"):
            raise ValueError(f"finish: status must be done, failed or queued, not {status!r}")
        now = self._clock()
        with immediate_transaction(self.conn):
            self.conn.executemany(
                "UPDATE deliveries SET status = ?, error = ?, updated_at = ?, lease_until = NULL"
                " WHERE id = ?",
                [(status, error, now, i) for i in delivery_ids],
            )

    def requeue_running(self) -> int:
        """At start: deliveries left running by a dead process go back to queued."""
        with immediate_transaction(self.conn):
            cur = self.conn.execute(
                "UPDATE deliveries SET status = 'queued', updated_at = ?, lease_until = NULL"
                " WHERE status = 'running'",
                (self._clock(),),
            )
        return cur.rowcount

    def requeue(self, delivery_id: str) -> bool:
        """Put a finished delivery back in the queue (for `hookd replay`)."""
        with immediate_transaction(self.conn):
            cur = self.conn.execute(
                "UPDATE deliveries SET status = 'queued', error = NULL, updated_at = ?"
                " WHERE id = ? AND status IN ('done', 'failed')",
                (self._clock(), delivery_id),
            )
        return cur.rowcount == 1

    def prune(self, before: float) -> int:
        """Delete finished deliveries received before `before`; returns how many."""
        with immediate_transaction(self.conn):
            cur = self.conn.execute(
                "DELETE FROM deliveries WHERE received_at < ? AND status IN ('done', 'failed')",
                (before,),
            )
        return cur.rowcount

    # ------------------------------------------------------------------ reading

    def get(self, delivery_id: str) -> Delivery | None:
        r = self.conn.execute(
            f"SELECT {_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
        return _row(r) if r is not None else None

    def seen(self, dedup_key: str, since: float) -> str | None:
        """The id of the first delivery recorded with `dedup_key` at or after `since`."""
        r = self.conn.execute(
            "SELECT id FROM deliveries WHERE dedup_key = ? AND received_at >= ?"
            " ORDER BY id LIMIT 1",
            (dedup_key, since),
        ).fetchone()
        return r[0] if r is not None else None

    def with_upstream_id(self, upstream_id: str) -> list[str]:
        """Ids of the deliveries an upstream sent under its own delivery id (the
        ``X-GitHub-Delivery`` a user finds in GitHub's list), oldest first: the id a
        user has at hand for `hookd replay`. A scan of the dedup index; for commands."""
        suffix = ":" + upstream_id
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM deliveries WHERE dedup_key IS NOT NULL"
            " AND substr(dedup_key, -?) = ? ORDER BY id", (len(suffix), suffix))]

    def seen_many(self, dedup_keys: Sequence[str], since: float) -> dict[str, str]:
        """`seen` for several keys in one statement: key → first delivery id."""
        out: dict[str, str] = {}
        for start in range(0, len(dedup_keys), 500):
            chunk = list(dedup_keys[start:start + 500])
            marks = ",".join("?" * len(chunk))
            for key, first in self.conn.execute(
                f"SELECT dedup_key, min(id) FROM deliveries WHERE dedup_key IN ({marks})"
                " AND received_at >= ? GROUP BY dedup_key",
                (*chunk, since),
            ):
                out[key] = first
        return out

    def depth(self) -> int:
        """Deliveries not finished yet (queued or running)."""
        r = self.conn.execute(
            "SELECT count(*) FROM deliveries WHERE status IN ('queued', 'running')"
        ).fetchone()
        return int(r[0])

    def counts(self) -> dict[str, int]:
        """Number of deliveries by status (all four keys present)."""
        out = dict.fromkeys(("queued", "running", "done", "failed"), 0)
        for status, n in self.conn.execute(
            "SELECT status, count(*) FROM deliveries GROUP BY status"
        ):
            out[status] = n
        return out

    def recent(
        self, limit: int = 50, *, flow: str | None = None, status: Status | None = None
    ) -> list[Delivery]:
        """Newest first, optionally for one flow and/or status."""
        where, args = where_equal((("flow", flow), ("status", status)))
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM deliveries {where} ORDER BY id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_row(r) for r in rows]

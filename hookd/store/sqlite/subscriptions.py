"""Store: the subscriptions hookd created upstream — the reconciler's memory.

A row is written *before* the upstream create (status ``pending``), so a crash between the
upstream's 201 and our bookkeeping leaves a trace that the next pass resolves (adopting the
hook it finds upstream via the list operation). Rows leave the table only when the hook is
known to be gone upstream.

Statuses:
  ``pending``   about to be created (or the create's outcome is unknown after a crash)
  ``active``    created upstream; `location` and/or `upstream_id` say how to delete it
  ``failed``    the last create attempt failed (`last_error` says why)
  ``deleting``  a delete is in progress
  ``orphaned``  hookd cannot delete it (no Location, no delete operation): reported

`secret` (the per-subscription signing secret) is never shown by `hookd subscriptions`;
`SubscriptionRow.__repr__` omits it.

The callback server reads this table (`get`, `all`) and stamps `verified_at` on a ping.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from hookd.store.records import (
    SETTABLE,
    SUBSCRIPTION_STATUSES,
    SubscriptionRow,
    SubscriptionStatus,
    Update,
)
from hookd.store.sqlite.db import Migration

Status = SubscriptionStatus
STATUSES = SUBSCRIPTION_STATUSES
__all__ = ["STATUSES", "SubscriptionRow", "SubscriptionStore", "Update"]

MIGRATIONS: list[Migration] = [
    Migration(
        "subscriptions",
        1,
        """
        CREATE TABLE subscriptions (
            id TEXT PRIMARY KEY,
            flow TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            connector TEXT NOT NULL,
            operation TEXT NOT NULL,
            connection TEXT,
            scope TEXT,
            parameters TEXT NOT NULL DEFAULT '{}',
            location TEXT,
            upstream_id TEXT,
            secret TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN
                ('pending', 'active', 'failed', 'deleting', 'orphaned')),
            last_error TEXT,
            verified_at REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX subscriptions_flow ON subscriptions (flow)
        """,
    ),
]

_COLUMNS = (
    "id, flow, fingerprint, connector, operation, connection, scope, parameters, location,"
    " upstream_id, secret, status, last_error, verified_at, created_at, updated_at"
)


def _row(r: sqlite3.Row) -> SubscriptionRow:
    return SubscriptionRow(
        id=r["id"], flow=r["flow"], fingerprint=r["fingerprint"], connector=r["connector"],
        operation=r["operation"], connection=r["connection"], scope=r["scope"],
        parameters=json.loads(r["parameters"] or "{}"), location=r["location"],
        upstream_id=r["upstream_id"], secret=r["secret"], status=r["status"],
        last_error=r["last_error"], verified_at=r["verified_at"],
        created_at=r["created_at"], updated_at=r["updated_at"],
    )




class SubscriptionStore:
    """Subscriptions over a SQLite connection from `hookd.store.sqlite.db.open_db`."""

    def __init__(self, conn: sqlite3.Connection, *, clock: Any = time.time) -> None:
        self.conn = conn
        self._clock = clock

    # ---------------------------------------------------------------- reads

    def get(self, sub_id: str) -> SubscriptionRow | None:
        r = self.conn.execute(
            f"SELECT {_COLUMNS} FROM subscriptions WHERE id = ?", (sub_id,)
        ).fetchone()
        return _row(r) if r is not None else None

    def all(self) -> list[SubscriptionRow]:
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM subscriptions ORDER BY flow, id")
        return [_row(r) for r in rows]

    # ---------------------------------------------------------------- server

    def mark_verified(self, sub_id: str, when: float) -> bool:
        """Stamp the upstream's ping; False when the subscription is unknown."""
        cur = self.conn.execute(
            "UPDATE subscriptions SET verified_at = ?, updated_at = ? WHERE id = ?",
            (when, when, sub_id),
        )
        return cur.rowcount > 0

    # ---------------------------------------------------------------- reconciler

    def upsert(self, row: SubscriptionRow) -> None:
        self.apply_many([Update("upsert", row.id, row=row)])

    def set(self, sub_id: str, **fields: Any) -> None:
        self.apply_many([Update("set", sub_id, fields=fields)])

    def remove(self, sub_id: str) -> None:
        self.apply_many([Update("remove", sub_id)])

    def apply_many(self, updates: Iterable[Update]) -> None:
        """Apply `updates` in one transaction (one fsync however many there are)."""
        now = self._clock()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for u in updates:
                if u.kind == "upsert":
                    assert u.row is not None
                    self._upsert(u.row, now)
                elif u.kind == "set":
                    bad = set(u.fields) - SETTABLE
                    if bad:
                        raise ValueError(f"not settable: {sorted(bad)}")
                    if "status" in u.fields and u.fields["status"] not in STATUSES:
                        raise ValueError(f"unknown status {u.fields['status']!r}")
                    names = sorted(u.fields)
                    assignments = "".join(f"{n} = ?, " for n in names)
                    self.conn.execute(
                        f"UPDATE subscriptions SET {assignments}updated_at = ? WHERE id = ?",
                        (*(u.fields[n] for n in names), now, u.sub_id),
                    )
                else:
                    self.conn.execute("DELETE FROM subscriptions WHERE id = ?", (u.sub_id,))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def _upsert(self, row: SubscriptionRow, now: float) -> None:
        self.conn.execute(
            f"INSERT INTO subscriptions ({_COLUMNS}) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET flow = excluded.flow,"
            " fingerprint = excluded.fingerprint, connector = excluded.connector,"
            " operation = excluded.operation, connection = excluded.connection,"
            " scope = excluded.scope, parameters = excluded.parameters,"
            " location = excluded.location, upstream_id = excluded.upstream_id,"
            " secret = excluded.secret, status = excluded.status,"
            " last_error = excluded.last_error, updated_at = excluded.updated_at",
            (
                row.id, row.flow, row.fingerprint, row.connector, row.operation,
                row.connection, row.scope, json.dumps(dict(row.parameters), default=str),
                row.location, row.upstream_id, row.secret, row.status, row.last_error,
                row.verified_at, row.created_at or now, now,
            ),
        )

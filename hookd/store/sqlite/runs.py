"""Run history: one row per run of a flow, one row per step of a run.

This is what `hookd runs`, `hookd runs show` and ``GET /api/runs`` display, and also what
makes runs resumable: the pipeline records a step's start *before* executing it and its
end right after, so after a crash the worker knows which steps finished (their outputs
are reloaded from here and they are not executed again) and which one to run next.

A run belongs to one delivery; replaying a delivery creates another run with the next
``attempt`` number, so the failed run (the dead letter) stays in the history.

Statuses:

- run: ``queued`` (created, or interrupted by a shutdown and waiting to resume) →
  ``running`` → ``succeeded`` | ``failed`` | ``cancelled``
- step: ``running`` → ``succeeded`` | ``failed`` | ``skipped`` (its ``if`` was false)

Inputs are stored as rendered, after the pipeline replaced every secret value by
``***``; outputs are capped (`OUTPUT_CAP`) so one chatty command cannot bloat the file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Literal

from hookd.store import errors
from hookd.store.records import (
    FINISHED,
    RUN_STATUSES,
    Run,
    RunStatus,
    StepResult,
    StepStatus,
    new_run_id,
    steps_done,
)
from hookd.store.sqlite.db import Migration, immediate_transaction, where_equal

__all__ = ["FINISHED", "RUN_STATUSES", "Run", "RunStore", "StepResult", "replay",
           "steps_done"]

OUTPUT_CAP = 256 * 1024  # bytes of JSON kept per step output

MIGRATIONS: list[Migration] = [
    Migration(
        "runs",
        1,
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            delivery_id TEXT NOT NULL,
            flow TEXT NOT NULL,
            status TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 1,
            config_revision TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            error TEXT
        );
        CREATE INDEX runs_delivery ON runs (delivery_id, attempt);
        CREATE INDEX runs_flow ON runs (flow, id);
        CREATE INDEX runs_status ON runs (status, id);
        CREATE INDEX runs_created ON runs (created_at);
        CREATE TABLE run_steps (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            step_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            kind TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 1,
            started_at REAL NOT NULL,
            ended_at REAL,
            input TEXT,
            output TEXT,
            error TEXT,
            PRIMARY KEY (run_id, step_id)
        )
        """,
    ),
]


_RUN_COLUMNS = (
    "id, delivery_id, flow, status, attempt, config_revision, created_at, started_at,"
    " finished_at, error"
)
_STEP_COLUMNS = (
    "step_id, idx, kind, status, attempt, started_at, ended_at, input, output, error"
)


def encode(value: Any, cap: int | None = None) -> str:
    """JSON for a stored input/output; over `cap` bytes becomes a truncation marker that
    keeps the beginning, so the history still shows what the value looked like."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    if cap is not None and len(text) > cap:
        marker = {"truncated": True, "size": len(text), "preview": text[: max(cap - 100, 0)]}
        return json.dumps(marker, ensure_ascii=False, separators=(",", ":"))
    return text


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _run(r: sqlite3.Row, steps: tuple[StepResult, ...] = ()) -> Run:
    # The columns of _RUN_COLUMNS are named as Run's fields.
    return Run(**dict(zip(r.keys(), r, strict=True)), steps=steps)


def _step(r: sqlite3.Row) -> StepResult:
    # The columns of _STEP_COLUMNS are named as StepResult's fields, but for `idx`
    # (`index` is an SQL keyword) and the JSON-encoded input and output.
    fields = dict(zip(r.keys(), r, strict=True))
    fields["index"] = fields.pop("idx")
    fields["input"], fields["output"] = _decode(fields["input"]), _decode(fields["output"])
    return StepResult(**fields)


class RunStore:
    """Runs and step results over one SQLite connection (autocommit, see `hookd.store.sqlite.db`).

    Every write is its own short transaction, committed when the method returns: the
    history is written as things happen, not at the end of a run. Not thread-safe: use
    one connection per thread.
    """

    def __init__(
        self, conn: sqlite3.Connection, *, clock: Any = time.time, output_cap: int = OUTPUT_CAP
    ) -> None:
        self.conn = conn
        self._clock = clock
        self.output_cap = output_cap

    # ------------------------------------------------------------------ runs

    def create(
        self, delivery_id: str, flow: str, *, config_revision: str = "", status: RunStatus = "queued",
        error: str | None = None,
    ) -> Run:
        """A new run of `delivery_id`, with the next attempt number for that delivery
        (``status="running"`` creates and starts it in one write)."""
        now = self._clock()
        with immediate_transaction(self.conn):
            r = self.conn.execute(
                "SELECT coalesce(max(attempt), 0) FROM runs WHERE delivery_id = ?",
                (delivery_id,),
            ).fetchone()
            attempt = int(r[0]) + 1
            run_id = new_run_id(now)
            finished = now if status in FINISHED else None
            started = now if status == "running" else finished
            self.conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, delivery_id, flow, status, attempt, config_revision, now,
                 started, finished, error),
            )
        return Run(run_id, delivery_id, flow, status, attempt, config_revision, now,
                   started, finished, error)

    def start(self, run_id: str) -> None:
        """queued → running (keeps the first start time when resuming)."""
        self.conn.execute(
            "UPDATE runs SET status = 'running', started_at = coalesce(started_at, ?)"
            " WHERE id = ?",
            (self._clock(), run_id),
        )

    def finish(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        """Record the run's outcome; ``queued`` means interrupted, to be resumed."""
        finished = self._clock() if status in FINISHED else None
        self.conn.execute(
            "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE id = ?",
            (status, error, finished, run_id),
        )

    def latest_for_delivery(self, delivery_id: str) -> Run | None:
        r = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE delivery_id = ?"
            " ORDER BY attempt DESC LIMIT 1",
            (delivery_id,),
        ).fetchone()
        return _run(r) if r is not None else None

    def get(self, run_id: str, *, steps: bool = True) -> Run | None:
        """The run with its steps in flow order; a unique id prefix is accepted too."""
        r = self.conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if r is None and run_id and len(run_id) >= 4:
            matches = self.conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id >= ? AND id < ? LIMIT 2",
                (run_id, run_id + "\U0010ffff"),
            ).fetchall()
            r = matches[0] if len(matches) == 1 else None
        if r is None:
            return None
        return _run(r, self.steps(r["id"]) if steps else ())

    def list(
        self,
        *,
        flow: str | None = None,
        status: str | None = None,
        delivery_id: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Run]:
        """Newest first, without steps; `before` (a run id) pages further back."""
        where, args = where_equal((("flow", flow), ("status", status), ("delivery_id", delivery_id)))
        if before is not None:
            where += " AND id < ?" if where else "WHERE id < ?"
            args.append(before)
        rows = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY id DESC LIMIT ?",
            (*args, max(0, limit)),
        ).fetchall()
        return [_run(r) for r in rows]

    def since(self, when: float) -> dict[str, int]:
        """Runs created since `when`, by status (the runs_created index)."""
        rows = self.conn.execute(
            "SELECT status, count(*) FROM runs WHERE created_at >= ? GROUP BY status", (when,))
        return {str(s): int(n) for s, n in rows}

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(RUN_STATUSES, 0)
        for status, n in self.conn.execute("SELECT status, count(*) FROM runs GROUP BY status"):
            out[status] = n
        return out

    # ------------------------------------------------------------------ steps

    def steps(self, run_id: str) -> tuple[StepResult, ...]:
        rows = self.conn.execute(
            f"SELECT {_STEP_COLUMNS} FROM run_steps WHERE run_id = ? ORDER BY idx, started_at",
            (run_id,),
        ).fetchall()
        return tuple(_step(r) for r in rows)

    def step_started(
        self, run_id: str, step_id: str, index: int, kind: str, attempt: int, input: Any
    ) -> float:
        """Record that an attempt of a step starts (before it executes); returns the time."""
        now = self._clock()
        self.conn.execute(
            "INSERT INTO run_steps (run_id, step_id, idx, kind, status, attempt, started_at,"
            " input) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)"
            " ON CONFLICT (run_id, step_id) DO UPDATE SET status = 'running',"
            " attempt = excluded.attempt, input = excluded.input, ended_at = NULL,"
            " output = NULL, error = NULL, idx = excluded.idx, kind = excluded.kind",
            (run_id, step_id, index, kind, attempt, now, encode(input, self.output_cap)),
        )
        return now

    def step_retrying(self, run_id: str, step_id: str, error: str, output: Any = None) -> None:
        """A failed attempt that will be retried: the step stays ``running`` (a crash now
        resumes it), with the attempt's error and output visible meanwhile."""
        self.conn.execute(
            "UPDATE run_steps SET error = ?, output = ? WHERE run_id = ? AND step_id = ?",
            (error, encode(output, self.output_cap), run_id, step_id),
        )

    def step_finished(
        self,
        run_id: str,
        step_id: str,
        status: StepStatus,
        *,
        output: Any = None,
        error: str | None = None,
        index: int = 0,
        kind: str = "",
        input: Any = None,
    ) -> float:
        """Record a step's outcome. A step that never started (skipped) gets its row here."""
        now = self._clock()
        out = encode(output, self.output_cap)
        cur = self.conn.execute(
            "UPDATE run_steps SET status = ?, ended_at = ?, output = ?, error = ?"
            " WHERE run_id = ? AND step_id = ?",
            (status, now, out, error, run_id, step_id),
        )
        if cur.rowcount == 0:
            self.conn.execute(
                "INSERT INTO run_steps (run_id, step_id, idx, kind, status, attempt, started_at,"
                " ended_at, input, output, error) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                (run_id, step_id, index, kind, status, now, now,
                 encode(input, self.output_cap), out, error),
            )
        return now

    # ------------------------------------------------------------------ retention

    def prune(self, *, max_age: float | None = None, max_runs: int | None = None) -> int:
        """Delete finished runs older than `max_age` seconds, then the oldest finished runs
        beyond `max_runs`; unfinished runs are never pruned. Returns how many went."""
        removed = 0
        with immediate_transaction(self.conn):
            if max_age is not None:
                cur = self.conn.execute(
                    "DELETE FROM runs WHERE created_at < ? AND status IN"
                    " ('succeeded', 'failed', 'cancelled')",
                    (self._clock() - max_age,),
                )
                removed += max(cur.rowcount, 0)
            if max_runs is not None:
                r = self.conn.execute(
                    "SELECT id FROM runs ORDER BY id DESC LIMIT 1 OFFSET ?", (max(max_runs, 0),)
                ).fetchone()
                if r is not None:
                    cur = self.conn.execute(
                        "DELETE FROM runs WHERE id <= ? AND status IN"
                        " ('succeeded', 'failed', 'cancelled')",
                        (r[0],),
                    )
                    removed += max(cur.rowcount, 0)
        return removed


def replay(conn: sqlite3.Connection, ident: str, *,
           kind: Literal["run", "delivery"] | None = None) -> str:
    """Put the delivery of run `ident` (or delivery `ident`: hookd's id, or the upstream's
    own delivery id when one delivery has it) back in the queue; the worker
    then creates a new run for it (the next attempt), keeping the earlier runs in the
    history. `kind` restricts `ident` to ``"run"`` or ``"delivery"``. Returns the
    delivery id. Raises `errors.NotFound` (unknown), `errors.Conflict` (still queued or
    running) or `errors.Gone` (the delivery was pruned)."""
    from hookd.store.sqlite.deliveries import DeliveryStore

    deliveries = DeliveryStore(conn)
    delivery_id: str | None = None
    if kind in (None, "delivery") and deliveries.get(ident) is not None:
        delivery_id = ident
    if delivery_id is None and kind in (None, "run"):
        run = RunStore(conn).get(ident, steps=False)
        if run is not None:
            delivery_id = run.delivery_id
            if deliveries.get(delivery_id) is None:
                raise errors.Gone(f"delivery {delivery_id} of run {run.id} was pruned; "
                                  "it cannot be replayed")
    if delivery_id is None and kind in (None, "delivery"):
        # The upstream's own delivery id (X-GitHub-Delivery): what the user has at hand.
        found = deliveries.with_upstream_id(ident)
        if len(found) > 1:
            raise errors.Conflict(f"{len(found)} deliveries were received with delivery id "
                                  f"{ident!r} (by different subscriptions); replay one by "
                                  f"hookd's id: {', '.join(found)}")
        delivery_id = found[0] if found else None
    if delivery_id is None:
        what = {"run": "run", "delivery": "delivery"}.get(kind or "", "run or delivery")
        raise errors.NotFound(f"no {what} {ident!r}")
    if not deliveries.requeue(delivery_id):
        current = deliveries.get(delivery_id)
        status = current.status if current is not None else "gone"
        raise errors.Conflict(f"delivery {delivery_id} is {status}; it will run anyway")
    return delivery_id

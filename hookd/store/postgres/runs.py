"""Run history in PostgreSQL: what `hookd runs` shows from any replica, and what makes a
run resumable on another replica after its own died.

Same rows as the SQLite tables (`hookd.store.sqlite.runs`), written as the run goes, so a
replica that takes over an expired claim finds the steps already done and resumes at the
first unfinished one. `finish` with a delivery id finishes the run and its delivery in one
transaction.

Each write the worker makes per delivery is one round trip (a statement, or a transaction
in pipeline mode), and a step's result is not written alone: `step_finished` keeps it and
the run's next write (the next step's `step_started`, or `finish`) commits it in the same
transaction. That next write comes before the next step's side effect, and nothing but
rendering runs in between, so "a step's result is committed before the next step acts"
holds — which is what lets a replica resume at the first unfinished step. Writes that
carry no step result (a run created running, a step started) commit without waiting for
the WAL flush: losing them in a crash of the server re-runs the run's unfinished step,
which it would re-run anyway. A run created ``running`` after this process's claim of
its delivery needs no read either (the claim noted the latest attempt: `ClaimNotes`): its
row is kept like a step's result and goes with its first step's start.
docs/adr/0010-pg-worker-round-trips.md has the reasoning and the numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from psycopg_pool import AsyncConnectionPool

from hookd.store import errors
from hookd.store.postgres import replicas
from hookd.store.postgres.connection import Conn
from hookd.store.postgres.deliveries import (
    CHANNEL,
    Batch,
    ClaimNotes,
    batch,
    finish_args,
    statement,
    transaction,
)
from hookd.store.records import FINISHED, Run, RunStatus, StepResult, StepStatus, new_run_id
from hookd.store.sqlite.runs import OUTPUT_CAP, encode

RUN_COLUMNS = (
    "id, delivery_id, flow, status, attempt, config_revision, created_at, started_at,"
    " finished_at, error"
)
STEP_COLUMNS = "step_id, idx, kind, status, attempt, started_at, ended_at, input, output, error"

# A run's outcome → its delivery's (RunHistory.finish with delivery_id).
DELIVERY_STATUS = {"succeeded": "done", "failed": "failed", "cancelled": "failed",
                   "queued": "queued"}
_FINISHED_SQL = "('succeeded', 'failed', 'cancelled')"

# A step's result, one statement: the row `step_started` wrote keeps its index, kind,
# attempt, start and input; a step that never started (skipped) gets a row of its own.
_STEP_FINISHED = (
    "INSERT INTO run_steps (run_id, step_id, idx, kind, status, attempt, started_at, ended_at,"
    " input, output, error) VALUES (%s, %s, %s, %s, %s, 1, %s, %s, %s, %s, %s)"
    " ON CONFLICT (run_id, step_id) DO UPDATE SET status = EXCLUDED.status,"
    " ended_at = EXCLUDED.ended_at, output = EXCLUDED.output, error = EXCLUDED.error"
)

Write = tuple[str, tuple[Any, ...]]  # a statement and its parameters, not sent yet


def row_run(r: Sequence[Any], steps: tuple[StepResult, ...] = ()) -> Run:
    return Run(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], steps=steps)


def row_step(r: Sequence[Any]) -> StepResult:
    return StepResult(step_id=r[0], index=r[1], kind=r[2], status=r[3], attempt=r[4],
                      started_at=r[5], ended_at=r[6], input=_decode(r[7]),
                      output=_decode(r[8]), error=r[9])


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class PgRunHistory:
    """`hookd.store.interface.RunHistory` on PostgreSQL."""

    def __init__(self, pool: AsyncConnectionPool[Conn], *,
                 clock: Callable[[], float] = time.time, output_cap: int = OUTPUT_CAP,
                 dedup_window: float | None = None, notes: ClaimNotes | None = None) -> None:
        self.pool = pool
        # Shared with the queue's claims (`hookd.store.postgres.deliveries.ClaimNotes`).
        self.notes: ClaimNotes = {} if notes is None else notes
        self.clock = clock
        self.output_cap = output_cap
        self.dedup_window = dedup_window
        # Step results not sent yet, by run: the run's next write carries them.
        self._unsent: dict[str, list[Write]] = {}

    def _take(self, run_id: str) -> list[Write]:
        return self._unsent.pop(run_id, [])

    def _give_back(self, run_id: str, writes: list[Write]) -> None:
        """Writes of a transaction that failed: the run's next write tries them again."""
        if writes:
            self._unsent[run_id] = writes + self._unsent.get(run_id, [])

    async def flush(self, run_id: str | None = None) -> None:
        """Commit the step results kept for `run_id` (all runs: None). Every read does this
        first, so this store never shows an older state than it was told."""
        for rid in [run_id] if run_id is not None else list(self._unsent):
            writes = self._take(rid)
            if writes:
                await self._send(rid, writes, "recording a step")

    async def _send(self, run_id: str, writes: list[Write], what: str, *,
                    durable: bool = True, kept: int | None = None) -> Batch:
        """`writes` as one transaction, the run's kept ones first (`kept` of them: all,
        by default); on failure those go back, for the run's next write."""
        kept = len(writes) if kept is None else kept
        try:
            async with batch(self.pool, what, durable=durable) as b:
                for sql, params in writes:
                    b.add(sql, params)
        except BaseException:
            self._give_back(run_id, writes[:kept])
            raise
        return b

    async def create(self, delivery_id: str, flow: str, *, config_revision: str = "",
                     status: RunStatus = "queued", error: str | None = None) -> Run:
        now = self.clock()
        run_id = new_run_id(now)
        finished = now if status in FINISHED else None
        started = now if status == "running" else finished
        previous = self.notes.pop(delivery_id, None)
        if status == "running" and previous is not None:
            # This process's claim read the delivery's latest attempt: the row is kept
            # and goes with the run's next write (its first step's start, or its finish),
            # before any side effect. Another replica could number a run alike only by
            # claiming the delivery again in between — after this claim's lease ran out.
            attempt = previous + 1
            self._unsent.setdefault(run_id, []).append((
                f"INSERT INTO runs ({RUN_COLUMNS}) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (run_id, delivery_id, flow, status, attempt, config_revision, now, started,
                 finished, error)))
            return Run(run_id, delivery_id, flow, status, attempt, config_revision, now,
                       started, finished, error)
        # A run created running may be lost in a crash of the server (no WAL flush
        # awaited): none of its steps' results can have been committed after it, so the
        # delivery, claimed again, starts a run afresh — as it would resume this one.
        async with batch(self.pool, "creating a run", durable=status != "running") as b:
            # The delivery's row is locked so that two replicas (a lease expired while
            # its first holder still ran) never number two runs alike; the INSERT, a
            # statement of its own, counts after the lock.
            b.add("SELECT 1 FROM deliveries WHERE id = %s FOR UPDATE", (delivery_id,))
            inserted = b.add(
                f"INSERT INTO runs ({RUN_COLUMNS}) SELECT %s::text, %s::text, %s::text,"
                " %s::text, coalesce(max(attempt), 0) + 1, %s::text, %s::float8, %s::float8,"
                " %s::float8, %s::text FROM runs WHERE delivery_id = %s RETURNING attempt",
                (run_id, delivery_id, flow, status, config_revision, now, started, finished,
                 error, delivery_id))
        rows = b.rows(inserted)
        attempt = int(rows[0][0]) if rows else 1
        return Run(run_id, delivery_id, flow, status, attempt, config_revision, now, started,
                   finished, error)

    async def start(self, run_id: str) -> None:
        await self.flush(run_id)
        async with statement(self.pool, "starting a run") as conn:
            await conn.execute("UPDATE runs SET status = 'running',"
                               " started_at = coalesce(started_at, %s) WHERE id = %s",
                               (self.clock(), run_id))

    async def finish(self, run_id: str, status: RunStatus, error: str | None = None, *,
                     delivery_id: str | None = None) -> None:
        now = self.clock()
        if delivery_id is not None:
            self.notes.pop(delivery_id, None)
        writes = self._take(run_id)
        kept = len(writes)
        writes.append((
            "UPDATE runs SET status = %s, error = %s, finished_at = %s WHERE id = %s",
            (status, error, now if status in FINISHED else None, run_id)))
        if delivery_id is not None:
            writes.append(finish_args(delivery_id, DELIVERY_STATUS[status], error, now))
        await self._send(run_id, writes, "finishing a run", kept=kept)

    async def latest_for_delivery(self, delivery_id: str) -> Run | None:
        await self.flush()
        async with statement(self.pool, "reading runs") as conn:
            r = await (await conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE delivery_id = %s"
                " ORDER BY attempt DESC LIMIT 1", (delivery_id,))).fetchone()
        return row_run(r) if r else None

    async def get(self, run_id: str, *, steps: bool = True) -> Run | None:
        """The run with its steps in flow order; a unique id prefix (4+) is accepted too."""
        await self.flush()
        async with transaction(self.pool, "reading a run") as conn:
            r = await (await conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE id = %s", (run_id,))).fetchone()
            if r is None and len(run_id) >= 4:
                matches = await (await conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE id >= %s AND id < %s LIMIT 2",
                    (run_id, run_id + "\U0010ffff"))).fetchall()
                r = matches[0] if len(matches) == 1 else None
            if r is None:
                return None
            found = await _steps(conn, r[0]) if steps else ()
        return row_run(r, found)

    async def list(self, *, flow: str | None = None, status: str | None = None,
                   delivery_id: str | None = None, limit: int = 50,
                   before: str | None = None) -> list[Run]:
        clauses, args = [], []
        for column, value in (("flow", flow), ("status", status), ("delivery_id", delivery_id)):
            if value is not None:
                clauses.append(f"{column} = %s")
                args.append(value)
        if before is not None:
            clauses.append("id < %s")
            args.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        await self.flush()
        async with statement(self.pool, "listing runs") as conn:
            rows = await (await conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs {where} ORDER BY id DESC LIMIT %s",
                (*args, max(0, limit)))).fetchall()
        return [row_run(r) for r in rows]

    async def since(self, when: float) -> dict[str, int]:
        await self.flush()
        async with statement(self.pool, "counting runs") as conn:
            rows = await (await conn.execute(
                "SELECT status, count(*) FROM runs WHERE created_at >= %s GROUP BY status",
                (when,))).fetchall()
        return {str(s): int(n) for s, n in rows}

    async def steps(self, run_id: str) -> tuple[StepResult, ...]:
        await self.flush()
        async with statement(self.pool, "reading steps") as conn:
            return await _steps(conn, run_id)

    async def step_started(self, run_id: str, step_id: str, index: int, kind: str,
                           attempt: int, input: Any) -> float:
        now = self.clock()
        writes = self._take(run_id)
        kept = len(writes)
        # Durable when it carries the previous step's result (see the module's doc); the
        # run's own row (kept by `create`) is no result.
        durable = any(sql is _STEP_FINISHED for sql, _ in writes)
        writes.append((
            "INSERT INTO run_steps (run_id, step_id, idx, kind, status, attempt, started_at,"
            " input) VALUES (%s, %s, %s, %s, 'running', %s, %s, %s)"
            " ON CONFLICT (run_id, step_id) DO UPDATE SET status = 'running',"
            " attempt = EXCLUDED.attempt, input = EXCLUDED.input, ended_at = NULL,"
            " output = NULL, error = NULL, idx = EXCLUDED.idx, kind = EXCLUDED.kind",
            (run_id, step_id, index, kind, attempt, now, encode(input, self.output_cap))))
        await self._send(run_id, writes, "recording a step", durable=durable, kept=kept)
        return now

    async def step_retrying(self, run_id: str, step_id: str, error: str,
                            output: Any = None) -> None:
        await self.flush(run_id)
        async with statement(self.pool, "recording a step") as conn:
            await conn.execute(
                "UPDATE run_steps SET error = %s, output = %s WHERE run_id = %s AND step_id = %s",
                (error, encode(output, self.output_cap), run_id, step_id))

    async def step_finished(self, run_id: str, step_id: str, status: StepStatus, *,
                            output: Any = None, error: str | None = None, index: int = 0,
                            kind: str = "", input: Any = None) -> float:
        """Kept, not sent: the run's next write commits it (the module's doc says why
        that is soon enough); a read of this store sends it first."""
        now = self.clock()
        self._unsent.setdefault(run_id, []).append((_STEP_FINISHED, (
            run_id, step_id, index, kind, status, now, now, encode(input, self.output_cap),
            encode(output, self.output_cap), error)))
        return now

    async def replay(self, ident: str, *,
                     kind: Literal["run", "delivery"] | None = None) -> str:
        """Queue the delivery of run (or delivery) `ident` again; returns the delivery id."""
        await self.flush()
        async with transaction(self.pool, "replaying") as conn:
            delivery_id = None
            if kind in (None, "delivery"):
                r = await (await conn.execute("SELECT id FROM deliveries WHERE id = %s",
                                              (ident,))).fetchone()
                delivery_id = r[0] if r else None
            if delivery_id is None and kind in (None, "run"):
                run = await self._find_run(conn, ident)
                if run is not None:
                    delivery_id = run[1]
                    r = await (await conn.execute("SELECT 1 FROM deliveries WHERE id = %s",
                                                  (delivery_id,))).fetchone()
                    if r is None:
                        raise errors.Gone(f"delivery {delivery_id} of run {run[0]} was pruned;"
                                          " it cannot be replayed")
            if delivery_id is None:
                what = {"run": "run", "delivery": "delivery"}.get(kind or "", "run or delivery")
                raise errors.NotFound(f"no {what} {ident!r}")
            r = await (await conn.execute(
                "UPDATE deliveries SET status = 'queued', error = NULL, updated_at = %s"
                " WHERE id = %s AND status IN ('done', 'failed') RETURNING id",
                (self.clock(), delivery_id))).fetchone()
            if r is None:
                s = await (await conn.execute("SELECT status FROM deliveries WHERE id = %s",
                                              (delivery_id,))).fetchone()
                raise errors.Conflict(f"delivery {delivery_id} is {s[0] if s else 'gone'};"
                                      " it will run anyway")
            await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        return str(delivery_id)

    async def _find_run(self, conn: Conn, ident: str) -> Sequence[Any] | None:
        r = await (await conn.execute("SELECT id, delivery_id FROM runs WHERE id = %s",
                                      (ident,))).fetchone()
        if r is None and len(ident) >= 4:
            matches = await (await conn.execute(
                "SELECT id, delivery_id FROM runs WHERE id >= %s AND id < %s LIMIT 2",
                (ident, ident + "\U0010ffff"))).fetchall()
            r = matches[0] if len(matches) == 1 else None
        return r

    async def prune(self, *, max_age: float, max_runs: int,
                    dedup_window: float | None = None) -> dict[str, int]:
        """Retention (the leader's): finished runs older than `max_age` or beyond
        `max_runs`, finished deliveries older than `max_age`, dedup keys older than
        `dedup_window` (default: the store's), replicas gone for a day. Unfinished runs
        and deliveries are never pruned."""
        dedup_window = self.dedup_window if dedup_window is None else dedup_window
        cutoff = self.clock() - max_age
        await self.flush()
        out = {"runs": 0, "deliveries": 0, "dedup_keys": 0, "replicas": 0}
        async with transaction(self.pool, "pruning runs") as conn:
            cur = await conn.execute(
                f"DELETE FROM runs WHERE created_at < %s AND status IN {_FINISHED_SQL}", (cutoff,))
            out["runs"] += max(cur.rowcount, 0)
            r = await (await conn.execute(
                "SELECT id FROM runs ORDER BY id DESC LIMIT 1 OFFSET %s", (max(max_runs, 0),)
            )).fetchone()
            if r is not None:
                cur = await conn.execute(
                    f"DELETE FROM runs WHERE id <= %s AND status IN {_FINISHED_SQL}", (r[0],))
                out["runs"] += max(cur.rowcount, 0)
        async with transaction(self.pool, "pruning deliveries") as conn:
            cur = await conn.execute("DELETE FROM deliveries WHERE received_at < %s"
                                     " AND status IN ('done', 'failed')", (cutoff,))
            out["deliveries"] = max(cur.rowcount, 0)
            if dedup_window is not None:
                cur = await conn.execute("DELETE FROM dedup_keys WHERE seen_at < %s",
                                         (self.clock() - dedup_window,))
                out["dedup_keys"] = max(cur.rowcount, 0)
            out["replicas"] = await replicas.prune(conn)
        return out


async def _steps(conn: Conn, run_id: str) -> tuple[StepResult, ...]:
    rows = await (await conn.execute(
        f"SELECT {STEP_COLUMNS} FROM run_steps WHERE run_id = %s ORDER BY idx, started_at",
        (run_id,))).fetchall()
    return tuple(row_step(r) for r in rows)

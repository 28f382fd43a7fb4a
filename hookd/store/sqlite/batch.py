"""Group commit for the worker's store writes (the "worker" role's executor).

The worker records every step start and end as it happens; with dozens of runs in flight
that is thousands of tiny transactions a second, and each commit has a fixed cost.
`LoopBatchingDb` collects the store calls made during one turn of the event loop and runs
them in a single transaction by a callback at the end of that turn, on the loop's own
thread. A caller's await returns only after that COMMIT, so "recorded" still means
committed before the run goes on.

The table modules open their own ``BEGIN IMMEDIATE`` transactions; `Nesting` hands them
a connection on which, inside the batch, those are no-ops (`executor.Nesting`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hookd.store.sqlite.executor import Nesting, Tables, domain_error

T = TypeVar("T")


class LoopBatchingDb:
    """Calls made during one turn of the loop, executed together in one transaction.

    Why on the loop's thread: each SQLite statement takes tens of microseconds, so running
    them inline costs the loop less than handing them to a thread, which must win the GIL
    back after every statement (up to the interpreter's 5 ms switch interval while the
    loop is busy). Why it never waits for the write lock: see `_flush`.
    """

    def __init__(self, open: Callable[[], sqlite3.Connection], *, max_batch: int = 512,
                 clock: Callable[[], float] = time.time) -> None:
        self._open = open
        self._clock = clock
        self.max_batch = max_batch
        self._raw: sqlite3.Connection | None = None
        self._conn: Nesting | None = None
        self._tables: Tables | None = None
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self.commits = 0
        self.calls = 0
        self.busy = 0.0
        self.lock_waits = 0

    def start(self) -> Any:
        self._raw = self._open()
        self._raw.execute("PRAGMA busy_timeout=0")  # see _flush
        self._conn = Nesting(self._raw)
        self._tables = Tables.over(self._conn, self._clock)
        return self._conn

    async def run(self, fn: Callable[[Tables], T], *, write: bool = True) -> T:
        """The executor interface (`hookd.store.sqlite.executor.Executor`): `fn` of the
        tables, in this turn's transaction (reads too: they are as cheap inside it);
        SQLite's errors become the store's."""
        tables = self._tables
        assert tables is not None, "LoopBatchingDb.run before start"
        try:
            result: T = await self.call(fn, tables)
        except sqlite3.Error as exc:
            raise domain_error(exc) from exc
        return result

    async def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if args or kwargs:
            inner = fn
            fn = lambda: inner(*args, **kwargs)  # noqa: E731
        self._pending.append((fn, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        if self._pending:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        assert self._raw is not None and self._conn is not None
        started = time.perf_counter()
        try:
            # Never wait for the write lock on the loop: another writer (the inbox
            # committing with fsync) may hold it for milliseconds. Try again shortly.
            self._raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            self._pending[:0] = batch
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_later(0.0005, self._flush)
            self.busy += time.perf_counter() - started
            self.lock_waits += 1
            return
        results = _execute(self._raw, [fn for fn, _ in batch], begun=True)
        self.busy += time.perf_counter() - started
        if results is not None:
            self.commits += 1
            self.calls += len(batch)
        for i, (_, fut) in enumerate(batch):
            if fut.done():
                continue
            value, error = results[i] if results is not None else (None, _COMMIT_FAILED)
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None


_COMMIT_FAILED = sqlite3.OperationalError("the batch transaction failed to commit")


def _execute(raw: sqlite3.Connection, fns: list[Callable[[], Any]], *,
             begun: bool = False) -> list[tuple[Any, BaseException | None]] | None:
    """Run `fns` in one transaction; None when the commit failed.

    The common case is that every call succeeds: one BEGIN, the calls, one COMMIT. When
    one raises, the whole batch is rolled back and the calls are replayed one
    transaction each, so only the failing call fails (store calls have no effect outside
    the database, so running them again is safe).
    """
    out: list[tuple[Any, BaseException | None]] = []
    try:
        if not begun:
            raw.execute("BEGIN IMMEDIATE")
        try:
            for fn in fns:
                out.append((fn(), None))
        except Exception:  # noqa: BLE001 - isolate the failing call below
            raw.execute("ROLLBACK")
            return [_one(raw, fn) for fn in fns]
        raw.execute("COMMIT")
    except sqlite3.Error:
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        return None
    return out


def _one(raw: sqlite3.Connection, fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        raw.execute("BEGIN IMMEDIATE")
        value = fn()
        raw.execute("COMMIT")
        return value, None
    except Exception as exc:  # noqa: BLE001 - handed to the caller
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        return None, exc

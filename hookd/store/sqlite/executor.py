"""Where the SQLite store's calls run: on a thread of their own, or batched on the loop.

The store's interface is async (`hookd.store.interface`); SQLite is a library, so each
call is a function of one connection run somewhere that never blocks the event loop on
another writer's lock:

- `ThreadExecutor` (roles "daemon" and "cli"): a writing thread and a reading thread, each
  owning one connection. The reconciler's writes, the admin API, status and retention all
  go through them, so the daemon has two connections besides the inbox's instead of one
  per request, thread and pruning pass. Waiting for another process's write lock happens
  on the writing thread, at most `hookd.store.errors.LOCK_WAIT` seconds.
- `hookd.store.sqlite.batch.LoopBatchingDb` (role "worker"): the run-history writes of one
  loop turn in one transaction, on the loop's thread, never waiting for the lock there.

Both hand the function a `Tables` (the table modules over that connection) and turn
SQLite's exceptions into the store's (`domain_error`), so no caller sees ``sqlite3``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hookd.store import errors
from hookd.store.sqlite.deliveries import DeliveryStore
from hookd.store.sqlite.runs import RunStore
from hookd.store.sqlite.subscriptions import SubscriptionStore

T = TypeVar("T")


@dataclass(frozen=True)
class Tables:
    """The table modules over one connection (`conn` for the few statements that span
    tables: retention, replay)."""

    conn: sqlite3.Connection
    deliveries: DeliveryStore
    runs: RunStore
    subscriptions: SubscriptionStore

    @classmethod
    def over(cls, conn: Any, clock: Callable[[], float] = time.time) -> Tables:
        """The tables over `conn`, their times read from `clock` (the store's)."""
        return cls(conn, DeliveryStore(conn, clock=clock), RunStore(conn, clock=clock),
                   SubscriptionStore(conn))


class Nesting:
    """A connection proxy for table methods run inside an executor's transaction: their
    own BEGIN, COMMIT and ROLLBACK become no-ops while that transaction is open (an
    exception still propagates, and the executor rolls back)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if self._conn.in_transaction:
            word = sql.lstrip()[:8].upper()
            if word.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
                return None
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class Executor(Protocol):
    async def run(self, fn: Callable[[Tables], T], *, write: bool = True) -> T:
        """`fn` of the tables; a `write` is one transaction (the table methods' own
        ``BEGIN`` nest into it), a read runs outside any."""

    def close(self) -> None: ...


def locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def domain_error(exc: sqlite3.Error) -> errors.StoreError:
    """The store's error for a SQLite one (the message kept: it names the cause)."""
    if locked(exc):
        return errors.Busy(f"the store is locked by another writer: {exc}")
    return errors.Unavailable(f"the store cannot do this now: {exc}")


class _Lane:
    """One thread and the connection it alone uses (opened there, at its first call)."""

    def __init__(self, open: Callable[[], sqlite3.Connection], name: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._open = open
        self._clock = clock
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        self._tables: Tables | None = None
        self._raw: Any = None

    def call(self, fn: Callable[[Tables], T], write: bool) -> T:
        try:
            if self._tables is None:
                self._raw = self._open()
                self._tables = Tables.over(Nesting(self._raw), self._clock)
            if not write:
                return fn(self._tables)
            raw = self._raw
            raw.execute("BEGIN IMMEDIATE")  # waits for another writer (busy_timeout)
            try:
                value = fn(self._tables)
                raw.execute("COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
            return value
        except sqlite3.Error as exc:
            raise domain_error(exc) from exc

    def shut(self) -> None:
        def close() -> None:
            if self._raw is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._raw.close()
                self._raw = self._tables = None

        self.pool.submit(close)
        self.pool.shutdown(wait=True)


class ThreadExecutor:
    """Writes in order on one thread, reads on another (see the module docstring).

    Two lanes so that a long write (retention deleting a month of runs) never holds up a
    read (the admin API, status): in WAL mode a reader does not wait for a writer. Each
    lane opens its connection the first time it is needed, so a store that is never used
    never opens the file; a failed open is retried at the next call. `split=False` (an
    in-memory database, which a second connection would not see) runs both on one lane.
    """

    def __init__(self, open: Callable[[], sqlite3.Connection], *, name: str = "hookd-store",
                 split: bool = True, clock: Callable[[], float] = time.time) -> None:
        self._writer = _Lane(open, f"{name}-write", clock)
        self._reader = _Lane(open, f"{name}-read", clock) if split else self._writer
        self._closed = False
        self._lock = threading.Lock()

    def _lane(self, write: bool) -> _Lane:
        return self._writer if write else self._reader

    async def run(self, fn: Callable[[Tables], T], *, write: bool = True) -> T:
        if self._closed:
            raise errors.Unavailable("the store is closed")
        lane = self._lane(write)
        return await asyncio.get_running_loop().run_in_executor(lane.pool, lane.call, fn, write)

    def call(self, fn: Callable[[Tables], T], *, write: bool = True) -> T:
        """`run` from code without an event loop (waits on the store's thread)."""
        if self._closed:
            raise errors.Unavailable("the store is closed")
        lane = self._lane(write)
        return lane.pool.submit(lane.call, fn, write).result()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._reader.shut()
        if self._writer is not self._reader:
            self._writer.shut()

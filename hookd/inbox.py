"""Group commit: durable deliveries without paying one fsync per request.

hookd must not answer 2xx before a delivery is on disk (``synchronous=FULL``: the WAL is
fsynced at each commit). One fsync per request would cap ingest at the disk's fsync rate
and serialise requests behind each other; instead one writer thread owns a SQLite
connection and, each time round its loop, takes *everything* queued since its last commit
(optionally waiting `window` seconds for more), writes it in one transaction, commits
once, and then wakes all those requests together. While it fsyncs, new requests queue up
and form the next batch, so the batch size grows with the load by itself.

The writer also does the dedup check (is this upstream delivery id already recorded?)
inside the same transaction, so two concurrent copies of one delivery cannot both be
recorded, and stamps ping verifications (one writer, no lock contention).

The event loop never blocks: requests put work on a thread-safe queue and await an
asyncio future; the writer resolves the futures of a batch with one
``call_soon_threadsafe`` per event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hookd.store import db
from hookd.store.deliveries import DeliveryStore, NewDelivery, PreparedRow, prepare
from hookd.store.subscriptions import SubscriptionStore

log = logging.getLogger("hookd.inbox")


class InboxError(Exception):
    """The delivery could not be recorded (disk full, store locked, inbox closed)."""


@dataclass(frozen=True)
class Recorded:
    """What the inbox did with one request: the delivery ids, or the original's on a repeat."""

    ids: list[str]
    duplicate: bool = False


@dataclass
class _Job:
    kind: str  # "record" | "verify"
    rows: Sequence[PreparedRow] = ()
    dedup_key: str | None = None
    subscription_id: str = ""
    when: float = 0.0
    future: asyncio.Future[Any] | None = field(default=None, repr=False)
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)


_STOP = object()


@dataclass
class InboxStats:
    commits: int = 0
    jobs: int = 0
    deliveries: int = 0
    failures: int = 0
    last_batch: int = 0
    max_batch: int = 0
    commit_seconds: float = 0.0  # total time spent in commits (write + fsync)


class Inbox:
    """The single writer of deliveries. Use `record` from the event loop.

    `db_path` is the SQLite file (the writer opens its own connection); `dedup_window`
    how far back a repeated delivery id counts as a repeat; `window` how long the writer
    waits after the first queued job for more to join the batch (0: take what is there).
    """

    def __init__(
        self,
        db_path: Path,
        *,
        dedup_window: float = 7 * 86400.0,
        window: float = 0.0,
        max_batch: int = 2000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db_path = Path(db_path)
        self.dedup_window = dedup_window
        self.window = window
        self.max_batch = max_batch
        self.clock = clock
        self.stats = InboxStats()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._error: str | None = None
        self._listeners: list[Callable[[], None]] = []
        self._on_commit: list[Callable[[int, int, float], None]] = []

    # ------------------------------------------------------------------ public

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` in the event loop after each commit that recorded deliveries
        (the worker's ``poke``)."""
        self._listeners.append(callback)

    def on_commit(self, callback: Callable[[int, int, float], None]) -> None:
        """Call ``callback(jobs, deliveries, seconds)`` from the writer thread after each
        commit (metrics)."""
        self._on_commit.append(callback)

    @property
    def healthy(self) -> bool:
        """False after the last commit failed or once closed."""
        return not self._closed and self._error is None

    @property
    def last_error(self) -> str | None:
        return self._error

    async def record(
        self, deliveries: Sequence[NewDelivery], *, dedup_key: str | None = None
    ) -> Recorded:
        """Durably record the deliveries of one request; returns once committed.

        When `dedup_key` was recorded within `dedup_window`, nothing is written and the
        result carries the original delivery id with ``duplicate=True``.
        """
        # Ids and JSON are made here, on the event loop, so the writer holds the GIL as
        # briefly as possible between its SQLite calls.
        rows = [
            prepare(d if d.dedup_key == dedup_key else dataclasses.replace(d, dedup_key=dedup_key))
            for d in deliveries
        ]
        return await self._submit(_Job("record", rows=rows, dedup_key=dedup_key))

    async def mark_verified(self, subscription_id: str, when: float) -> bool:
        """Stamp a subscription's ``verified_at`` (a ping arrived); False when unknown."""
        return await self._submit(
            _Job("verify", subscription_id=subscription_id, when=when)
        )

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            # Open here, not in the thread, so a bad path fails the caller loudly.
            conn = db.connect(self.db_path, check_same_thread=False)
            db.migrate(conn)
            self._thread = threading.Thread(
                target=self._run, args=(conn,), name="hookd-inbox", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the writer (idempotent)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    # ------------------------------------------------------------------ internals

    async def _submit(self, job: _Job) -> Any:
        if self._closed:
            raise InboxError("the inbox is closed (hookd is stopping)")
        if self._thread is None:
            self.start()
        loop = asyncio.get_running_loop()
        job.loop = loop
        job.future = loop.create_future()
        self._queue.put(job)
        return await job.future

    def _run(self, conn: sqlite3.Connection) -> None:
        deliveries = DeliveryStore(conn, clock=self.clock)
        subscriptions = SubscriptionStore(conn, clock=self.clock)
        stopping = False
        try:
            while not stopping:
                batch, stopping = self._take()
                if batch:
                    self._commit(batch, deliveries, subscriptions)
        finally:
            # Anything still queued (put after the stop marker) is refused, not lost silently.
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(job, _Job):
                    _resolve([(job, InboxError("the inbox is closed (hookd is stopping)"))])
            with contextlib.suppress(Exception):
                conn.close()

    def _take(self) -> tuple[list[_Job], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch: list[_Job] = [first]
        deadline = time.monotonic() + self.window
        while len(batch) < self.max_batch:
            try:
                if self.window > 0:
                    remaining = deadline - time.monotonic()
                    job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                else:
                    job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            batch.append(job)
        return batch, False

    def _commit(
        self, batch: list[_Job], deliveries: DeliveryStore, subscriptions: SubscriptionStore
    ) -> None:
        started = time.perf_counter()
        try:
            results = self._write(batch, deliveries, subscriptions)
        except Exception as exc:
            # One bad job must not fail the others: retry each alone.
            log.warning("inbox batch failed, retrying one by one", extra={"error": str(exc)})
            results = []
            for job in batch:
                try:
                    results.extend(self._write([job], deliveries, subscriptions))
                except Exception as one:
                    self.stats.failures += 1
                    self._error = str(one)
                    log.error("cannot record a delivery", extra={"error": str(one)})
                    results.append((job, InboxError(f"cannot record the delivery: {one}")))
        else:
            self._error = None
        seconds = time.perf_counter() - started
        recorded = sum(
            len(r.ids) for _, r in results if isinstance(r, Recorded) and not r.duplicate
        )
        self.stats.commits += 1
        self.stats.jobs += len(batch)
        self.stats.deliveries += recorded
        self.stats.last_batch = len(batch)
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        self.stats.commit_seconds += seconds
        for callback in self._on_commit:
            with contextlib.suppress(Exception):
                callback(len(batch), recorded, seconds)
        _resolve(results, self._listeners if recorded else ())

    def _write(
        self, batch: list[_Job], deliveries: DeliveryStore, subscriptions: SubscriptionStore
    ) -> list[tuple[_Job, Any]]:
        """One transaction for the whole batch, in as few SQLite statements as possible:
        BEGIN, one dedup lookup, one multi-row INSERT, COMMIT (+ rare ping stamps)."""
        conn = deliveries.conn
        results: list[tuple[_Job, Any]] = []
        keys = {job.dedup_key for job in batch if job.dedup_key is not None}
        rows: list[PreparedRow] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            known = deliveries.seen_many(sorted(keys), self.clock() - self.dedup_window) if keys else {}
            for job in batch:
                if job.kind == "verify":
                    results.append((job, subscriptions.mark_verified(job.subscription_id, job.when)))
                    continue
                key = job.dedup_key
                original = known.get(key) if key is not None else None
                if original is not None:
                    results.append((job, Recorded([original], duplicate=True)))
                    continue
                ids = [row[0] for row in job.rows]
                if key is not None and ids:
                    known[key] = ids[0]  # a second copy in this same batch is a repeat too
                rows.extend(job.rows)
                results.append((job, Recorded(ids)))
            if rows:
                deliveries.insert_prepared(rows)
            conn.execute("COMMIT")  # synchronous=FULL: returns after the WAL fsync
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        return results


def _resolve(results: list[tuple[_Job, Any]], listeners: Sequence[Callable[[], None]] = ()) -> None:
    """Wake the requests of a batch: one cross-thread call per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any]]] = {}
    for job, result in results:
        if job.loop is not None:
            by_loop.setdefault(job.loop, []).append((job, result))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_set_results, items, tuple(listeners))


def _set_results(items: list[tuple[_Job, Any]], listeners: tuple[Callable[[], None], ...]) -> None:
    for job, result in items:
        future = job.future
        if future is None or future.done():
            continue  # the request was cancelled (client gone); the row is recorded anyway
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
    for listener in listeners:
        try:
            listener()
        except Exception:
            log.exception("inbox listener failed")

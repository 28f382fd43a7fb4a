"""Group commit: durable deliveries without paying one fsync per request.

hookd must not answer 2xx before a delivery is on disk. One fsync per request would cap
ingest at the disk's fsync rate (3–5 ms here) and serialise requests behind each other.
The inbox therefore separates *writing* from *making durable*, and batches both:

1. **Write** (on the event loop, no I/O wait). Requests append their rows to a pending
   list; once per loop iteration everything pending is written in one transaction on the
   inbox's own SQLite connection — one dedup lookup, one multi-row INSERT — and committed
   with ``synchronous=NORMAL``: in WAL mode that appends the frames to the ``-wal`` file
   (the page cache) and does not fsync. This takes ~0.1–0.3 ms for a batch, so it runs on
   the loop itself: no thread hand-off per statement, no GIL ping-pong.
2. **Sync** (one dedicated thread). It fsyncs the ``-wal`` file whenever commits are
   waiting, then releases every request whose commit happened before that fsync started.
   While it fsyncs, the loop keeps committing the next batches, so one fsync covers
   everything that arrived in the meantime: the batch grows with the load by itself.

Why this is as safe as ``synchronous=FULL``: FULL means "fsync the WAL at each commit"; we
fsync the same file after the commit and answer only after that fsync returned. A commit's
frames are written to the WAL before COMMIT returns, so an fsync started afterwards makes
them durable. If a checkpoint moved them into the database file first, SQLite (NORMAL)
synced the WAL before checkpointing and the database after it. Automatic checkpoints are
off on the inbox connection (they would block the loop); a third thread runs a passive
checkpoint every second while deliveries arrive.

The writer also does the dedup check inside its transaction, so two concurrent copies of
one delivery cannot both be recorded, and stamps ping verifications. Another process
holding the write lock (the worker, the reconciler) never blocks the loop: the inbox
connection does not wait for locks; the batch is retried a moment later.

An inbox belongs to one event loop (the one of its first request).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
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

CHECKPOINT_INTERVAL = 1.0  # seconds between passive checkpoints while deliveries arrive
RETRY_LOCKED = 0.002  # seconds before retrying a batch when another process holds the lock


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
    queued_at: float = 0.0  # perf_counter when queued (statistics)


@dataclass
class InboxStats:
    commits: int = 0  # write transactions (one per batch)
    syncs: int = 0  # fsyncs of the WAL (each covers one or more commits)
    jobs: int = 0
    deliveries: int = 0
    failures: int = 0
    last_batch: int = 0
    max_batch: int = 0
    commit_seconds: float = 0.0  # total time in write transactions (on the loop)
    sync_seconds: float = 0.0  # total time in fsync
    latency_seconds: float = 0.0  # total time from queued to durable, over all jobs
    sync_wait_seconds: float = 0.0  # total time from a commit to the start of its fsync
    resolve_seconds: float = 0.0  # total time from the end of an fsync to the loop resuming


class Inbox:
    """The single writer of deliveries. Use `record` from the event loop.

    `db_path` is the SQLite file (the inbox opens its own connection); `dedup_window` how
    far back a repeated delivery id counts as a repeat; `window` how long to wait after
    the first pending request before writing (0: the next loop iteration).
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
        self._conn: sqlite3.Connection | None = None
        self._deliveries: DeliveryStore | None = None
        self._subscriptions: SubscriptionStore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Job] = []
        self._scheduled = False
        # Committed, waiting for an fsync: (commit sequence number, job, result).
        self._unsynced: list[tuple[int, _Job, Any]] = []
        self._committed_seq = 0
        self._sync_cond = threading.Condition()
        self._sync_requested = 0
        self._commit_times: list[tuple[int, float]] = []  # (seq, when) not yet being synced
        self._sync_thread: threading.Thread | None = None
        self._checkpoint_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._closed = False
        self._error: str | None = None
        self._listeners: list[Callable[[], None]] = []
        self._on_commit: list[Callable[[int, int, float], None]] = []

    # ------------------------------------------------------------------ public

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` in the event loop once new deliveries are durable (the
        worker's ``poke``)."""
        self._listeners.append(callback)

    def on_commit(self, callback: Callable[[int, int, float], None]) -> None:
        """Call ``callback(jobs, deliveries, seconds)`` after each write transaction."""
        self._on_commit.append(callback)

    @property
    def healthy(self) -> bool:
        """False after the last write or sync failed, or once closed."""
        return not self._closed and self._error is None

    @property
    def last_error(self) -> str | None:
        return self._error

    async def record(
        self, deliveries: Sequence[NewDelivery], *, dedup_key: str | None = None
    ) -> Recorded:
        """Durably record the deliveries of one request; returns once they are on disk.

        When `dedup_key` was recorded within `dedup_window`, nothing is written and the
        result carries the original delivery id with ``duplicate=True``.
        """
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
        """Open the connection and start the sync thread (done by the first `record`)."""
        if self._conn is not None or self._closed:
            return
        conn = db.connect(self.db_path, check_same_thread=False)
        db.migrate(conn)
        conn.execute("PRAGMA synchronous=NORMAL")  # durability comes from our own fsync
        conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in the sync thread
        conn.execute("PRAGMA busy_timeout=0")  # never block the loop on another writer
        self._conn = conn
        self._deliveries = DeliveryStore(conn, clock=self.clock)
        self._subscriptions = SubscriptionStore(conn, clock=self.clock)
        self._sync_thread = threading.Thread(target=self._sync_loop, name="hookd-inbox-sync",
                                             daemon=True)
        self._sync_thread.start()
        self._checkpoint_thread = threading.Thread(
            target=self._checkpoint_loop, name="hookd-inbox-checkpoint", daemon=True)
        self._checkpoint_thread.start()

    async def aclose(self) -> None:
        """Write and sync what is pending, then stop."""
        while self._pending or self._unsynced:
            await asyncio.sleep(0.005)
            if self._error is not None and not self._pending:
                break
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the sync thread and close the connection (idempotent). Requests still
        pending are refused; use `aclose` from the loop to finish them first."""
        self._closed = True
        self._stopping.set()
        thread = self._sync_thread
        if thread is not None:
            with self._sync_cond:
                self._sync_cond.notify_all()
            thread.join(timeout)
            self._sync_thread = None
        if self._checkpoint_thread is not None:
            self._checkpoint_thread.join(timeout)
            self._checkpoint_thread = None
        refused = InboxError("the inbox is closed (hookd is stopping)")
        for job in self._pending:
            self._fail_soon(job, refused)
        self._pending = []
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ writing (loop)

    async def _submit(self, job: _Job) -> Any:
        if self._closed:
            raise InboxError("the inbox is closed (hookd is stopping)")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Rebind only when idle: the futures of one batch all belong to one loop.
            if self._loop is not None and not self._loop.is_closed() and (
                self._pending or self._unsynced
            ):
                raise InboxError("the inbox is busy on another event loop")
            self._loop, self._scheduled = loop, False
        if self._conn is None:
            self.start()
        job.future = loop.create_future()
        job.queued_at = time.perf_counter()
        self._pending.append(job)
        if not self._scheduled:
            self._scheduled = True
            if self.window > 0:
                loop.call_later(self.window, self._write_pending)
            else:
                loop.call_soon(self._write_pending)
        return await job.future

    def _write_pending(self) -> None:
        self._scheduled = False
        if self._closed or not self._pending:
            return
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        if self._pending:
            self._schedule(0.0)
        started = time.perf_counter()
        try:
            results = self._write(batch)
        except sqlite3.OperationalError as exc:
            if _locked(exc):  # another process is writing: try again shortly
                self._pending[:0] = batch
                self._schedule(RETRY_LOCKED)
                return
            results = self._write_one_by_one(batch, exc)
        except Exception as exc:
            results = self._write_one_by_one(batch, exc)
        seconds = time.perf_counter() - started
        self._committed_seq += 1
        seq = self._committed_seq
        recorded = 0
        for job, result in results:
            if isinstance(result, BaseException):
                self._fail_soon(job, result)
                continue
            if isinstance(result, Recorded) and not result.duplicate:
                recorded += len(result.ids)
            self._unsynced.append((seq, job, result))
        st = self.stats
        st.commits += 1
        st.jobs += len(batch)
        st.deliveries += recorded
        st.last_batch = len(batch)
        st.max_batch = max(st.max_batch, len(batch))
        st.commit_seconds += seconds
        for callback in self._on_commit:
            with contextlib.suppress(Exception):
                callback(len(batch), recorded, seconds)
        with self._sync_cond:
            self._sync_requested = seq
            self._commit_times.append((seq, time.perf_counter()))
            self._sync_cond.notify()

    def _schedule(self, delay: float) -> None:
        if self._scheduled or self._loop is None:
            return
        self._scheduled = True
        if delay > 0:
            self._loop.call_later(delay, self._write_pending)
        else:
            self._loop.call_soon(self._write_pending)

    def _write_one_by_one(self, batch: list[_Job], first: Exception) -> list[tuple[_Job, Any]]:
        """One bad job must not fail the others: retry each in its own transaction."""
        log.warning("inbox batch failed, retrying one by one", extra={"error": str(first)})
        results: list[tuple[_Job, Any]] = []
        for job in batch:
            try:
                results.extend(self._write([job]))
            except Exception as exc:
                self.stats.failures += 1
                log.error("cannot record a delivery", extra={"error": str(exc)})
                results.append((job, InboxError(f"cannot record the delivery: {exc}")))
        return results

    def _write(self, batch: list[_Job]) -> list[tuple[_Job, Any]]:
        """One transaction for the whole batch, in as few SQLite statements as possible:
        BEGIN, one dedup lookup, one multi-row INSERT, COMMIT (+ rare ping stamps)."""
        conn, deliveries, subscriptions = self._conn, self._deliveries, self._subscriptions
        assert conn is not None and deliveries is not None and subscriptions is not None
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
            conn.execute("COMMIT")  # frames appended to the WAL; the sync thread fsyncs them
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        return results

    def _fail_soon(self, job: _Job, exc: BaseException) -> None:
        future = job.future
        if future is not None and not future.done():
            future.set_exception(exc)

    # ------------------------------------------------------------------ syncing (thread)

    def _sync_loop(self) -> None:
        synced = 0
        wal = Path(str(self.db_path) + "-wal")
        fd: int | None = None
        try:
            while True:
                with self._sync_cond:
                    while self._sync_requested <= synced and not self._closed:
                        self._sync_cond.wait()
                    target = self._sync_requested
                    if target <= synced and self._closed:
                        return
                    started = time.perf_counter()
                    for _, committed in self._commit_times:
                        self.stats.sync_wait_seconds += started - committed
                    self._commit_times = [c for c in self._commit_times if c[0] > target]
                error: str | None = None
                try:
                    fd = _fresh_fd(wal, fd)
                    _datasync(fd)
                except OSError as exc:
                    error = f"cannot sync {wal}: {exc}"
                done = time.perf_counter()
                self.stats.syncs += 1
                self.stats.sync_seconds += done - started
                synced = target
                self._release(target, error, done)
        finally:
            if fd is not None:
                os.close(fd)

    def _checkpoint_loop(self) -> None:
        """Passive checkpoints (they never block writers) so the WAL does not grow forever;
        in their own thread so that they never delay an fsync that requests wait for."""
        conn: sqlite3.Connection | None = None
        done = 0
        try:
            while not self._stopping.wait(CHECKPOINT_INTERVAL):
                if self.stats.syncs == done:
                    continue
                done = self.stats.syncs
                try:
                    if conn is None:
                        conn = db.connect(self.db_path, check_same_thread=False)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    log.debug("checkpoint failed", extra={"error": str(exc)})
        finally:
            if conn is not None:
                conn.close()

    def _release(self, target: int, error: str | None, done: float) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(self._synced, target, error, done)

    def _synced(self, target: int, error: str | None, done: float = 0.0) -> None:
        """On the loop: resolve every request committed at or before `target`."""
        now = time.perf_counter()
        if done:
            self.stats.resolve_seconds += now - done
        ready = [u for u in self._unsynced if u[0] <= target]
        self._unsynced = [u for u in self._unsynced if u[0] > target]
        self._error = error
        fresh = False
        for _, job, result in ready:
            self.stats.latency_seconds += now - job.queued_at
            future = job.future
            if future is None or future.done():
                continue  # the request was cancelled (client gone); the row stays recorded
            if error is not None:
                # Committed but maybe not durable: refuse, the upstream retries (and the
                # dedup key makes the retry answer with this same delivery if it survived).
                future.set_exception(InboxError(error))
            else:
                fresh = fresh or (isinstance(result, Recorded) and not result.duplicate)
                future.set_result(result)
        if fresh:
            for listener in self._listeners:
                try:
                    listener()
                except Exception:
                    log.exception("inbox listener failed")


# What SQLite itself calls for synchronous=FULL on Linux: data and size, not timestamps.
_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def _locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _fresh_fd(wal: Path, fd: int | None) -> int:
    """An fd on the current ``-wal`` file (reopened if SQLite replaced the file)."""
    if fd is not None:
        try:
            if os.stat(wal).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    fd = os.open(wal, os.O_RDWR)
    # A new WAL file: make its directory entry durable too.
    dir_fd = os.open(wal.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return fd

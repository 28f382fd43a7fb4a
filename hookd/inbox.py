"""Group commit: durable deliveries without paying one fsync per request.

hookd must not answer 2xx before a delivery is on disk. One fsync per request would cap
ingest at the disk's fsync rate (3–5 ms here) and serialise requests behind each other.
The inbox therefore separates *writing* from *making durable*, and batches both:

1. **Write** (one writer thread). The loop hands everything that arrived in one loop
   iteration to the writer thread in one go; the writer makes the rows (ids, headers as
   JSON) and writes everything queued in one transaction on the inbox's own SQLite
   connection — one dedup lookup, one multi-row INSERT — committed with
   ``synchronous=NORMAL``: in WAL mode that appends the frames to the ``-wal`` file (the
   page cache) and does not fsync. This used to run on the loop (~1 ms a batch); in a
   thread, SQLite's C work runs while the loop parses and verifies the next requests
   (the sqlite3 module releases the GIL around each statement).
2. **Sync** (one dedicated thread). It fsyncs the ``-wal`` file whenever commits are
   waiting, then releases every request whose commit happened before that fsync started.
   While it fsyncs, the writer keeps committing the next batches, so one fsync covers
   everything that arrived in the meantime: the batch grows with the load by itself.

Why this is as safe as ``synchronous=FULL``: FULL means "fsync the WAL at each commit"; we
fsync the same file after the commit and answer only after that fsync returned. A commit's
frames are written to the WAL before COMMIT returns, so an fsync started afterwards makes
them durable. If a checkpoint moved them into the database file first, SQLite (NORMAL)
synced the WAL before checkpointing and the database after it. Automatic checkpoints are
off on the inbox connection (they would delay the writer); another thread runs a passive
checkpoint every second while deliveries arrive.

The writer also does the dedup check inside its transaction, so two concurrent copies of
one delivery cannot both be recorded, and stamps ping verifications. Another process
holding the write lock (the worker, the reconciler) never blocks the loop: only the
writer thread waits (and retries); after LOCKED_GIVE_UP seconds the batch is refused
with 503, which the upstream retries.

An inbox belongs to one event loop (the one of its first request).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
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

CHECKPOINT_INTERVAL = 1.0  # seconds between passive checkpoints while deliveries arrive
RETRY_LOCKED = 0.002  # seconds before retrying a batch when another process holds the lock
BUSY_TIMEOUT = 0.1  # seconds SQLite itself waits for another process's write lock
LOCKED_GIVE_UP = 10.0  # seconds of a held lock after which a batch is refused (503, retried)


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
    deliveries: Sequence[NewDelivery] = ()
    rows: Sequence[PreparedRow] = ()  # made from `deliveries` by the writer thread
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
    commit_seconds: float = 0.0  # total time in write transactions (writer thread)
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
        self._pending: list[_Job] = []  # loop only: arrived in this loop iteration
        self._scheduled = False
        self._outstanding = 0  # loop only: requests waiting for an answer
        # Batches handed to the writer thread (None: stop). A SimpleQueue: one C call
        # per batch on the loop, no Python-level lock or condition.
        self._queue: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._writer_thread: threading.Thread | None = None
        self._commit_info: list[tuple[int, int, float]] = []  # for on_commit, on the loop
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
        return await self._submit(_Job("record", deliveries=deliveries, dedup_key=dedup_key))

    async def mark_verified(self, subscription_id: str, when: float) -> bool:
        """Stamp a subscription's ``verified_at`` (a ping arrived); False when unknown."""
        return await self._submit(
            _Job("verify", subscription_id=subscription_id, when=when)
        )

    def start(self) -> None:
        """Open the connection and start the threads (done by the first `record`)."""
        if self._conn is not None or self._closed:
            return
        conn = db.connect(self.db_path, check_same_thread=False)
        db.migrate(conn)
        conn.execute("PRAGMA synchronous=NORMAL")  # durability comes from our own fsync
        conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in their own thread
        # Another process holding the write lock (worker, reconciler) makes the writer
        # thread wait a little, never the loop; see _write_batch for longer waits.
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        self._conn = conn
        self._deliveries = DeliveryStore(conn, clock=self.clock)
        self._subscriptions = SubscriptionStore(conn, clock=self.clock)
        self._writer_thread = threading.Thread(target=self._writer_loop, name="hookd-inbox-write",
                                               daemon=True)
        self._writer_thread.start()
        self._sync_thread = threading.Thread(target=self._sync_loop, name="hookd-inbox-sync",
                                             daemon=True)
        self._sync_thread.start()
        self._checkpoint_thread = threading.Thread(
            target=self._checkpoint_loop, name="hookd-inbox-checkpoint", daemon=True)
        self._checkpoint_thread.start()

    async def aclose(self) -> None:
        """Write and sync what is pending, then stop."""
        while self._outstanding:
            await asyncio.sleep(0.005)
            if self._error is not None and not self._pending and self._queue.empty():
                break
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the threads and close the connection (idempotent). Requests not yet
        written are refused; use `aclose` from the loop to finish them first."""
        self._closed = True
        self._stopping.set()
        self._queue.put(None)
        if self._writer_thread is not None:
            self._writer_thread.join(timeout)
            self._writer_thread = None
        with self._sync_cond:
            self._sync_cond.notify_all()
        if self._sync_thread is not None:
            self._sync_thread.join(timeout)
            self._sync_thread = None
        if self._checkpoint_thread is not None:
            self._checkpoint_thread.join(timeout)
            self._checkpoint_thread = None
        refused = InboxError("the inbox is closed (hookd is stopping)")
        left, self._pending = self._pending, []
        while True:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                break
            left += batch or []
        self._post(self._fail_jobs, [(job, refused) for job in left])
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ loop side

    async def _submit(self, job: _Job) -> Any:
        if self._closed:
            raise InboxError("the inbox is closed (hookd is stopping)")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Rebind only when idle: the futures the threads resolve all belong to one loop.
            if self._loop is not None and not self._loop.is_closed() and self._outstanding:
                raise InboxError("the inbox is busy on another event loop")
            self._loop, self._scheduled = loop, False
        if self._conn is None:
            self.start()
        job.future = loop.create_future()
        job.queued_at = time.perf_counter()
        self._outstanding += 1
        self._pending.append(job)
        if not self._scheduled:
            self._scheduled = True
            if self.window > 0:
                loop.call_later(self.window, self._hand_over)
            else:
                loop.call_soon(self._hand_over)
        try:
            return await job.future
        finally:
            self._outstanding -= 1

    def _hand_over(self) -> None:
        """Once per loop iteration: give what arrived to the writer thread in one go."""
        self._scheduled = False
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self._queue.put(batch)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback(*args)` on the inbox's loop (from any thread)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(callback, *args)

    def _fail_jobs(self, failed: list[tuple[_Job, BaseException]]) -> None:
        for job, exc in failed:
            future = job.future
            if future is not None and not future.done():
                future.set_exception(exc)

    def _synced(
        self, ready: list[tuple[_Job, Any]], commits: list[tuple[int, int, float]],
        error: str | None, done: float = 0.0,
    ) -> None:
        """On the loop: resolve the requests whose commits the last fsync covered."""
        now = time.perf_counter()
        if done:
            self.stats.resolve_seconds += now - done
        self._error = error
        for jobs, recorded, seconds in commits:
            for callback in self._on_commit:
                with contextlib.suppress(Exception):
                    callback(jobs, recorded, seconds)
        fresh = False
        for job, result in ready:
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

    # ------------------------------------------------------------------ writing (thread)

    def _writer_loop(self) -> None:
        get = self._queue.get
        carry: list[_Job] = []
        while True:
            batch = carry or get()
            carry = []
            while batch is not None and len(batch) < self.max_batch:
                try:  # everything handed over meanwhile goes into the same transaction
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch += more
            if batch is None or self._closed:
                if batch:
                    self._queue.put(batch)  # close() refuses what is still queued
                return
            if len(batch) > self.max_batch:
                batch, carry = batch[: self.max_batch], batch[self.max_batch:]
            self._write_batch(batch)

    def _write_batch(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        deadline = started + LOCKED_GIVE_UP
        while True:
            try:
                results = self._write(batch)
                break
            except sqlite3.OperationalError as exc:
                if _locked(exc) and time.perf_counter() < deadline and not self._closed:
                    time.sleep(RETRY_LOCKED)  # another process is writing: try again shortly
                    continue
                results = self._write_one_by_one(batch, exc)
                break
            except Exception as exc:
                results = self._write_one_by_one(batch, exc)
                break
        seconds = time.perf_counter() - started
        failed: list[tuple[_Job, BaseException]] = []
        committed: list[tuple[_Job, Any]] = []
        recorded = 0
        for job, result in results:
            if isinstance(result, BaseException):
                failed.append((job, result))
                continue
            if isinstance(result, Recorded) and not result.duplicate:
                recorded += len(result.ids)
            committed.append((job, result))
        if failed:
            self._post(self._fail_jobs, failed)
        st = self.stats
        st.commits += 1
        st.jobs += len(batch)
        st.deliveries += recorded
        st.last_batch = len(batch)
        st.max_batch = max(st.max_batch, len(batch))
        st.commit_seconds += seconds
        with self._sync_cond:
            self._committed_seq += 1
            seq = self._committed_seq
            self._unsynced.extend((seq, job, result) for job, result in committed)
            self._commit_info.append((len(batch), recorded, seconds))
            self._sync_requested = seq
            self._commit_times.append((seq, time.perf_counter()))
            self._sync_cond.notify()

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
        for job in batch:
            if job.kind == "record" and not job.rows:
                key = job.dedup_key
                job.rows = [
                    prepare(d if d.dedup_key == key else dataclasses.replace(d, dedup_key=key))
                    for d in job.deliveries
                ]
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
                with self._sync_cond:
                    ready = [(job, result) for seq, job, result in self._unsynced if seq <= target]
                    self._unsynced = [u for u in self._unsynced if u[0] > target]
                    commits, self._commit_info = self._commit_info, []
                self._post(self._synced, ready, commits, error, done)
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

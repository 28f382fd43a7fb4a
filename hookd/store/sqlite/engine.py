"""The inbox's writer: the threads that record deliveries durably.

`hookd.store.sqlite.inbox.Inbox` (the event loop's side) hands batches of jobs to the `Engine` and gets
each job's result back through the engine's ``deliver`` callback. Why it is built so:

1. **Write** (one writer thread). It takes everything handed over so far, examines each
   record job's body (`hookd.callbacks.payload`: JSON check, schema check under ``reject``, batch
   split — work that used to sit on the event loop) and writes the batch in **one**
   SQLite transaction on the engine's own connection: one dedup lookup, one multi-row
   INSERT, COMMIT with
   ``synchronous=NORMAL`` — in WAL mode that appends the frames to the ``-wal`` file (the
   page cache) and does not fsync. SQLite's C work runs without the GIL, beside the loop.
2. **Sync** (one dedicated thread). It fdatasyncs the ``-wal`` file whenever commits are
   waiting, then releases every job whose commit happened before that fsync started.
   While it fsyncs, the writer commits the next batches, so one fsync covers everything
   that arrived in the meantime: batches grow with the load by themselves.
3. **Checkpoint** (one thread, four times a second while deliveries arrive): a passive
   checkpoint; once the WAL is long, the writer copies the last frames between two
   batches so that SQLite starts the WAL over (REWIND_FRAMES) rather than let it grow for
   as long as the load lasts. Automatic checkpoints are off (they would delay the writer).

Why this is as safe as ``synchronous=FULL``: FULL means "fsync the WAL at each commit";
the sync thread fsyncs the same file after the commit, and a job is answered only after
that fsync returned. A commit's frames are in the WAL before COMMIT returns, so an fsync
started afterwards makes them durable; if a checkpoint moved them into the database file
first, SQLite synced the WAL before checkpointing and the database after it.

The writer does the dedup check inside its transaction, so two concurrent copies of one
delivery cannot both be recorded, and stamps ping verifications. Another process holding
the write lock (the worker, the reconciler) delays only the writer thread, which
retries; LOCKED_GIVE_UP seconds after the oldest request of the batch arrived, the batch
is refused (the listener answers 503, which the upstream retries). Counted from the
request's arrival, not from the batch's first attempt: requests that queued behind a
stuck batch used to get a full wait of their own after it (answers after 14.6 s).

The measurements behind these choices, and what was tried and taken out (an fsync'd log
beside SQLite, the writer in a child process, AIO fsyncs, other batch shapes, switch
intervals, no checkpoints), are in docs/adr/0001-0004.
"""

from __future__ import annotations

import contextlib
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

from hookd.callbacks import payload
from hookd.store import errors
from hookd.store.bodies import examined
from hookd.store.records import Recorded
from hookd.store.sqlite import db
from hookd.store.sqlite.deliveries import (
    DeliveryStore,
    NewDelivery,
    PreparedRow,
    prepare,
)
from hookd.store.sqlite.subscriptions import SubscriptionStore

log = logging.getLogger("hookd.store.sqlite.inbox")

# Seconds between passive checkpoints while deliveries arrive: often, so that each one
# (and the database fsync it ends with) is small and stalls the WAL fsyncs requests wait
# for only briefly (docs/adr/0003-wal-checkpoints-and-rewind.md).
CHECKPOINT_INTERVAL = 0.25
# WAL frames (4 KiB each) after which the WAL is started over. SQLite writes from the
# start of the WAL again only when a write transaction begins while every frame is
# checkpointed and no reader uses the WAL. With the writer committing every few
# milliseconds, checkpoints in another thread never end at such a moment, so the WAL
# would grow for as long as deliveries keep coming. A RESTART checkpoint from the
# checkpoint thread rewinds it but holds the write lock, waiting for the writer through
# SQLite's busy handler. So the checkpoint thread copies the frames (a second pass for
# those appended during the first) and asks the writer to copy the last few itself,
# between two batches; its next transaction starts the WAL over, and the WAL stays near
# one checkpoint interval's worth of deliveries (docs/adr/0003).
REWIND_FRAMES = 1024
RETRY_LOCKED = 0.002  # seconds before retrying a batch when another process holds the lock
BUSY_TIMEOUT = 0.1  # seconds SQLite itself waits for another process's write lock
# Seconds after a request arrived at which its batch, still waiting for another process's
# write lock, is refused (503, retried): the last busy wait, the hand-back to the loop and
# the answer fit in the rest of errors.LOCK_WAIT (the documented 10 s).
LOCKED_GIVE_UP = errors.LOCK_WAIT - 0.5


class InboxError(errors.Unavailable):
    """The delivery could not be recorded (disk full, store locked, inbox closed)."""


@dataclass(slots=True)
class Job:
    """One request's work: record its deliveries, or stamp a ping verification."""

    kind: str  # "record" | "verify"
    deliveries: Sequence[NewDelivery] = ()
    dedup_key: str | None = None
    subscription_id: str = ""
    when: float = 0.0
    # examine: deliveries[0] holds the raw body; parse it, check it against `check` (a
    # routing.SchemaCheck) under `policy`, split it when `batch` (hookd.callbacks.payload) first.
    examine: bool = False
    check: Any = None
    policy: str = "off"
    batch: bool = False
    rows: list[PreparedRow] = field(default_factory=list)  # made by the writer thread
    future: Any = field(default=None, repr=False)  # the listener's, resolved on its loop
    queued: float = 0.0  # perf_counter when queued (statistics)


# A job's outcome: Recorded, a bool (verify: whether the subscription is known), or the
# exception to raise (InboxError, hookd.callbacks.payload.Refused).
Outcome = tuple[Job, Any]
CommitInfo = tuple[int, int, float]  # (jobs, deliveries recorded, seconds) of one transaction
# deliver(outcomes, commits, error): called from the engine's threads.
Deliver = Callable[[list[Outcome], list[CommitInfo], "str | None"], None]


@dataclass
class InboxStats:
    commits: int = 0  # write transactions (one per batch)
    syncs: int = 0  # fdatasyncs of the WAL (each covers one or more commits)
    wal_rewinds: int = 0  # times the WAL was seen started over (REWIND_FRAMES)
    jobs: int = 0
    deliveries: int = 0
    failures: int = 0
    last_batch: int = 0
    max_batch: int = 0
    commit_seconds: float = 0.0  # total time in write transactions (writer thread)
    sync_seconds: float = 0.0  # total time in fsync
    sync_wait_seconds: float = 0.0  # total time from a commit to the start of its fsync
    latency_seconds: float = 0.0  # listener side: total time from queued to answered
    resolve_seconds: float = 0.0  # listener side: time from the engine's result to the loop
    # The last write transaction's failure (disk full, lock given up), None once one
    # commits again: what `hookd.store.sqlite.health` reports between probes.
    write_error: str | None = None


class Engine:
    """The writer, sync and checkpoint threads of one inbox (see the module docstring)."""

    def __init__(
        self, db_path: Path, deliver: Deliver, *, dedup_window: float, max_batch: int = 2000,
        clock: Callable[[], float] = time.time, stats: InboxStats | None = None,
        datasync: Callable[[int], None] | None = None, locked_give_up: float = LOCKED_GIVE_UP,
    ) -> None:
        self.db_path = Path(db_path)
        # How the WAL is made durable (an fd): os.fdatasync; a test injects one that blocks.
        self._datasync = datasync or _datasync
        self.locked_give_up = locked_give_up
        self.dedup_window = dedup_window
        self.max_batch = max_batch
        self.clock = clock
        self.stats = stats or InboxStats()
        self._deliver_to = deliver
        self._conn: sqlite3.Connection | None = None
        self._deliveries: DeliveryStore | None = None
        self._subscriptions: SubscriptionStore | None = None
        self._queue: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self._writer_thread: threading.Thread | None = None
        self._commit_info: list[CommitInfo] = []
        # Committed, waiting for an fsync: (commit sequence number, outcome).
        self._unsynced: list[tuple[int, Outcome]] = []
        self._sync_cond = threading.Condition()
        self._deliver_lock = threading.Lock()  # results leave in the order they are made
        self._committed = 0  # sequence number of the writer's last commit
        self._commit_times: list[tuple[int, float]] = []  # (seq, when), for statistics
        self._sync_thread: threading.Thread | None = None
        self._checkpoint_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._closed = False
        # Set by the checkpoint thread, cleared by the writer: checkpoint the WAL's last
        # frames before the next batch (REWIND_FRAMES).
        self._rewind = False

    def start(self) -> None:
        """Open the store and start the threads."""
        conn = db.connect(self.db_path, check_same_thread=False)
        db.migrate(conn)
        conn.execute("PRAGMA synchronous=NORMAL")  # durability comes from our own fsync
        conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in their own thread
        # Another process holding the write lock (worker, reconciler) makes the writer
        # thread wait a little; see _write_batch for longer waits.
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        self._conn = conn
        self._deliveries = DeliveryStore(conn, clock=self.clock)
        self._subscriptions = SubscriptionStore(conn, clock=self.clock)
        self._writer_thread = threading.Thread(
            target=self._serve, name="hookd-inbox-write", daemon=True)
        self._writer_thread.start()
        self._sync_thread = threading.Thread(target=self._sync_loop, name="hookd-inbox-sync",
                                             daemon=True)
        self._sync_thread.start()
        self._checkpoint_thread = threading.Thread(
            target=self._checkpoint_loop, name="hookd-inbox-checkpoint", daemon=True)
        self._checkpoint_thread.start()

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs for the writer thread (any thread; one C call)."""
        self._queue.put(jobs)

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, stop the threads (idempotent)."""
        if self._closed:
            return
        self._queue.put(None)  # the writer thread finishes everything queued before it
        if self._writer_thread is not None:
            self._writer_thread.join(timeout)
            self._writer_thread = None
        self._closed = True
        self._stopping.set()
        with self._sync_cond:
            self._sync_cond.notify_all()
        if self._sync_thread is not None:
            self._sync_thread.join(timeout)
            self._sync_thread = None
        if self._checkpoint_thread is not None:
            self._checkpoint_thread.join(timeout)
            self._checkpoint_thread = None
        left: list[Job] = []
        while True:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                break
            left += batch or []
        refused = InboxError("the inbox is closed (hookd is stopping)")
        self._deliver([(job, refused) for job in left], [], None)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _deliver(self, outcomes: list[Outcome], commits: list[CommitInfo], error: str | None) -> None:
        if not outcomes and not commits and error is None:
            return
        with self._deliver_lock:
            try:
                self._deliver_to(outcomes, commits, error)
            except Exception:
                log.exception("cannot hand inbox results back")

    # ------------------------------------------------------------------ writing (thread)

    def _serve(self) -> None:
        """The writer loop, until `close`: take what was handed over, everything handed
        over meanwhile too (one transaction for all of it: group commit), examine the
        bodies, write."""
        carry: list[Job] = []
        more = True
        while more or carry:
            batch, carry = carry, []
            if not batch:
                got = self._queue.get()
                if got is None:
                    more = False
                else:
                    batch = got
            while more and batch and len(batch) < self.max_batch:
                try:
                    got = self._queue.get_nowait()
                except queue.Empty:
                    break
                if got is None:
                    more = False
                else:
                    batch += got
            if len(batch) > self.max_batch:
                batch, carry = batch[: self.max_batch], batch[self.max_batch:]
            if batch:
                self._write_batch(self._examined(batch))

    def _examined(self, batch: list[Job]) -> list[Job]:
        """The jobs to write: record jobs' bodies examined (`hookd.callbacks.payload`), the refused
        ones answered."""
        refused: list[Outcome] = []
        accepted: list[Job] = []
        for job in batch:
            if job.examine and job.kind == "record":
                try:
                    _examine(job)
                except payload.Refused as exc:
                    refused.append((job, exc))
                    continue
            accepted.append(job)
        if refused:
            self._deliver(refused, [], None)
        return accepted

    def _write_batch(self, batch: list[Job]) -> None:
        if not batch:
            return
        if self._rewind:
            self._rewind = False
            self._checkpoint_last_frames()
        started = time.perf_counter()
        arrived = min((job.queued for job in batch if job.queued), default=started)
        deadline = arrived + self.locked_give_up
        while True:
            try:
                results = self._write(batch)
                break
            except sqlite3.OperationalError as exc:
                if not _locked(exc):
                    results = self._write_one_by_one(batch, exc)
                    break
                if time.perf_counter() + BUSY_TIMEOUT < deadline:
                    time.sleep(RETRY_LOCKED)  # another process is writing: try again shortly
                    continue
                # Not one by one: each would wait for the same lock again.
                self.stats.failures += len(batch)
                log.error("store locked by another process; refusing a batch",
                          extra={"requests": len(batch), "error": str(exc)})
                refused = InboxError(f"the store is locked by another process: {exc}")
                results = [(job, refused) for job in batch]
                break
            except Exception as exc:
                results = self._write_one_by_one(batch, exc)
                break
        seconds = time.perf_counter() - started
        failed: list[Outcome] = []
        committed: list[Outcome] = []
        recorded = 0
        for job, result in results:
            if isinstance(result, BaseException):
                failed.append((job, result))
                continue
            if isinstance(result, Recorded) and not result.duplicate:
                recorded += len(result.ids)
            committed.append((job, result))
        st = self.stats
        # Before the answers leave: whoever got a 503 then finds the store unready.
        if committed:
            st.write_error = None
        elif failed:
            st.write_error = str(failed[-1][1])
        if failed:
            self._deliver(failed, [], None)
        st.commits += 1
        st.jobs += len(batch)
        st.deliveries += recorded
        st.last_batch = len(batch)
        st.max_batch = max(st.max_batch, len(batch))
        st.commit_seconds += seconds
        with self._sync_cond:
            # Answered once an fsync covers this commit (for a repeat: its original's,
            # made by this or an earlier commit).
            self._committed += 1
            self._unsynced.extend((self._committed, outcome) for outcome in committed)
            self._commit_info.append((len(batch), recorded, seconds))
            self._commit_times.append((self._committed, time.perf_counter()))
            self._sync_cond.notify()

    def _checkpoint_last_frames(self) -> None:
        """Between two batches: checkpoint what the checkpoint thread left, so that the
        next write transaction starts the WAL over (REWIND_FRAMES). A reader still on
        the WAL only postpones that to a later interval."""
        assert self._conn is not None
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.debug("checkpoint failed", extra={"error": str(exc)})

    def _write_one_by_one(self, batch: list[Job], first: Exception) -> list[tuple[Job, Any]]:
        """One bad job must not fail the others: retry each in its own transaction."""
        log.warning("inbox batch failed, retrying one by one", extra={"error": str(first)})
        results: list[tuple[Job, Any]] = []
        for job in batch:
            try:
                results.extend(self._write([job]))
            except Exception as exc:
                self.stats.failures += 1
                log.error("cannot record a delivery", extra={"error": str(exc)})
                results.append((job, InboxError(f"cannot record the delivery: {exc}")))
        return results

    def _write(self, batch: list[Job]) -> list[tuple[Job, Any]]:
        """One transaction for the whole batch, in as few SQLite statements as possible:
        BEGIN, one dedup lookup, one multi-row INSERT, COMMIT (+ rare ping stamps)."""
        conn, deliveries, subscriptions = self._conn, self._deliveries, self._subscriptions
        assert conn is not None and deliveries is not None and subscriptions is not None
        for job in batch:
            if job.kind == "record" and not job.rows:
                job.rows = [prepare(d, job.dedup_key) for d in job.deliveries]
        results: list[tuple[Job, Any]] = []
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

    def _sync_loop(self) -> None:
        synced = 0
        wal = db.wal_path(self.db_path)
        fd: int | None = None
        try:
            while True:
                with self._sync_cond:
                    while self._committed <= synced and not self._closed:
                        self._sync_cond.wait()
                    target = self._committed
                    if target <= synced and self._closed:
                        return
                    started = time.perf_counter()
                    for seq, committed in self._commit_times:
                        if seq <= target:
                            self.stats.sync_wait_seconds += started - committed
                    self._commit_times = [c for c in self._commit_times if c[0] > target]
                error: str | None = None
                try:
                    fd = _fresh_fd(wal, fd)
                    self._datasync(fd)
                except OSError as exc:
                    error = f"cannot sync {wal}: {exc}"
                done = time.perf_counter()
                self.stats.syncs += 1
                self.stats.sync_seconds += done - started
                synced = target
                with self._sync_cond:
                    ready = [r for seq, r in self._unsynced if seq <= target]
                    self._unsynced = [u for u in self._unsynced if u[0] > target]
                    commits, self._commit_info = self._commit_info, []
                if error is not None:
                    # Committed but maybe not durable: refuse, the upstream retries (and the
                    # dedup key makes the retry answer with this same delivery if it survived).
                    failure = InboxError(error)
                    ready = [(job, failure) for job, _ in ready]
                self._deliver(ready, commits, error)
        finally:
            if fd is not None:
                os.close(fd)

    def _checkpoint_loop(self) -> None:
        """Passive checkpoints (they never block writers) so that the WAL does not grow for
        ever, in their own thread so that they never delay an fsync requests wait for;
        once the WAL is long, a second pass and a request to the writer to finish the job
        (REWIND_FRAMES)."""
        conn: sqlite3.Connection | None = None
        done = 0
        last_frames = 0
        try:
            while not self._stopping.wait(CHECKPOINT_INTERVAL):
                if self.stats.commits == done:
                    continue
                done = self.stats.commits
                try:
                    if conn is None:
                        conn = db.connect(self.db_path, check_same_thread=False)
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames < last_frames:
                        self.stats.wal_rewinds += 1
                    last_frames = frames
                    if frames >= REWIND_FRAMES:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        self._rewind = True
                except sqlite3.Error as exc:
                    log.debug("checkpoint failed", extra={"error": str(exc)})
        finally:
            if conn is not None:
                conn.close()


def _examine(job: Job) -> None:
    """Replace the job's raw delivery by the deliveries it becomes (`hookd.store.bodies`)."""
    job.deliveries = examined(job.deliveries[0], job.check, job.policy, job.batch)


def _locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


# What SQLite itself calls for synchronous=FULL on Linux: data and size, not timestamps.
_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def _fresh_fd(wal: Path, fd: int | None) -> int:
    """An fd on the current ``-wal`` file (reopened if SQLite replaced the file).

    Only the ``-wal`` file is opened here, never the database file: closing any descriptor
    of a file drops every POSIX lock the process holds on it, SQLite's included (SQLite
    locks the database file and ``-shm``, not ``-wal``).
    """
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

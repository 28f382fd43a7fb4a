"""The inbox's writer: the threads that record deliveries durably, in whichever process.

`hookd.inbox.Inbox` (the event loop's side) hands batches of jobs to an `Engine` and gets
each job's result back through the engine's ``deliver`` callback. The engine runs in
threads of the listener's process (``inbox.mode: inline``, the default) or in a child
process (`hookd.inbox_process`, ``process``), the same in both; why it is built this way:

1. **Write** (one writer thread). In one SQLite transaction on the engine's own
   connection the writer looks a batch's dedup keys up (one query), appends the new rows
   to the inbox log (`hookd.inboxlog`: one ``write`` of the batch's frames), wakes the
   sync thread, and only then inserts the rows (one multi-row INSERT) and commits with
   ``synchronous=NORMAL`` — in WAL mode that appends to the ``-wal`` file without fsync.
2. **Sync** (one dedicated thread). It fdatasyncs the log segment whenever frames are
   waiting — *while* the writer inserts and commits the same rows. A job's result is
   delivered once its batch is committed and an fdatasync that started after the last
   log write before that commit has returned, whichever comes second. One fsync covers
   everything written meanwhile, so batches grow with the load by themselves.
3. **Checkpoint** (one thread, four times a second while deliveries arrive): a passive
   checkpoint (automatic ones are off: they would delay the writer), a new log segment
   every second, and the retirement of the segments the synced WAL covers.

Why this is as safe as ``synchronous=FULL``: an answered delivery is committed in SQLite
and in a log segment synced to disk; a segment is deleted only after the WAL was synced
following its last commit, and at start every segment left by a dead process is replayed
into SQLite (`hookd.inboxlog.replay`). Waiting for the commit as well keeps what the
store shows in step with what was answered (``hookd runs`` right after a 202).

The writer also does the dedup check inside its transaction, so two concurrent copies of
one delivery cannot both be recorded, and stamps ping verifications. A repeat is
answered only once everything logged before it is synced, so its original is durable.
Another process holding the write lock (the worker, the reconciler) delays only the
writer thread, which retries; after LOCKED_GIVE_UP seconds the batch is refused (the
listener answers 503, which the upstream retries).

Jobs carry the listener's clock (``now`` and the dedup window's ``cutoff``), so a child
process needs no clock of its own and tests can set time.
"""

from __future__ import annotations

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

from hookd import inboxlog, payload
from hookd.store import db
from hookd.store.deliveries import (
    FLAG_SCHEMA_WARNING,
    DeliveryStore,
    NewDelivery,
    PreparedRow,
    prepare,
)
from hookd.store.subscriptions import SubscriptionStore

log = logging.getLogger("hookd.inbox")

# Seconds between passive checkpoints while deliveries arrive: often, so that each one
# (and the WAL and database fsyncs it does) is small and does not stall the log's fsyncs
# for long (p99 latency with the writer in a child process: 37 ms at 0.25 s, 65 ms at
# 1 s; bench/bench_ingest.py --inbox process).
CHECKPOINT_INTERVAL = 0.25
ROTATE_INTERVAL = 1.0  # seconds a log segment takes writes before the next one starts
RETRY_LOCKED = 0.002  # seconds before retrying a batch when another process holds the lock
BUSY_TIMEOUT = 0.1  # seconds SQLite itself waits for another process's write lock
LOCKED_GIVE_UP = 10.0  # seconds of a held lock after which a batch is refused (503, retried)
SEGMENT_MAX = 64 * 1024 * 1024  # bytes after which the log moves to a new segment anyway

# What a job's result is: (job id, code, value).
RECORDED = 0  # value: (delivery ids, duplicate?)
VERIFIED = 1  # value: whether the subscription is known
FAILED = 2  # value: the reason, one line
REFUSED = 3  # value: (outcome, reason, violations) of a body not recorded (hookd.payload)
Result = tuple[int, int, Any]
CommitInfo = tuple[int, int, float]  # (jobs, deliveries recorded, seconds) of one transaction
# source(timeout): the jobs that arrived, waiting up to `timeout` seconds for the first
# (None: for ever, 0: not at all); [] when none came, None once no more will come.
Source = Callable[["float | None"], "list[Job] | None"]
# deliver(results, commits, error, stats): called from the engine's threads.
Deliver = Callable[[list[Result], list[CommitInfo], "str | None", "InboxStats"], None]


@dataclass(slots=True)
class Job:
    """One request's work: record its deliveries, or stamp a ping verification."""

    id: int
    kind: str  # "record" | "verify"
    deliveries: Sequence[NewDelivery] = ()
    dedup_key: str | None = None
    subscription_id: str = ""
    when: float = 0.0
    now: float = 0.0  # the listener's clock when the job was handed over
    cutoff: float = 0.0  # a repeat counts when recorded after this time
    # examine: deliveries[0] holds the raw body; parse it, check it against `check` (a
    # routing.SchemaCheck) under `policy`, split it when `batch` (hookd.payload) first.
    examine: bool = False
    check: Any = None
    policy: str = "off"
    batch: bool = False
    rows: list[PreparedRow] = field(default_factory=list)  # made by the writer thread


@dataclass
class InboxStats:
    commits: int = 0  # write transactions (one per batch)
    syncs: int = 0  # fdatasyncs of the inbox log (each covers one or more batches)
    jobs: int = 0
    deliveries: int = 0
    failures: int = 0
    last_batch: int = 0
    max_batch: int = 0
    commit_seconds: float = 0.0  # total time in write transactions (writer thread)
    sync_seconds: float = 0.0  # total time in fsync
    sync_wait_seconds: float = 0.0  # total time from a log write to the start of its fsync
    replayed: int = 0  # rows restored from the log of a process that died
    latency_seconds: float = 0.0  # listener side: total time from queued to answered
    resolve_seconds: float = 0.0  # listener side: time from the engine's result to the loop


class Engine:
    """The writer, sync and checkpoint threads of one inbox (see the module docstring)."""

    def __init__(self, db_path: Path, deliver: Deliver, *, max_batch: int = 2000) -> None:
        self.db_path = Path(db_path)
        self.max_batch = max_batch
        self.stats = InboxStats()
        self._deliver_to = deliver
        self._conn: sqlite3.Connection | None = None
        self._deliveries: DeliveryStore | None = None
        self._subscriptions: SubscriptionStore | None = None
        self._now = 0.0  # the current batch's `now` (the stores' clock)
        self._queue: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self._writer_thread: threading.Thread | None = None
        self._commit_info: list[CommitInfo] = []
        # Committed, waiting for the log fsync: (log sequence number it needs, result).
        self._unsynced: list[tuple[int, Result]] = []
        self._sync_cond = threading.Condition()
        self._deliver_lock = threading.Lock()  # results leave in the order they are made
        # The inbox log (hookd.inboxlog): the writer appends, the sync thread fdatasyncs,
        # the checkpoint thread retires. Sequence numbers count the writer's log writes.
        self._segment: inboxlog.Segment | None = None  # the writer's current segment
        self._dirty: dict[int, inboxlog.Segment] = {}  # written, not yet synced (by fd)
        self._sealed: list[inboxlog.Segment] = []  # rotated out, waiting to be retired
        self._log_seq = 0  # last log write
        self._log_synced = 0  # last log write an fdatasync has covered
        self._log_times: list[tuple[int, float]] = []  # (seq, when written), for statistics
        self._sync_thread: threading.Thread | None = None
        self._checkpoint_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._closed = False
        self._rotate_due = False  # set by the checkpoint thread, done by the writer

    def start(self, *, writer_thread: bool = True) -> int:
        """Open the store, replay what a dead process left in the log, start the
        threads; returns how many deliveries the replay restored. Without
        `writer_thread`, the caller runs the writer itself: `serve`."""
        conn = db.connect(self.db_path, check_same_thread=False)
        db.migrate(conn)
        conn.execute("PRAGMA synchronous=NORMAL")  # durability comes from the log's fsync
        conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in their own thread
        # Another process holding the write lock (worker, reconciler) makes the writer
        # thread wait a little; see _write_batch for longer waits.
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        # Deliveries a crashed process answered but SQLite may not have durably: restore
        # them before anything (the worker's requeue, a claim) reads the store.
        self.stats.replayed += inboxlog.replay(self.db_path, conn)
        self._segment = inboxlog.create(inboxlog.log_dir(self.db_path))
        self._conn = conn
        self._deliveries = DeliveryStore(conn, clock=lambda: self._now)
        self._subscriptions = SubscriptionStore(conn, clock=lambda: self._now)
        if writer_thread:
            self._writer_thread = threading.Thread(
                target=self.serve, args=(self._from_queue,), name="hookd-inbox-write",
                daemon=True)
            self._writer_thread.start()
        self._sync_thread = threading.Thread(target=self._sync_loop, name="hookd-inbox-sync",
                                             daemon=True)
        self._sync_thread.start()
        self._checkpoint_thread = threading.Thread(
            target=self._checkpoint_loop, name="hookd-inbox-checkpoint", daemon=True)
        self._checkpoint_thread.start()
        return self.stats.replayed

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs for the writer thread (any thread; one C call)."""
        self._queue.put(jobs)

    def _from_queue(self, timeout: float | None) -> list[Job] | None:
        """The writer thread's `Source`: what `submit` queued."""
        try:
            if timeout == 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return []

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, stop the threads, retire the log (idempotent)."""
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
        self._deliver([(job.id, FAILED, "the inbox is closed (hookd is stopping)")
                       for job in left], [], None)
        self._retire_all()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _deliver(self, results: list[Result], commits: list[CommitInfo], error: str | None) -> None:
        if not results and not commits and error is None:
            return
        with self._deliver_lock:
            try:
                self._deliver_to(results, commits, error, self.stats)
            except Exception:
                log.exception("cannot hand inbox results back")

    # ------------------------------------------------------------------ writing (thread)

    def serve(self, source: Source) -> None:
        """The writer loop, until `source` says there is no more: take what arrived,
        everything that arrived meanwhile too (one transaction for all of it: group
        commit), examine the bodies, write; rotate the log when the checkpoint thread
        asks, also while idle."""
        carry: list[Job] = []
        more = True
        while more or carry:
            batch, carry = carry, []
            if not batch:
                got = source(CHECKPOINT_INTERVAL)  # wakes up while idle to rotate
                if got is None:
                    more = False
                else:
                    batch = got
            while more and batch and len(batch) < self.max_batch:
                got = source(0)
                if got is None:
                    more = False
                elif not got:
                    break
                else:
                    batch += got
            if len(batch) > self.max_batch:
                batch, carry = batch[: self.max_batch], batch[self.max_batch:]
            if batch:
                self._write_batch(self._examined(batch))
            if self._rotate_due:
                self._rotate_due = False
                self._rotate()

    def _examined(self, batch: list[Job]) -> list[Job]:
        """The jobs to write: record jobs' bodies examined (`hookd.payload`), the refused
        ones answered."""
        refused: list[Result] = []
        accepted: list[Job] = []
        for job in batch:
            if job.examine and job.kind == "record":
                try:
                    _examine(job)
                except payload.Refused as exc:
                    refused.append((job.id, REFUSED, (exc.outcome, exc.reason, exc.violations)))
                    continue
            accepted.append(job)
        if refused:
            self._deliver(refused, [], None)
        return accepted

    def _write_batch(self, batch: list[Job]) -> None:
        if not batch:
            return
        self._now = batch[-1].now
        started = time.perf_counter()
        deadline = started + LOCKED_GIVE_UP
        while True:
            try:
                results = self._write(batch)
                break
            except sqlite3.OperationalError as exc:
                if _locked(exc) and time.perf_counter() < deadline:
                    time.sleep(RETRY_LOCKED)  # another process is writing: try again shortly
                    continue
                results = self._write_one_by_one(batch, exc)
                break
            except Exception as exc:
                results = self._write_one_by_one(batch, exc)
                break
        seconds = time.perf_counter() - started
        failed: list[Result] = []
        committed: list[Result] = []
        recorded = 0
        for job, result in results:
            if isinstance(result, BaseException):
                failed.append((job.id, FAILED, str(result)))
            elif job.kind == "verify":
                committed.append((job.id, VERIFIED, result))
            else:
                ids, duplicate = result
                if not duplicate:
                    recorded += len(ids)
                committed.append((job.id, RECORDED, result))
        if failed:
            self._deliver(failed, [], None)
        st = self.stats
        st.commits += 1
        st.jobs += len(batch)
        st.deliveries += recorded
        st.last_batch = len(batch)
        st.max_batch = max(st.max_batch, len(batch))
        st.commit_seconds += seconds
        with self._sync_cond:
            # Answer once everything logged so far is synced: this batch's rows, and for a
            # repeat the original's (written by this or an earlier batch).
            need = self._log_seq
            self._commit_info.append((len(batch), recorded, seconds))
            if need > self._log_synced:
                self._unsynced.extend((need, result) for result in committed)
                return
            commits, self._commit_info = self._commit_info, []
        self._deliver(committed, commits, None)

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
                results.append((job, RuntimeError(f"cannot record the delivery: {exc}")))
        return results

    def _write(self, batch: list[Job]) -> list[tuple[Job, Any]]:
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
        results: list[tuple[Job, Any]] = []
        keys = {job.dedup_key for job in batch if job.dedup_key is not None}
        rows: list[PreparedRow] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            known = deliveries.seen_many(sorted(keys), batch[-1].cutoff) if keys else {}
            for job in batch:
                if job.kind == "verify":
                    results.append((job, subscriptions.mark_verified(job.subscription_id, job.when)))
                    continue
                key = job.dedup_key
                original = known.get(key) if key is not None else None
                if original is not None:
                    results.append((job, ([original], True)))
                    continue
                ids = [row[0] for row in job.rows]
                if key is not None and ids:
                    known[key] = ids[0]  # a second copy in this same batch is a repeat too
                rows.extend(job.rows)
                results.append((job, (ids, False)))
            logged = self._log(rows) if rows else None
            try:
                if rows:
                    deliveries.insert_prepared(rows)
                conn.execute("COMMIT")  # frames appended to the WAL, not synced (see above)
            except BaseException:
                if logged is not None:
                    logged[0].truncate(logged[1])  # refused: must not come back at replay
                raise
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        return results

    def _log(self, rows: list[PreparedRow]) -> tuple[inboxlog.Segment, int]:
        """Append `rows` to the log and wake the sync thread; (segment, offset before)."""
        segment = self._segment
        if segment is None:
            raise RuntimeError("the inbox log is closed")
        if segment.size >= SEGMENT_MAX:
            segment = self._rotate() or segment
        offset = segment.append(inboxlog.encode(rows))
        with self._sync_cond:
            self._log_seq += 1
            segment.last_seq = self._log_seq
            if not segment.opened:
                segment.opened = time.monotonic()
            self._dirty[segment.fd] = segment
            self._log_times.append((self._log_seq, time.perf_counter()))
            self._sync_cond.notify()
        return segment, offset

    def _rotate(self) -> inboxlog.Segment | None:
        """Writer thread: continue in a fresh segment, hand the old one to be retired."""
        old = self._segment
        if old is None or old.size == 0 or self._closed:
            return None
        try:
            new = inboxlog.create(inboxlog.log_dir(self.db_path))
        except OSError as exc:
            log.error("cannot start a new inbox log segment", extra={"error": str(exc)})
            return None
        with self._sync_cond:
            self._segment = new
            self._sealed.append(old)
        return new

    # ------------------------------------------------------------------ syncing (thread)

    def _sync_loop(self) -> None:
        synced = 0
        while True:
            with self._sync_cond:
                while self._log_seq <= synced and not self._closed:
                    self._sync_cond.wait()
                target = self._log_seq
                if target <= synced and self._closed:
                    return
                dirty, self._dirty = list(self._dirty.values()), {}
                started = time.perf_counter()
                for seq, written in self._log_times:
                    if seq <= target:
                        self.stats.sync_wait_seconds += started - written
                self._log_times = [t for t in self._log_times if t[0] > target]
            error: str | None = None
            for segment in dirty:
                try:
                    inboxlog.datasync(segment.fd)
                except OSError as exc:
                    error = f"cannot sync {segment.path}: {exc}"
            done = time.perf_counter()
            self.stats.syncs += 1
            self.stats.sync_seconds += done - started
            synced = target
            with self._sync_cond:
                self._log_synced = target
                ready = [r for need, r in self._unsynced if need <= target]
                self._unsynced = [u for u in self._unsynced if u[0] > target]
                commits, self._commit_info = self._commit_info, []
                self._sync_cond.notify_all()
            if error is not None:
                # Committed but maybe not durable: refuse, the upstream retries (and the
                # dedup key makes the retry answer with this same delivery if it survived).
                ready = [(job_id, FAILED, error) for job_id, _, _ in ready]
            self._deliver(ready, commits, error)

    def _checkpoint_loop(self) -> None:
        """While deliveries arrive: a passive checkpoint (it never blocks writers) so the
        WAL does not grow forever, a new log segment every ROTATE_INTERVAL, and the
        retirement of old segments — in its own thread so none of it delays a request."""
        conn: sqlite3.Connection | None = None
        done = 0
        try:
            while not self._stopping.wait(CHECKPOINT_INTERVAL):
                segment = self._segment
                if segment is not None and segment.size and segment.opened and (
                        time.monotonic() - segment.opened >= ROTATE_INTERVAL):
                    self._rotate_due = True  # the writer rotates between batches
                if self.stats.commits != done:
                    done = self.stats.commits
                    try:
                        if conn is None:
                            conn = db.connect(self.db_path, check_same_thread=False)
                        # synchronous=FULL on this connection: the checkpoint syncs the
                        # WAL before copying it, so the retirement below finds it clean.
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    except sqlite3.Error as exc:
                        log.debug("checkpoint failed", extra={"error": str(exc)})
                self._retire_sealed()
        finally:
            if conn is not None:
                conn.close()

    def _retire_sealed(self) -> None:
        """Delete the rotated-out segments: their rows are committed (the writer rotates
        between batches), so once the WAL is synced SQLite holds them durably."""
        with self._sync_cond:
            sealed = [s for s in self._sealed if s.last_seq <= self._log_synced]
            self._sealed = [s for s in self._sealed if s.last_seq > self._log_synced]
        if not sealed:
            return
        try:
            inboxlog.sync_wal(self.db_path)
        except OSError as exc:
            log.error("cannot sync the database; keeping the inbox log", extra={"error": str(exc)})
            with self._sync_cond:
                self._sealed[:0] = sealed
            return
        for segment in sealed:
            inboxlog.retire(segment)

    def _retire_all(self) -> None:
        """At close, with the threads stopped: everything written is committed."""
        with self._sync_cond:
            segments = self._sealed + ([self._segment] if self._segment is not None else [])
            self._sealed, self._segment, self._dirty = [], None, {}
        if not segments:
            return
        try:
            inboxlog.sync_wal(self.db_path)
        except OSError as exc:  # the segments stay; the next start replays them
            log.error("cannot sync the database at close", extra={"error": str(exc)})
            for segment in segments:
                segment.close()
            return
        for segment in segments:
            inboxlog.retire(segment)


def _examine(job: Job) -> None:
    """Replace the job's raw delivery by what `hookd.payload.examine` makes of it."""
    template = job.deliveries[0]
    examined = payload.examine(template.body, job.check, job.policy, job.batch)
    flags = template.flags
    if examined.problems:
        flags = (*flags, FLAG_SCHEMA_WARNING)
        log.warning("payload does not match the trigger's schema",
                    extra={"flow": template.flow, "violations": examined.problems})
    if examined.items == [None] and flags == template.flags:
        return  # the body as received: the common case
    job.deliveries = [dataclasses.replace(template, body=body, item=item, flags=flags)
                      for body, item in zip(examined.bodies, examined.items, strict=True)]


def _locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text

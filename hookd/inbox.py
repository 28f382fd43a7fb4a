"""The durable inbox, as the event loop sees it: ``await record(...)`` returns once the
delivery is on disk.

hookd must not answer 2xx before a delivery survives a crash, and must not pay one fsync
per request for it. The recording itself — dedup, the inbox log, SQLite, fsync — is the
`hookd.inbox_engine.Engine`'s (its docstring says how it is made safe and fast). This
side collects what arrives during one loop iteration into one batch (group commit),
hands it to the engine, and resolves each request's future when its result comes back.

Where the engine runs (``inbox.mode``):

- ``inline`` (default): in threads of the listener's process. CPython runs one thread
  at a time, so the writer's Python work (parsing and checking bodies, making rows) takes
  turns with the event loop; the SQLite and fsync work does not (the GIL is released).
- ``process``: in a child process (`hookd.inbox_process`) with its own interpreter; the
  loop's cost is one pickle and one ``send`` per batch. Built to take the writer's Python
  work off the loop's interpreter; on the 2-core development machine it measured no
  faster (bench/bench_ingest.py ``--inbox``: the same requests/s within the noise, p99
  35–70 ms against 23–38 ms, more CPU per request for the pickling), so it is opt-in.

An inbox belongs to one event loop (the one of its first request), and moves to another
only while idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from hookd.inbox_engine import (
    FAILED,
    RECORDED,
    REFUSED,
    CommitInfo,
    Engine,
    InboxStats,
    Job,
    Result,
)
from hookd.payload import Refused
from hookd.store.deliveries import NewDelivery

log = logging.getLogger("hookd.inbox")

__all__ = ["Inbox", "InboxError", "InboxStats", "Recorded"]


class InboxError(Exception):
    """The delivery could not be recorded (disk full, store locked, inbox closed)."""


@dataclass(frozen=True)
class Recorded:
    """What the inbox did with one request: the delivery ids, or the original's on a repeat."""

    ids: list[str]
    duplicate: bool = False


class Link(Protocol):
    """How batches reach an engine and results come back (`_InlineLink`, `ProcessLink`)."""

    def start(self) -> int: ...
    def attach(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def send(self, jobs: list[Job]) -> None: ...
    def close(self, timeout: float) -> InboxStats | None: ...


class Inbox:
    """The single writer of deliveries. Use `record` from the event loop.

    `db_path` is the SQLite file (the engine opens its own connection); `dedup_window`
    how far back a repeated delivery id counts as a repeat; `window` how long to wait
    after the first pending request before handing a batch over (0: the next loop
    iteration); `mode` where the engine runs (module docstring).
    """

    def __init__(
        self,
        db_path: Path,
        *,
        dedup_window: float = 7 * 86400.0,
        window: float = 0.0,
        max_batch: int = 2000,
        clock: Callable[[], float] = time.time,
        mode: Literal["process", "inline"] = "inline",
        log_format: str | None = None,
        log_level: str | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self.dedup_window = dedup_window
        self.window = window
        self.max_batch = max_batch
        self.clock = clock
        self.mode = mode
        self.stats = InboxStats()
        self._log_options = (log_format, log_level)
        self._link: Link | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Job] = []  # loop only: arrived in this loop iteration
        self._waiting: dict[int, tuple[asyncio.Future[Any], float]] = {}  # job id → (future, queued)
        self._next_id = 0
        self._scheduled = False
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
        return await self._submit("record", deliveries=deliveries, dedup_key=dedup_key)

    async def record_body(
        self, delivery: NewDelivery, *, dedup_key: str | None = None, check: Any = None,
        policy: str = "off", batch: bool = False,
    ) -> Recorded:
        """Like `record`, for a raw request body: the engine parses it, checks it against
        `check` (a `hookd.routing.SchemaCheck`) under `policy` and splits a `batch` first
        (`hookd.payload.examine`); raises `hookd.payload.Refused` for a body it will not
        record."""
        return await self._submit("record", deliveries=[delivery], dedup_key=dedup_key,
                                  examine=True, check=check, policy=policy, batch=batch)

    async def mark_verified(self, subscription_id: str, when: float) -> bool:
        """Stamp a subscription's ``verified_at`` (a ping arrived); False when unknown."""
        return await self._submit("verify", subscription_id=subscription_id, when=when)

    def start(self) -> None:
        """Start the engine (done by the first `record`): opens the store, replays what a
        crashed process left in the inbox log. Raises on a bad state directory."""
        if self._link is not None or self._closed:
            return
        link: Link
        if self.mode == "process":
            from hookd.inbox_process import ProcessLink

            link = ProcessLink(self.db_path, self._results, self._lost, max_batch=self.max_batch,
                               log_format=self._log_options[0], log_level=self._log_options[1])
        else:
            link = _InlineLink(self.db_path, self._results, max_batch=self.max_batch)
        self.stats.replayed = link.start()
        self._link = link
        self._error = None

    async def aclose(self) -> None:
        """Write and sync what is pending, then stop."""
        while self._waiting or self._pending:
            await asyncio.sleep(0.005)
            if self._error is not None and self._link is None:
                break
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the engine (idempotent). Requests not yet answered are refused; use
        `aclose` from the loop to finish them first."""
        self._closed = True
        link, self._link = self._link, None
        if link is not None:
            final = link.close(timeout)
            if final is not None:
                self._take_stats(final)
        refused = "the inbox is closed (hookd is stopping)"
        left = [(job.id, FAILED, refused) for job in self._pending] + [
            (job_id, FAILED, refused) for job_id in self._waiting]
        self._pending = []
        if left:
            self._post(self._results, left, [], None, self.stats, time.perf_counter())

    # ------------------------------------------------------------------ loop side

    async def _submit(self, kind: str, **fields: Any) -> Any:
        if self._closed:
            raise InboxError("the inbox is closed (hookd is stopping)")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Rebind only when idle: the futures the results resolve all belong to one loop.
            if self._loop is not None and not self._loop.is_closed() and self._waiting:
                raise InboxError("the inbox is busy on another event loop")
            self._loop, self._scheduled = loop, False
            if self._link is not None:
                self._link.attach(loop)
        if self._link is None:
            self.start()
            assert self._link is not None
            self._link.attach(loop)
        self._next_id += 1
        job = Job(self._next_id, kind, **fields)
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting[job.id] = (future, time.perf_counter())
        self._pending.append(job)
        if not self._scheduled:
            self._scheduled = True
            if self.window > 0:
                loop.call_later(self.window, self._hand_over)
            else:
                loop.call_soon(self._hand_over)
        try:
            return await future
        finally:
            self._waiting.pop(job.id, None)

    def _hand_over(self) -> None:
        """Once per loop iteration: give what arrived to the engine in one go."""
        self._scheduled = False
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        now = self.clock()
        cutoff = now - self.dedup_window
        for job in batch:
            job.now, job.cutoff = now, cutoff
        link = self._link
        if link is None:
            self._results([(job.id, FAILED, "the inbox is closed") for job in batch], [], None,
                          self.stats, 0.0)
            return
        try:
            link.send(batch)
        except Exception as exc:  # the child is gone: refuse, the upstream retries
            self._results([(job.id, FAILED, f"inbox writer unavailable: {exc}") for job in batch],
                          [], str(exc), self.stats, 0.0)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback(*args)` on the inbox's loop (from any thread)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(callback, *args)

    def _lost(self, reason: str) -> None:
        """On the loop: the engine's process died. Refuse what it held (the upstream
        retries; anything it had recorded is replayed by the next engine), start anew
        with the next request."""
        log.error("the inbox writer process exited", extra={"error": reason})
        self._link = None
        self._results([(job_id, FAILED, reason) for job_id in list(self._waiting)], [], reason,
                      self.stats, 0.0)

    def _take_stats(self, engine: InboxStats) -> None:
        """Keep the engine's counters; latency and resolve time are measured here."""
        mine = (self.stats.latency_seconds, self.stats.resolve_seconds)
        self.stats = InboxStats(**{**vars(engine)})
        self.stats.latency_seconds, self.stats.resolve_seconds = mine

    def _results(
        self, results: list[Result], commits: list[CommitInfo], error: str | None,
        stats: InboxStats, sent: float,
    ) -> None:
        """On the loop: resolve the requests the engine has finished."""
        now = time.perf_counter()
        if sent:
            self.stats.resolve_seconds += now - sent
        if stats is not self.stats:
            self._take_stats(stats)
        self._error = error
        for jobs, recorded, seconds in commits:
            for callback in self._on_commit:
                with contextlib.suppress(Exception):
                    callback(jobs, recorded, seconds)
        fresh = False
        waiting = self._waiting
        for job_id, code, value in results:
            entry = waiting.get(job_id)
            if entry is None:
                continue
            future, queued = entry
            self.stats.latency_seconds += now - queued
            if future.done():
                continue  # the request was cancelled (client gone); the row stays recorded
            if code == FAILED:
                future.set_exception(InboxError(value))
            elif code == REFUSED:
                future.set_exception(Refused(*value))
            elif code == RECORDED:
                ids, duplicate = value
                fresh = fresh or not duplicate
                future.set_result(Recorded(list(ids), duplicate))
            else:
                future.set_result(value)
        if fresh:
            for listener in self._listeners:
                try:
                    listener()
                except Exception:
                    log.exception("inbox listener failed")


class _InlineLink:
    """``inbox.mode: inline``: the engine's threads in this process."""

    def __init__(self, db_path: Path, on_results: Callable[..., None], *, max_batch: int) -> None:
        self._on_results = on_results
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine = Engine(db_path, self._deliver, max_batch=max_batch)

    def start(self) -> int:
        return self._engine.start()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def send(self, jobs: list[Job]) -> None:
        self._engine.submit(jobs)

    def close(self, timeout: float) -> InboxStats | None:
        self._engine.close(timeout)
        return self._engine.stats

    def _deliver(self, results: list[Result], commits: list[CommitInfo], error: str | None,
                 stats: InboxStats) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(self._on_results, results, commits, error,
                                      InboxStats(**vars(stats)), time.perf_counter())

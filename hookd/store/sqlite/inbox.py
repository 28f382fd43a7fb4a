"""The durable inbox, as the event loop sees it: ``await record(...)`` returns once the
delivery is on disk.

hookd must not answer 2xx before a delivery survives a crash, and must not pay one fsync
per request for it. The recording itself — checking bodies, dedup, SQLite, fsync — is
the `hookd.store.sqlite.engine.Engine`'s (its docstring says how it is made safe and fast). This
side collects what arrives during one loop iteration into one batch (group commit),
hands it to the engine, and resolves each request's future when its result comes back.

An inbox belongs to one event loop (the one of its first request), and moves to another
only while idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hookd.store.records import NewDelivery, Recorded
from hookd.store.sqlite.engine import (
    LOCKED_GIVE_UP,
    CommitInfo,
    Engine,
    InboxError,
    InboxStats,
    Job,
    Outcome,
)

log = logging.getLogger("hookd.store.sqlite.inbox")

__all__ = ["Inbox", "InboxError", "InboxStats", "Recorded"]


class Inbox:
    """The single writer of deliveries. Use `record` from the event loop.

    `db_path` is the SQLite file (the engine opens its own connection); `dedup_window`
    how far back a repeated delivery id counts as a repeat; `window` how long to wait
    after the first pending request before handing a batch over (0: the next loop
    iteration).
    """

    def __init__(
        self,
        db_path: Path,
        *,
        dedup_window: float = 7 * 86400.0,
        window: float = 0.0,
        max_batch: int = 2000,
        clock: Callable[[], float] = time.time,
        datasync: Callable[[int], None] | None = None,
        locked_give_up: float = LOCKED_GIVE_UP,
    ) -> None:
        self.db_path = Path(db_path)
        self._engine_options: dict[str, Any] = {"datasync": datasync,
                                                 "locked_give_up": locked_give_up}
        self.dedup_window = dedup_window
        self.window = window
        self.max_batch = max_batch
        self.clock = clock
        self.stats = InboxStats()
        self._engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Job] = []  # loop only: arrived in this loop iteration
        self._outstanding = 0  # loop only: requests waiting for an answer
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
        """Like `record`, for a raw request body: the engine checks it against `check` (a
        `hookd.callbacks.routing.SchemaCheck`) under `policy` and splits a `batch` first
        (`hookd.callbacks.payload.examine`); raises `hookd.callbacks.payload.Refused` for a body it will not
        record."""
        return await self._submit("record", deliveries=[delivery], dedup_key=dedup_key,
                                  examine=True, check=check, policy=policy, batch=batch)

    async def mark_verified(self, subscription_id: str, when: float) -> bool:
        """Stamp a subscription's ``verified_at`` (a ping arrived); False when unknown."""
        return await self._submit("verify", subscription_id=subscription_id, when=when)

    def start(self) -> None:
        """Start the engine (done by the first `record`): opens the store and starts the
        threads. Raises on a bad state directory."""
        if self._engine is not None or self._closed:
            return
        engine = Engine(self.db_path, self._deliver, dedup_window=self.dedup_window,
                        max_batch=self.max_batch, clock=self.clock, stats=self.stats,
                        **self._engine_options)
        engine.start()
        self._engine = engine
        self._error = None

    async def aclose(self) -> None:
        """Write and sync what is pending, then stop."""
        while self._outstanding:
            await asyncio.sleep(0.005)
            if self._error is not None and self._engine is None:
                break
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the engine (idempotent). Requests not yet answered are refused; use
        `aclose` from the loop to finish them first."""
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close(timeout)  # refuses what it had not written yet
        refused = InboxError("the inbox is closed (hookd is stopping)")
        left, self._pending = self._pending, []
        if left:
            self._post(self._results, [(job, refused) for job in left], [], None, 0.0)

    # ------------------------------------------------------------------ loop side

    async def _submit(self, kind: str, **fields: Any) -> Any:
        if self._closed:
            raise InboxError("the inbox is closed (hookd is stopping)")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Rebind only when idle: the futures the results resolve all belong to one loop.
            if self._loop is not None and not self._loop.is_closed() and self._outstanding:
                raise InboxError("the inbox is busy on another event loop")
            self._loop, self._scheduled = loop, False
        if self._engine is None:
            self.start()
        job = Job(kind, **fields)
        job.future = loop.create_future()
        job.queued = time.perf_counter()
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
        """Once per loop iteration: give what arrived to the engine in one go."""
        self._scheduled = False
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        engine = self._engine
        if engine is None:
            refused = InboxError("the inbox is closed")
            self._results([(job, refused) for job in batch], [], None, 0.0)
            return
        engine.submit(batch)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback(*args)` on the inbox's loop (from any thread)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(callback, *args)

    def _deliver(self, outcomes: list[Outcome], commits: list[CommitInfo],
                 error: str | None) -> None:
        """The engine's outcomes (from its threads): resolved on the loop."""
        self._post(self._results, outcomes, commits, error, time.perf_counter())

    def _results(
        self, outcomes: list[Outcome], commits: list[CommitInfo], error: str | None, sent: float
    ) -> None:
        """On the loop: resolve the requests the engine has finished."""
        now = time.perf_counter()
        if sent:
            self.stats.resolve_seconds += now - sent
        self._error = error
        for jobs, recorded, seconds in commits:
            for callback in self._on_commit:
                with contextlib.suppress(Exception):
                    callback(jobs, recorded, seconds)
        fresh = False
        for job, outcome in outcomes:
            self.stats.latency_seconds += now - job.queued
            future = job.future
            if future is None or future.done():
                continue  # the request was cancelled (client gone); the row stays recorded
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                fresh = fresh or (isinstance(outcome, Recorded) and not outcome.duplicate)
                future.set_result(outcome)
        if fresh:
            for listener in self._listeners:
                try:
                    listener()
                except Exception:
                    log.exception("inbox listener failed")

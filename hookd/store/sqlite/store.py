"""The SQLite backend of `hookd.store.interface.Store`: one file in the state directory.

The parts below are thin: each method is a function of the table modules
(`hookd.store.sqlite.subscriptions`, `.deliveries`, `.runs`) handed to an executor
(`hookd.store.sqlite.executor`) that decides where it runs and owns its transaction. The
inbox (`hookd.store.sqlite.inbox`, the group-commit engine with its own threads and
connection) is this backend's way of recording deliveries; `hookd.store.sqlite.health`
its last known state.

Connections a daemon holds: the inbox's writer and checkpoint threads, the executor's
writing and reading threads (reconciler, admin API, status, retention), the health
probe; the worker (its own process by default) one more, on its event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from hookd.store import errors, interface
from hookd.store.activity import Counts, DeliverySummary, FlowFacts, Minute
from hookd.store.interface import FinishedStatus, Mode, Role, Subscriptions
from hookd.store.leadership import Solo
from hookd.store.records import (
    Delivery,
    Run,
    RunStatus,
    StepResult,
    StepStatus,
    SubscriptionRow,
    Update,
)
from hookd.store.sqlite import db
from hookd.store.sqlite.activity import ActivityStore
from hookd.store.sqlite.batch import LoopBatchingDb
from hookd.store.sqlite.executor import Executor, Tables, ThreadExecutor
from hookd.store.sqlite.health import SqliteHealth
from hookd.store.sqlite.inbox import Inbox
from hookd.store.sqlite.runs import replay

log = logging.getLogger("hookd.store.sqlite")

# Beside the database: held by whoever reconciles this state directory (`Solo`).
LOCK_FILE = "reconcile.lock"

_DELIVERY_STATUS: dict[str, FinishedStatus] = {
    "succeeded": "done", "failed": "failed", "cancelled": "failed", "queued": "queued"}


class Arrivals:
    """The wake-up hook: callbacks for "deliveries may be claimable" (inbox commits and
    replays in this process)."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def add(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return remove

    def fire(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("wake-up callback failed")


class SqliteSubscriptions(Subscriptions):
    def __init__(self, x: Executor) -> None:
        self._x = x

    async def get(self, sub_id: str) -> SubscriptionRow | None:
        return await self._x.run(lambda t: t.subscriptions.get(sub_id), write=False)

    async def all(self) -> list[SubscriptionRow]:
        return await self._x.run(lambda t: t.subscriptions.all(), write=False)

    async def apply_many(self, updates: Iterable[Update]) -> None:
        batch = list(updates)
        await self._x.run(lambda t: t.subscriptions.apply_many(batch))


class SqliteDeliveries:
    def __init__(self, x: Executor, arrivals: Arrivals) -> None:
        self._x = x
        self._arrivals = arrivals

    async def get(self, delivery_id: str) -> Delivery | None:
        return await self._x.run(lambda t: t.deliveries.get(delivery_id), write=False)

    async def claim(self, limit: int, *, flows: Sequence[str] | None = None,
                    lease: float, max_running: int | None = None) -> list[Delivery]:
        # `max_running` needs no query here: one daemon per SQLite file, and its worker
        # (the only claimer) already counts its own runs of each flow.
        return await self._x.run(lambda t: t.deliveries.claim(limit, flows=flows, lease=lease))

    async def renew(self, delivery_ids: Sequence[str], lease: float) -> None:
        ids = list(delivery_ids)
        if ids:
            await self._x.run(lambda t: t.deliveries.renew(ids, lease))

    async def finish(self, delivery_id: str, status: FinishedStatus,
                     error: str | None = None) -> None:
        await self._x.run(lambda t: t.deliveries.finish(delivery_id, status, error))

    async def add_flag(self, delivery_id: str, flag: str) -> bool:
        return await self._x.run(lambda t: t.deliveries.add_flag(delivery_id, flag))

    async def recover(self) -> int:
        # One daemon per SQLite file: whatever is running was left by a dead process.
        return await self._x.run(lambda t: t.deliveries.requeue_running())

    async def queued_flows(self) -> list[str]:
        return await self._x.run(lambda t: t.deliveries.queued_flows(), write=False)

    async def depth(self) -> int:
        return await self._x.run(lambda t: t.deliveries.depth(), write=False)

    def on_arrival(self, callback: Callable[[], None]) -> Callable[[], None]:
        return self._arrivals.add(callback)


class SqliteActivity:
    """The history's summaries for the status page (`hookd.store.sqlite.activity`), reads."""

    def __init__(self, x: Executor) -> None:
        self._x = x

    async def counts_since(self, since: float) -> Counts:
        return await self._x.run(lambda t: ActivityStore(t.conn).counts_since(since), write=False)

    async def per_minute(self, start: float, minutes: int) -> list[Minute]:
        return await self._x.run(lambda t: ActivityStore(t.conn).per_minute(start, minutes),
                                 write=False)

    async def deliveries(self, *, flow: str | None = None, status: str | None = None,
                         since: float | None = None, until: float | None = None,
                         before: str | None = None, limit: int = 50) -> list[DeliverySummary]:
        return await self._x.run(lambda t: ActivityStore(t.conn).deliveries(
            flow=flow, status=status, since=since, until=until, before=before, limit=limit),
            write=False)

    async def deliveries_after(self, after: str, limit: int = 100) -> list[DeliverySummary]:
        return await self._x.run(lambda t: ActivityStore(t.conn).deliveries_after(after, limit),
                                 write=False)

    async def runs_after(self, after: str, limit: int = 100) -> list[Run]:
        return await self._x.run(lambda t: ActivityStore(t.conn).runs_after(after, limit),
                                 write=False)

    async def flow_facts(self, flows: list[str], rate_of: int) -> dict[str, FlowFacts]:
        return await self._x.run(lambda t: ActivityStore(t.conn).flow_facts(flows, rate_of),
                                 write=False)

    async def cursors(self) -> tuple[str, str]:
        return await self._x.run(lambda t: ActivityStore(t.conn).cursors(), write=False)

    async def body(self, delivery_id: str) -> bytes | None:
        return await self._x.run(lambda t: ActivityStore(t.conn).body(delivery_id), write=False)


class SqliteRuns:
    def __init__(self, x: Executor, arrivals: Arrivals, clock: Callable[[], float]) -> None:
        self._x = x
        self._arrivals = arrivals
        self._clock = clock

    async def create(self, delivery_id: str, flow: str, *, config_revision: str = "",
                     status: RunStatus = "queued", error: str | None = None) -> Run:
        return await self._x.run(lambda t: t.runs.create(
            delivery_id, flow, config_revision=config_revision, status=status, error=error))

    async def start(self, run_id: str) -> None:
        await self._x.run(lambda t: t.runs.start(run_id))

    async def finish(self, run_id: str, status: RunStatus, error: str | None = None, *,
                     delivery_id: str | None = None) -> None:
        def write(t: Tables) -> None:
            t.runs.finish(run_id, status, error)
            if delivery_id is not None:
                t.deliveries.finish(delivery_id, _DELIVERY_STATUS[status], error)

        await self._x.run(write)

    async def latest_for_delivery(self, delivery_id: str) -> Run | None:
        return await self._x.run(lambda t: t.runs.latest_for_delivery(delivery_id), write=False)

    async def get(self, run_id: str, *, steps: bool = True) -> Run | None:
        return await self._x.run(lambda t: t.runs.get(run_id, steps=steps), write=False)

    async def list(self, *, flow: str | None = None, status: str | None = None,
                   delivery_id: str | None = None, limit: int = 50,
                   before: str | None = None) -> list[Run]:
        return await self._x.run(lambda t: t.runs.list(
            flow=flow, status=status, delivery_id=delivery_id, limit=limit, before=before),
            write=False)

    async def since(self, when: float) -> dict[str, int]:
        return await self._x.run(lambda t: t.runs.since(when), write=False)

    async def steps(self, run_id: str) -> tuple[StepResult, ...]:
        return await self._x.run(lambda t: t.runs.steps(run_id), write=False)

    async def step_started(self, run_id: str, step_id: str, index: int, kind: str,
                           attempt: int, input: Any) -> float:
        return await self._x.run(lambda t: t.runs.step_started(
            run_id, step_id, index, kind, attempt, input))

    async def step_retrying(self, run_id: str, step_id: str, error: str,
                            output: Any = None) -> None:
        await self._x.run(lambda t: t.runs.step_retrying(run_id, step_id, error, output))

    async def step_finished(self, run_id: str, step_id: str, status: StepStatus, *,
                            output: Any = None, error: str | None = None, index: int = 0,
                            kind: str = "", input: Any = None) -> float:
        return await self._x.run(lambda t: t.runs.step_finished(
            run_id, step_id, status, output=output, error=error, index=index, kind=kind,
            input=input))

    async def replay(self, ident: str, *,
                     kind: Literal["run", "delivery"] | None = None) -> str:
        delivery_id = await self._x.run(lambda t: replay(t.conn, ident, kind=kind))
        self._arrivals.fire()
        return delivery_id

    async def prune(self, *, max_age: float, max_runs: int) -> dict[str, int]:
        # Two transactions, as before: a long delete holds the write lock the inbox needs.
        runs = await self._x.run(lambda t: t.runs.prune(max_age=max_age, max_runs=max_runs))
        cutoff = self._clock() - max_age
        deliveries = await self._x.run(lambda t: t.deliveries.prune(cutoff))
        return {"runs": runs, "deliveries": deliveries}


class SqliteStore:
    """`hookd.store.interface.Store` on ``state_dir/hookd.db`` (see the module docstring)."""

    def __init__(self, state_dir: Path, *, role: Role = "daemon", mode: Mode = "create",
                 dedup_window: float = 7 * 86400.0, clock: Callable[[], float] = time.time,
                 inbox_options: dict[str, Any] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / db.DB_NAME
        self.role, self.mode = role, mode
        if mode in ("existing", "readonly") and not self.path.exists():
            raise errors.NotFound(f"no store at {self.path} (hookd has not run with this "
                                  "state directory yet)")
        self._executor: LoopBatchingDb | ThreadExecutor
        if role == "worker":
            self._executor = LoopBatchingDb(self._open_worker)
        else:
            self._executor = ThreadExecutor(self._open, split=mode != "ephemeral")
        self._arrivals = Arrivals()
        inbox = Inbox(self.path, dedup_window=dedup_window, clock=clock,
                      **(inbox_options or {}))
        inbox.add_listener(self._arrivals.fire)
        self._health = SqliteHealth(self.path, inbox)
        # Typed as the interface's parts: what callers may rely on.
        self.inbox: interface.Inbox = inbox
        self.subscriptions: interface.Subscriptions = SqliteSubscriptions(self._executor)
        self.deliveries: interface.DeliveryQueue = SqliteDeliveries(self._executor,
                                                                    self._arrivals)
        self.runs: interface.RunHistory = SqliteRuns(self._executor, self._arrivals, clock)
        self.health: interface.StoreHealth = self._health
        # Not a part of the interface (yet): the status page's summaries.
        self.activity = SqliteActivity(self._executor)
        self._started = False

    @property
    def location(self) -> str:
        return str(self.path)

    def _open(self) -> sqlite3.Connection:
        if self.mode == "ephemeral":
            conn = sqlite3.connect(":memory:", isolation_level=None)
            conn.row_factory = sqlite3.Row
            db.migrate(conn)
            return conn
        if self.mode == "readonly":
            return db.connect_readonly(self.path)
        conn = db.open_db(self.state_dir)
        # Wait for another process's write lock on this thread, but never longer than
        # the store promises (errors.Busy then).
        conn.execute(f"PRAGMA busy_timeout={int(errors.LOCK_WAIT * 1000)}")
        return conn

    def _open_worker(self) -> sqlite3.Connection:
        conn = db.open_db(self.state_dir, check_same_thread=False)
        # In WAL mode a commit still survives a crash of hookd (kill -9); only a power loss
        # can forget the last run-history writes, which at worst runs a step again — the
        # delivery itself was made durable by the inbox's fsync.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def start(self) -> None:
        """Open now: the worker's connection on this loop; the daemon's migrations, the
        inbox's threads and the health probe (so that a bad state directory fails here)."""
        if self._started:
            return
        self._started = True
        if isinstance(self._executor, LoopBatchingDb):
            try:
                self._executor.start()
            except sqlite3.Error as exc:
                raise errors.Unavailable(f"cannot open {self.path}: {exc}") from exc
            return
        await self._executor.run(lambda t: None, write=False)  # opens (and migrates)
        if self.role == "daemon" and self.mode == "create":
            self.inbox.start()
            self._health.start()

    async def server_secret(self) -> bytes:
        # A file beside the database (0600), as before the store had an interface: the
        # CLI reads it there without opening the store (`hookd send`, `hookd plan`).
        from hookd.subscriptions import tokens

        return await asyncio.to_thread(tokens.load_or_create_server_secret, self.state_dir)

    async def aclose(self) -> None:
        await self.inbox.aclose()
        await asyncio.get_running_loop().run_in_executor(None, self._close_rest)

    def leadership(self, *, on_elected: Callable[[], Any] | None = None,
                   on_lost: Callable[[], Any] | None = None) -> interface.Leadership:
        # One daemon opens a SQLite file (its inbox holds the write lock): it leads while
        # no `hookd apply` holds the reconcile lock beside the database, and holds it.
        return Solo(on_elected, lock_file=self.state_dir / LOCK_FILE)

    async def describe(self) -> dict[str, Any]:
        return {"backend": "sqlite", "location": self.location}

    def close(self) -> None:
        inbox = self.inbox
        assert isinstance(inbox, Inbox)
        inbox.close()
        self._close_rest()

    def _close_rest(self) -> None:
        self._health.stop()
        if isinstance(self._executor, ThreadExecutor) and self.role == "daemon" \
                and self.mode == "create" and self._started:
            # Fold the WAL into the main file: a clean stop leaves one self-contained file.
            with contextlib.suppress(errors.StoreError):
                self._executor.call(
                    lambda t: t.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)"), write=False)
        self._executor.close()

"""The store's interface: what the rest of hookd may ask of persistence, and nothing more.

Every caller outside `hookd.store` (the ingest app, the worker, the reconciler, the admin
API, the daemon, the status page, the CLI) holds a `Store` and uses these Protocols; only
a backend (`hookd.store.sqlite`, `hookd.store.postgres`) knows how they are kept. The shape
is chosen so that a backend that talks to a server (PostgreSQL, issue 17) fits without
changing a caller:

- **Async methods** wherever a server backend does network I/O. Only `StoreHealth.state`
  and the hook registrations are synchronous: they never wait for anything.
- **The backend owns transactions.** A method is one transaction (`Subscriptions.apply_many`,
  `RunHistory.finish(..., delivery_id=)` group what must commit together); no caller
  holds a connection or a cursor.
- **Claims carry leases.** `DeliveryQueue.claim` marks deliveries ``running`` until
  ``now + lease``; the claimer renews the leases of what it still runs (`renew`), and a
  delivery whose lease expired (its worker died, or could not write its outcome) is
  claimable again by anyone. `recover` frees what a previous incarnation of this
  claimer left running, at once rather than after the lease.
- **Wake-ups, not polling.** `DeliveryQueue.on_arrival` calls back when deliveries become
  claimable (a SQLite inbox commit in this process; LISTEN/NOTIFY for a server). A
  worker still claims now and then without one (leases expire without a notification).
- **Domain errors** (`hookd.store.errors`): `NotFound`, `Conflict`, `Gone`,
  `Unavailable`/`Busy`; never a driver's exception, never an HTTP status.
- **Health is a last known state** (`StoreHealth.state`), kept current by the store's
  own threads and write outcomes, so that readiness never waits on the store.

The aggregate `Store` is extended by adding a part (an attribute with its own Protocol,
e.g. OAuth tokens) here and in each backend; callers that do not use it are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from hookd.store.activity import Counts, DeliverySummary, FlowFacts, Minute
from hookd.store.records import (
    Delivery,
    NewDelivery,
    Recorded,
    Run,
    RunStatus,
    StepResult,
    StepStatus,
    SubscriptionRow,
    Update,
)

# How the caller uses the store, so that a backend can pick how to run its work:
# "daemon" (the listeners, reconciler, admin API: calls from one event loop, off it),
# "worker" (many small run-history writes from one event loop: SQLite groups the writes of
# one loop turn into one commit, on the loop's own thread), "cli" (short-lived, one call
# at a time). A server backend may ignore it (or size its pool by it).
Role = Literal["daemon", "worker", "cli"]
# "create": open, creating and migrating the store if needed (the daemon, `hookd apply`);
# "existing": raise NotFound when hookd never created a store there (the CLI's readers);
# "readonly": existing, and never written through this handle (`hookd send`);
# "ephemeral": an empty store that keeps nothing (`hookd plan` before hookd ever ran).
Mode = Literal["create", "existing", "readonly", "ephemeral"]
FinishedStatus = Literal["done", "failed", "queued"]


class Subscriptions(Protocol):
    """The subscriptions hookd created upstream: the reconciler's memory."""

    async def get(self, sub_id: str) -> SubscriptionRow | None: ...

    async def all(self) -> list[SubscriptionRow]: ...

    async def apply_many(self, updates: Iterable[Update]) -> None:
        """All of `updates` in one transaction (one commit however many there are)."""

    # One update each, through `apply_many`: a backend that subclasses this Protocol
    # inherits them and implements only the transaction.
    async def upsert(self, row: SubscriptionRow) -> None:
        await self.apply_many([Update("upsert", row.id, row=row)])

    async def set(self, sub_id: str, **fields: Any) -> None:
        await self.apply_many([Update("set", sub_id, fields=fields)])

    async def remove(self, sub_id: str) -> None:
        await self.apply_many([Update("remove", sub_id)])


class Inbox(Protocol):
    """Recording deliveries: each method returns once the record is durable (it is then
    safe to answer 2xx). Raises `hookd.store.errors.Unavailable` when it cannot record."""

    async def record(self, deliveries: Sequence[NewDelivery], *,
                     dedup_key: str | None = None) -> Recorded:
        """Record one request's deliveries; a `dedup_key` recorded within the dedup window
        records nothing and returns the original's id with ``duplicate=True``."""

    async def record_body(self, delivery: NewDelivery, *, dedup_key: str | None = None,
                          check: Any = None, policy: str = "off",
                          batch: bool = False) -> Recorded:
        """`record` for a raw body that the store's writer checks first
        (`hookd.callbacks.payload.examine`: JSON, the schema under ``reject``, a batch split);
        raises `hookd.callbacks.payload.Refused` for a body it will not record."""

    async def mark_verified(self, subscription_id: str, when: float) -> bool:
        """Stamp a subscription's ``verified_at`` (a ping); False when it is unknown."""

    def on_commit(self, callback: Callable[[int, int, float], None]) -> None:
        """``callback(requests, deliveries, seconds)`` after each durable write (metrics)."""

    def start(self) -> None:
        """Be ready to record now (raises on a store that cannot be written)."""

    async def aclose(self) -> None:
        """Make what is pending durable, then refuse further records."""


class DeliveryQueue(Protocol):
    """Recorded deliveries as work: claimed with a lease, finished with an outcome."""

    async def get(self, delivery_id: str) -> Delivery | None: ...

    async def claim(self, limit: int, *, flows: Sequence[str] | None = None,
                    lease: float, max_running: int | None = None) -> list[Delivery]:
        """Up to `limit` claimable deliveries (queued, or running with an expired lease),
        oldest first, now ``running`` until ``now + lease`` seconds; `flows` restricts the
        claim. With `max_running` (a flow's ``concurrency``; `flows` then names that one
        flow) no more of the flow's deliveries run at once, counted over every claimer of
        the store. Two claimers never get the same delivery."""

    async def renew(self, delivery_ids: Sequence[str], lease: float) -> None:
        """Extend the leases of deliveries this claimer still runs."""

    async def finish(self, delivery_id: str, status: FinishedStatus,
                     error: str | None = None) -> None:
        """The claimed delivery's outcome: done, failed, or queued (run it again later)."""

    async def add_flag(self, delivery_id: str, flag: str) -> bool: ...

    async def recover(self) -> int:
        """Free the claims a previous incarnation of this claimer left (it died): they are
        claimable now rather than when their leases expire. Returns how many."""

    async def queued_flows(self) -> list[str]:
        """The flows that have queued deliveries (the worker fails those of removed flows)."""

    async def depth(self) -> int:
        """Deliveries not finished yet (queued or running)."""

    def on_arrival(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback()` (on the caller's event loop, or from any thread: it must be
        thread-safe) when deliveries may have become claimable; returns an unsubscribe."""


class RunHistory(Protocol):
    """Runs and their steps: the history `hookd runs` shows, and what makes runs resumable."""

    async def create(self, delivery_id: str, flow: str, *, config_revision: str = "",
                     status: RunStatus = "queued", error: str | None = None) -> Run: ...

    async def start(self, run_id: str) -> None: ...

    async def finish(self, run_id: str, status: RunStatus, error: str | None = None, *,
                     delivery_id: str | None = None) -> None:
        """The run's outcome; with `delivery_id`, that delivery is finished in the same
        transaction (``succeeded`` → done, ``failed`` → failed, ``queued`` → queued)."""

    async def latest_for_delivery(self, delivery_id: str) -> Run | None: ...

    async def get(self, run_id: str, *, steps: bool = True) -> Run | None:
        """A run (a unique id prefix of 4 or more characters is accepted too)."""

    async def list(self, *, flow: str | None = None, status: str | None = None,
                   delivery_id: str | None = None, limit: int = 50,
                   before: str | None = None) -> list[Run]: ...

    async def since(self, when: float) -> dict[str, int]:
        """Runs created since `when`, by status."""

    async def steps(self, run_id: str) -> tuple[StepResult, ...]: ...

    async def step_started(self, run_id: str, step_id: str, index: int, kind: str,
                           attempt: int, input: Any) -> float: ...

    async def step_retrying(self, run_id: str, step_id: str, error: str,
                            output: Any = None) -> None: ...

    async def step_finished(self, run_id: str, step_id: str, status: StepStatus, *,
                            output: Any = None, error: str | None = None, index: int = 0,
                            kind: str = "", input: Any = None) -> float: ...

    async def replay(self, ident: str, *, kind: Literal["run", "delivery"] | None = None) -> str:
        """Queue the delivery of run (or delivery) `ident` again; returns the delivery id.
        Raises `NotFound`, `Conflict` (still queued or running) or `Gone` (pruned)."""

    async def prune(self, *, max_age: float, max_runs: int) -> dict[str, int]:
        """Retention: finished runs older than `max_age` or beyond `max_runs`, then the
        finished deliveries older than `max_age`; returns how many of each went."""


class Activity(Protocol):
    """Read-only summaries of the history (the status page): counts, per-minute activity,
    filtered delivery lists, what is new since a cursor. Each is a few index seeks
    whatever the history's size: delivery and run ids begin with their creation time
    (`hookd.store.activity.id_at` turns a time into an id bound), lists are keyset
    paginated on the id, newest first."""

    async def counts_since(self, since: float) -> Counts:
        """Deliveries and runs (by status) created since `since`."""

    async def per_minute(self, start: float, minutes: int) -> list[Minute]:
        """Deliveries received and failed runs created in each minute from `start`."""

    async def deliveries(self, *, flow: str | None = None, status: str | None = None,
                         since: float | None = None, until: float | None = None,
                         before: str | None = None, limit: int = 50) -> list[DeliverySummary]:
        """Newest first, filtered; `before` (a delivery id) pages further back."""

    async def deliveries_after(self, after: str, limit: int = 100) -> list[DeliverySummary]:
        """Deliveries recorded after the one with id `after` ("": all), oldest first."""

    async def runs_after(self, after: str, limit: int = 100) -> list[Run]:
        """Runs created after the one with id `after`, oldest first, without steps."""

    async def flow_facts(self, flows: list[str], rate_of: int) -> dict[str, FlowFacts]:
        """Each flow's newest delivery and run and its last `rate_of` finished runs'
        statuses, in one call."""

    async def cursors(self) -> tuple[str, str]:
        """The newest delivery and run ids ("" when there is none)."""

    async def body(self, delivery_id: str) -> bytes | None:
        """A delivery's body as received (None: no such delivery)."""


@dataclass(frozen=True)
class Health:
    """The store's last known state. `ok` is False while it cannot record deliveries
    (`error` says why: disk full, the write lock held by another process, closed)."""

    ok: bool
    error: str | None = None
    checked_at: float = 0.0  # time.time() of the observation
    wal_bytes: int | None = None  # SQLite: the write-ahead log's size (None: no such thing)


class StoreHealth(Protocol):
    def state(self) -> Health:
        """Never blocks: what the store's threads and last writes have seen."""


class Leadership(Protocol):
    """Whether this process leads: reconciles, prunes, runs the scheduled jobs. Exactly
    one process per store leads (SQLite: the one daemon; PostgreSQL: the replica holding
    the leader lock). `on_elected`/`on_lost` (given to `Store.leadership`) are called on
    the event loop when that changes."""

    leading: bool
    # True while the lead is the one taken at the first attempt, as the process started
    # (SQLite: always); False after a takeover from a leader that died.
    at_start: bool
    # Tries to take the lead so far: a command that may wait only so long for it
    # (`hookd apply --wait`) gives up after its deadline once it has tried at least once.
    attempts: int

    def start(self) -> None: ...

    async def aclose(self) -> None: ...


class Store(Protocol):
    """One store, its parts as attributes (`hookd.store.open` returns one)."""

    # Read-only to callers (properties, so that a backend's own classes fit).
    @property
    def subscriptions(self) -> Subscriptions: ...

    @property
    def inbox(self) -> Inbox: ...

    @property
    def deliveries(self) -> DeliveryQueue: ...

    @property
    def runs(self) -> RunHistory: ...

    @property
    def health(self) -> StoreHealth: ...

    @property
    def activity(self) -> Activity: ...

    @property
    def location(self) -> str:
        """Where the store is, for messages (a path, or a URL without its password)."""

    async def start(self) -> None:
        """Connect; call it before anything else, on the event loop that will use the store
        (a server backend's pool, and a "worker" store's connection, belong to it)."""

    async def server_secret(self) -> bytes:
        """The secret that derives callback tokens, created once: kept with the store, so
        that every process (every replica of a shared store) mints the same callback URLs."""

    async def aclose(self) -> None:
        """Make what is pending durable and close (a clean stop leaves one tidy file)."""

    def close(self) -> None:
        """`aclose` for code without an event loop (the CLI)."""

    def leadership(self, *, on_elected: Callable[[], Any] | None = None,
                   on_lost: Callable[[], Any] | None = None) -> Leadership:
        """A campaign to lead (not started): see `Leadership`."""

    async def describe(self) -> dict[str, Any]:
        """What `hookd status` shows of the store: ``backend``, ``location``, and for a
        shared store its ``replicas`` (name, host, pid, version, heartbeat, leader)."""

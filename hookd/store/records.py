"""The store's records: what every backend reads and writes, independent of how.

These dataclasses cross the store's interface (`hookd.store.interface`), so they live
here rather than in a backend: the SQLite modules map them to rows, a PostgreSQL backend
would do the same. Ids are made here too (`new_id`), so that every backend hands out the
same time-ordered ids and an export from one imports into another unchanged.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# ---------------------------------------------------------------- deliveries

DeliveryStatus = Literal["queued", "running", "done", "failed"]
FINAL_STATUSES = ("done", "failed")

# Flag set when the payload did not match the trigger's schema under policy "warn".
FLAG_SCHEMA_WARNING = "schema-warning"

@dataclass(frozen=True)
class NewDelivery:
    """A delivery about to be recorded (no id, no status yet).

    `headers` are the request headers as received (lower-cased names); `body` is the raw
    body, or for one item of a batch trigger that item as JSON; `item` is then its index.
    `dedup_key` is ``<subscription id>:<delivery-id header value>`` when the connector
    names such a header.
    """

    subscription_id: str
    flow: str
    received_at: float
    headers: Mapping[str, str]
    body: bytes
    event: str | None = None
    dedup_key: str | None = None
    flags: tuple[str, ...] = ()
    item: int | None = None


@dataclass(frozen=True)
class Delivery:
    id: str
    subscription_id: str
    flow: str
    received_at: float
    headers: Mapping[str, str]
    body: bytes
    event: str | None
    dedup_key: str | None
    item: int | None
    status: DeliveryStatus
    attempts: int
    flags: tuple[str, ...] = field(default=())
    error: str | None = None
    updated_at: float = 0.0

    def json(self) -> Any:
        """The body parsed as JSON (the server only records bodies that parse)."""
        return json.loads(self.body) if self.body else None

    @property
    def delivery_id(self) -> str | None:
        """The upstream's own delivery id (the part of `dedup_key` after the subscription)."""
        if self.dedup_key is None:
            return None
        return self.dedup_key.split(":", 1)[1] if ":" in self.dedup_key else self.dedup_key


class _IdGenerator:
    """Time-ordered ids: 12 hex ms timestamp, 4 hex sequence, 8 hex random.

    The sequence makes ids generated in the same millisecond by this process sort in
    generation order; the random part keeps two processes from colliding.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._seq = 0

    def __call__(self, now: float | None = None) -> str:
        ms = int((time.time() if now is None else now) * 1000)
        with self._lock:
            if ms <= self._last_ms:
                ms = self._last_ms
                self._seq += 1
                if self._seq > 0xFFFF:  # more than 65k ids in one ms: borrow the next ms
                    ms += 1
                    self._seq = 0
            else:
                self._seq = 0
            self._last_ms = ms
            seq = self._seq
        return f"{ms:012x}{seq:04x}{random.getrandbits(32):08x}"


new_id = _IdGenerator()


@dataclass(frozen=True)
class Recorded:
    """What the inbox did with one request: the delivery ids, or the original's on a repeat."""

    ids: list[str]
    duplicate: bool = False


# ---------------------------------------------------------------- subscriptions

SubscriptionStatus = Literal["pending", "active", "failed", "deleting", "orphaned"]
SUBSCRIPTION_STATUSES: tuple[SubscriptionStatus, ...] = ("pending", "active", "failed", "deleting", "orphaned")

@dataclass(frozen=True)
class SubscriptionRow:
    id: str
    flow: str
    fingerprint: str
    connector: str
    operation: str
    connection: str | None
    scope: str | None  # list scope (hookd.subscriptions.desired.scope_key) or None
    # Non-secret subscribe parameters (path/query, e.g. owner/repo): a delete operation
    # needs them next to the upstream id. Secret references are stored as their text.
    parameters: Mapping[str, Any]
    location: str | None
    upstream_id: str | None
    secret: str = field(repr=False)
    status: SubscriptionStatus = "pending"
    last_error: str | None = None
    verified_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    def public_dict(self) -> dict[str, Any]:
        """Every field except the secret (for `hookd subscriptions --format json`)."""
        return {
            "id": self.id, "flow": self.flow, "status": self.status,
            "connector": self.connector, "operation": self.operation,
            "connection": self.connection, "fingerprint": self.fingerprint,
            "location": self.location, "upstream_id": self.upstream_id,
            "last_error": self.last_error, "verified_at": self.verified_at,
            "created_at": self.created_at, "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class Update:
    """One change to one row, for `SubscriptionStore.apply_many` (group commit).

    kind: ``upsert`` (`row` replaces any row with its id), ``set`` (`fields` on `sub_id`),
    ``remove`` (drop `sub_id`).
    """

    kind: Literal["upsert", "set", "remove"]
    sub_id: str
    row: SubscriptionRow | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


SETTABLE = frozenset({"status", "location", "upstream_id", "last_error", "verified_at"})


# ---------------------------------------------------------------- runs

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
StepStatus = Literal["running", "succeeded", "failed", "skipped"]
RUN_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED: tuple[str, ...] = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class StepResult:
    step_id: str
    index: int
    kind: str
    status: StepStatus
    attempt: int
    started_at: float
    ended_at: float | None
    input: Any
    output: Any
    error: str | None

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.step_id,
            "index": self.index,
            "kind": self.kind,
            "status": self.status,
            "attempt": self.attempt,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration": self.duration,
            "input": self.input,
            "output": self.output,
            "error": self.error,
        }


@dataclass(frozen=True)
class Run:
    id: str
    delivery_id: str
    flow: str
    status: RunStatus
    attempt: int
    config_revision: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    steps: tuple[StepResult, ...] = field(default=())

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def to_json(self, *, steps: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "delivery": self.delivery_id,
            "flow": self.flow,
            "status": self.status,
            "attempt": self.attempt,
            "config_revision": self.config_revision,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": self.duration,
            "error": self.error,
        }
        if steps:
            out["steps"] = [s.to_json() for s in self.steps]
        return out


# Run ids are time-ordered like delivery ids (sorting by id is sorting by creation, ids
# from two processes do not collide): one generator serves both.
new_run_id = new_id


def steps_done(results: Sequence[StepResult]) -> dict[str, StepResult]:
    """The steps of a run that finished (any status but running), by step id."""
    return {s.step_id: s for s in results if s.status != "running"}



"""What each page shows, as plain frozen dataclasses: the templates read only these.

Keeping the pages on view models (rather than store rows) means a page never touches a
secret it could leak (a subscription's signing secret is not in `SubscriptionView`), and
the queries that fill them can change store without a template noticing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Store records the pages show as they are (their error text masked by the queries).
from hookd.store.activity import DeliverySummary, Minute


@dataclass(frozen=True)
class ReloadView:
    at: float
    trigger: str
    ok: bool
    revision: str
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReconcileView:
    """The last reconcile pass, and when the next scheduled one is due."""

    at: float | None  # None: none has finished yet
    reason: str = ""
    ok: bool = True
    summary: str = ""  # e.g. "3 keep, 1 create"
    error: str = ""
    next_at: float | None = None


@dataclass(frozen=True)
class DaemonView:
    """What only the running daemon knows (the daemon fills it; tests pass their own)."""

    version: str
    started_at: float
    revision: str
    last_reload: ReloadView | None = None
    reconcile: ReconcileView | None = None


@dataclass(frozen=True)
class Problem:
    """A failing subscription or flow, for the overview's "needs attention" list."""

    kind: str  # "subscription" or "flow"
    flow: str
    id: str  # subscription id or run id
    error: str
    at: float | None
    hint: str = ""


@dataclass(frozen=True)
class Overview:
    daemon: DaemonView
    now: float
    flows: int
    subscriptions: Mapping[str, int]  # state → count
    deliveries_last_hour: int
    inbox_depth: int  # deliveries not finished yet (queued or running)
    runs_last_hour: Mapping[str, int]  # status → count
    problems: Sequence[Problem]
    buckets: Sequence[Minute]  # oldest first, one per minute over the last 24 h
    recent_deliveries: Sequence[DeliverySummary] = ()
    recent_runs: Sequence[RunSummary] = ()


@dataclass(frozen=True)
class SubscriptionView:
    id: str
    flow: str
    connector: str
    operation: str
    connection: str | None
    status: str
    location: str | None
    upstream_id: str | None
    last_error: str | None
    verified_at: float | None  # when the upstream last pinged
    created_at: float
    updated_at: float

    @property
    def failing(self) -> bool:
        return self.status in ("failed", "orphaned") or bool(self.last_error)


@dataclass(frozen=True)
class RequestPreview:
    """The subscribe request `hookd plan` would send now, secrets masked."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: str  # formatted JSON, or ""


@dataclass(frozen=True)
class SubscriptionDetail:
    subscription: SubscriptionView | None  # None: desired but not recorded yet
    id: str
    flow: str
    events: tuple[str, ...]
    request: RequestPreview | None
    hint: str = ""


@dataclass(frozen=True)
class RunSummary:
    id: str
    delivery_id: str
    flow: str
    status: str
    attempt: int
    created_at: float
    duration: float | None
    error: str | None


@dataclass(frozen=True)
class FlowRow:
    name: str
    enabled: bool
    connector: str
    operation: str
    subscription: SubscriptionView | None
    last_ping: float | None
    last_delivery_at: float | None
    last_delivery_id: str | None
    last_run: RunSummary | None
    success_rate: float | None  # over `rate_of` finished runs; None when none
    rate_of: int = 0

    @property
    def failing(self) -> bool:
        return (self.subscription is not None and self.subscription.failing) or (
            self.last_run is not None and self.last_run.status == "failed")


@dataclass(frozen=True)
class DeliveryFilter:
    flow: str | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None

    def query(self, **extra: str) -> dict[str, str]:
        """The filter as query parameters (for links that keep it)."""
        out = {k: str(v) for k, v in (("flow", self.flow), ("status", self.status)) if v}
        if self.since is not None:
            out["since"] = _iso(self.since)
        if self.until is not None:
            out["until"] = _iso(self.until)
        return {**out, **extra}


@dataclass(frozen=True)
class DeliveryPage:
    rows: Sequence[DeliverySummary]
    filter: DeliveryFilter
    next_before: str | None  # keyset: the id to page further back from; None at the end
    flows: Sequence[str] = ()


@dataclass(frozen=True)
class DeliveryDetail:
    row: DeliverySummary
    headers: Mapping[str, str]  # secrets already masked
    body: str  # formatted JSON, cut at the cap
    body_truncated: bool
    runs: Sequence[RunSummary] = ()


@dataclass(frozen=True)
class StepView:
    id: str
    index: int
    kind: str
    status: str
    attempt: int  # > 1: retried
    started_at: float
    duration: float | None
    input: str  # formatted JSON
    output: str
    error: str | None


@dataclass(frozen=True)
class RunDetail:
    run: RunSummary
    config_revision: str
    started_at: float | None
    finished_at: float | None
    steps: Sequence[StepView]
    other_attempts: Sequence[RunSummary] = field(default=())

    @property
    def finished(self) -> bool:
        return self.run.status in ("succeeded", "failed", "cancelled")


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M")

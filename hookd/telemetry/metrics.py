"""hookd's Prometheus series, on prometheus-client with one registry per app.

Each `Metrics` owns its own `CollectorRegistry` (never the library's global one), so two
apps in one process — tests, `hookd send`'s in-process listener, a reload — count apart.
The exposition (``/metrics``) is the library's. What hookd adds is small:

- `Counter` and `Histogram` keep hookd's call shape (``inc(*label_values, by=…)``,
  ``observe(value, *label_values)``) and remember each label combination's child, so
  the per-request cost is one dict lookup plus the library's locked add
  (docs/adr/0005-prometheus-client.md has the micro-measurement).
- `Gauge` and `Family` read their values when scraped (the inbox depth from the store,
  the reloader's counts); a source that raises or answers None leaves its sample out,
  so a broken source never breaks ``/metrics``.

Label values are escaped by the library; label *names* are fixed by the code.
Subscriptions are labelled only once routed: a path with an unknown id is counted under
``subscription=""`` so that random URLs cannot blow up the number of series.
``*_created`` series are off: hookd's series are born with the process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Literal, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

prometheus_client.disable_created_metrics()

# Seconds: an ingest answers in ~1-20 ms; upstreams give up after ~10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Counter:
    """A counter; `name` ends in ``_total`` as exposed."""

    def __init__(self, registry: CollectorRegistry, name: str, help: str,
                 labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self._registry = registry
        self._metric = prometheus_client.Counter(name.removesuffix("_total"), help,
                                                 self.label_names, registry=registry)
        self._children: dict[tuple[str, ...], prometheus_client.Counter] = {}

    def inc(self, *labels: str, by: float = 1.0) -> None:
        child = self._children.get(labels)
        if child is None:  # labels() is idempotent: a race only looks up twice
            child = self._metric.labels(*labels) if labels else self._metric
            self._children[labels] = child
        child.inc(by)

    def value(self, *labels: str) -> float:
        """The current count (for tests and status pages; a scrape's cost)."""
        found = self._registry.get_sample_value(self.name, dict(zip(self.label_names, labels,
                                                                     strict=True)))
        return found or 0.0


class Histogram:
    def __init__(self, registry: CollectorRegistry, name: str, help: str,
                 labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self._registry = registry
        self._metric = prometheus_client.Histogram(name, help, self.label_names,
                                                   registry=registry, buckets=buckets)
        self._children: dict[tuple[str, ...], prometheus_client.Histogram] = {}

    def observe(self, value: float, *labels: str) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._metric.labels(*labels) if labels else self._metric
            self._children[labels] = child
        child.observe(value)

    def count(self, *labels: str) -> int:
        """Observations so far (for tests; a scrape's cost)."""
        found = self._registry.get_sample_value(f"{self.name}_count", dict(
            zip(self.label_names, labels, strict=True)))
        return int(found or 0)


class Gauge(Collector):
    """One value read from `read()` when scraped (e.g. the inbox depth from the store)."""

    def __init__(self, name: str, help: str, read: Callable[[], float | None] | None = None) -> None:
        self.name, self.help, self.read = name, help, read

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.help)]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.help)
        value = _read(self.read)
        if value is not None:
            family.add_metric([], value)
        return [family]


class Family(Collector):
    """Values by one label, read when scraped: ``read() -> {label value: number}``
    (the reloader's counts by outcome, the running revision as an info-style gauge)."""

    def __init__(self, name: str, help: str, kind: Literal["counter", "gauge"], label: str,
                 read: Callable[[], Mapping[str, float]]) -> None:
        self.name, self.help, self.kind, self.label, self.read = name, help, kind, label, read

    def _family(self) -> CounterMetricFamily | GaugeMetricFamily:
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=[self.label])
        return GaugeMetricFamily(self.name, self.help, labels=[self.label])

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        values = _read(self.read)
        for label, value in (values or {}).items():
            family.add_metric([str(label)], value)
        return [family]


T = TypeVar("T")
C = TypeVar("C", bound=Collector)


def _read(read: Callable[[], T] | None) -> T | None:
    if read is None:
        return None
    try:
        return read()
    except Exception:  # a broken source must not break /metrics
        return None


class Metrics:
    """hookd's series in a registry of their own; one instance per app, passed to it."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            r, "hookd_deliveries_total",
            "Callback requests by subscription, flow and outcome (accepted, duplicate, ping, "
            "unauthorized, not_found, gone, disabled, too_large, bad_request, invalid_payload, "
            "unavailable, error).",
            ("subscription", "flow", "outcome"),
        )
        self.verification_failures = Counter(
            r, "hookd_verification_failures_total",
            "Callback requests refused because the signature or token did not verify.",
            ("subscription", "flow"),
        )
        self.request_seconds = Histogram(
            r, "hookd_request_duration_seconds",
            "Time from request received to answer sent on the callback listener.",
            ("outcome",),
        )
        self.inbox_commits = Counter(
            r, "hookd_inbox_commits_total", "Group commits of the inbox writer."
        )
        self.inbox_recorded = Counter(
            r, "hookd_inbox_deliveries_recorded_total", "Deliveries durably recorded."
        )
        self.inbox_commit_seconds = Histogram(
            r, "hookd_inbox_commit_duration_seconds",
            "Time of one group commit (write and fsync).",
        )
        self.inbox_batch = Histogram(
            r, "hookd_inbox_batch_size",
            "Requests written per group commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.inbox_depth = self.add(Gauge(
            "hookd_inbox_depth", "Deliveries recorded and not finished (queued or running)."
        ))
        self.store_wal_bytes = self.add(Gauge(
            "hookd_store_wal_bytes",
            "Size of the SQLite write-ahead log (bounded under steady load by the inbox's"
            " checkpoints; a WAL that keeps growing means they cannot complete).",
        ))
        self.reconcile_results = Counter(
            r, "hookd_reconcile_results_total",
            "Reconcile actions by kind (create, delete, keep, repair, …) and result (ok, error).",
            ("action", "result"),
        )

    def add(self, collector: C) -> C:
        """Register another source of series (the daemon's reload gauges)."""
        self.registry.register(collector)
        return collector

    def observe_commit(self, jobs: int, recorded: int, seconds: float) -> None:
        """`hookd.store.interface.Inbox.on_commit` callback."""
        self.inbox_commits.inc()
        self.inbox_recorded.inc(by=recorded)
        self.inbox_commit_seconds.observe(seconds)
        self.inbox_batch.observe(jobs)

    def render(self) -> str:
        """The Prometheus text exposition (0.0.4) of every series of this registry."""
        return prometheus_client.generate_latest(self.registry).decode()

    def families(self) -> Iterator[Metric]:
        """Every series family (name, type, help), for tests and docs."""
        return iter(self.registry.collect())

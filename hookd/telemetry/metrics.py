"""Counters and histograms in the Prometheus text format, without a dependency.

hookd needs a handful of series (deliveries by outcome, verification failures, request
latency, inbox commits, reconcile results); a small registry that renders the text
exposition format (version 0.0.4) is less code to trust than a client library and its
global registry. Everything here is pure: `render()` returns the text the admin listener
serves at ``/metrics``; gauges read their value from a callback when rendered.

Label values are escaped; label *names* are fixed by the code. Subscriptions are labelled
only once routed: a path with an unknown id is counted under ``subscription=""`` so that
random URLs cannot blow up the number of series.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Sequence

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Counter:
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self._values: dict[LabelValues, float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, by: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + by

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def samples(self) -> Iterable[str]:
        for labels, value in sorted(self._values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {_num(value)}"


class Gauge:
    """A value read from `read()` when rendered (e.g. the inbox depth from the store)."""

    kind = "gauge"

    def __init__(self, name: str, help: str, read: Callable[[], float | None] | None = None) -> None:
        self.name, self.help, self.read = name, help, read

    def samples(self) -> Iterable[str]:
        if self.read is None:
            return
        try:
            value = self.read()
        except Exception:  # a broken source must not break /metrics
            return
        if value is not None:
            yield f"{self.name} {_num(value)}"


# Seconds: an ingest answers in ~1-20 ms; upstreams give up after ~10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Histogram:
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> None:
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self.buckets = tuple(sorted(buckets))
        self._data: dict[LabelValues, list[float]] = {}  # bucket counts…, sum, count
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            data = self._data.get(labels)
            if data is None:
                data = self._data[labels] = [0.0] * (len(self.buckets) + 2)
            if i < len(self.buckets):
                data[i] += 1
            data[-2] += value
            data[-1] += 1

    def count(self, *labels: str) -> int:
        data = self._data.get(labels)
        return int(data[-1]) if data else 0

    def samples(self) -> Iterable[str]:
        for labels, data in sorted(self._data.items()):
            cumulative = 0.0
            for bound, n in zip(self.buckets, data, strict=False):
                cumulative += n
                le = f'le="{_num(bound)}"'
                yield f"{self.name}_bucket{_labels(self.label_names, labels, le)} {_num(cumulative)}"
            inf = 'le="+Inf"'
            yield f"{self.name}_bucket{_labels(self.label_names, labels, inf)} {_num(data[-1])}"
            yield f"{self.name}_sum{_labels(self.label_names, labels)} {_num(data[-2])}"
            yield f"{self.name}_count{_labels(self.label_names, labels)} {_num(data[-1])}"


Metric = Counter | Gauge | Histogram


class Metrics:
    """hookd's series. One instance per process, passed to the apps (no global registry)."""

    def __init__(self) -> None:
        self.deliveries = Counter(
            "hookd_deliveries_total",
            "Callback requests by subscription, flow and outcome (accepted, duplicate, ping, "
            "unauthorized, not_found, gone, disabled, too_large, bad_request, invalid_payload, "
            "unavailable, error).",
            ("subscription", "flow", "outcome"),
        )
        self.verification_failures = Counter(
            "hookd_verification_failures_total",
            "Callback requests refused because the signature or token did not verify.",
            ("subscription", "flow"),
        )
        self.request_seconds = Histogram(
            "hookd_request_duration_seconds",
            "Time from request received to answer sent on the callback listener.",
            ("outcome",),
        )
        self.inbox_commits = Counter(
            "hookd_inbox_commits_total", "Group commits of the inbox writer."
        )
        self.inbox_recorded = Counter(
            "hookd_inbox_deliveries_recorded_total", "Deliveries durably recorded."
        )
        self.inbox_commit_seconds = Histogram(
            "hookd_inbox_commit_duration_seconds",
            "Time of one group commit (write and fsync).",
        )
        self.inbox_batch = Histogram(
            "hookd_inbox_batch_size",
            "Requests written per group commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.inbox_depth = Gauge(
            "hookd_inbox_depth", "Deliveries recorded and not finished (queued or running)."
        )
        self.store_wal_bytes = Gauge(
            "hookd_store_wal_bytes",
            "Size of the SQLite write-ahead log (bounded under steady load by the inbox's"
            " checkpoints; a WAL that keeps growing means they cannot complete).",
        )
        self.reconcile_results = Counter(
            "hookd_reconcile_results_total",
            "Reconcile actions by kind (create, delete, keep, repair, …) and result (ok, error).",
            ("action", "result"),
        )
        self.extra: list[Metric] = []

    def observe_commit(self, jobs: int, recorded: int, seconds: float) -> None:
        """`hookd.store.sqlite.inbox.Inbox.on_commit` callback."""
        self.inbox_commits.inc()
        self.inbox_recorded.inc(by=recorded)
        self.inbox_commit_seconds.observe(seconds)
        self.inbox_batch.observe(jobs)

    def all(self) -> list[Metric]:
        return [
            self.deliveries, self.verification_failures, self.request_seconds,
            self.inbox_commits, self.inbox_recorded, self.inbox_commit_seconds,
            self.inbox_batch, self.inbox_depth, self.store_wal_bytes, self.reconcile_results,
            *self.extra,
        ]

    def render(self) -> str:
        return render(self.all())


def render(metrics: Iterable[Metric]) -> str:
    """The Prometheus text exposition of `metrics` (HELP, TYPE, samples)."""
    lines: list[str] = []
    for m in metrics:
        lines.append(f"# HELP {m.name} {m.help}")
        lines.append(f"# TYPE {m.name} {m.kind}")
        lines.extend(m.samples())
    return "\n".join(lines) + "\n"

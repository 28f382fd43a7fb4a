"""The HTTP protocol both listeners speak: uvicorn's httptools protocol, bounded.

uvicorn closes a connection only after a response (``timeout_keep_alive``): a client that
connects and sends nothing, or half a request line, keeps its file descriptor forever,
and its own limits (``limit_concurrency``) answer 503 to *requests*, so idle connections
never see them. ~1000 idle connections under the default fd limit (1024) made every
delivery and ``/readyz`` fail. httptools (the parser hookd uses) has no header-size limit
either: a 64 MiB header was parsed, kept in memory and stored with the delivery.

`GuardedProtocol` adds, per listener (a `Guard`):

- a **header timeout**: from the connection (or the end of the previous response) to the
  end of the request headers; then the connection is closed;
- a **body timeout**: from the end of the headers to the end of the body;
- a **header-size cap**: the bytes before the end of the headers are counted as they
  arrive and the parser is fed at most the cap, so memory does not grow with what a
  client sends; beyond it the answer is ``431`` and the connection is closed after a
  short linger that drops what the client still sends (so the client can read the 431
  instead of a reset);
- a **connection cap**: at the cap, a new connection closes the oldest one that has no
  request in progress (idle or still sending headers: what a flood is made of), and is
  itself refused when every connection has a request in flight. A real sender sends its
  headers within milliseconds, so it is the newest, and last to go.

These refusals happen before any routing or ASGI app, so they are answered here; every
other HTTP answer comes from the apps (`hookd.ingest.app.error_response`). What was
measured before and after, and what uvicorn's own options do not cover:
docs/adr/0009-listener-bounds.md.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hookd.config.model import Limits

log = logging.getLogger("hookd.daemon.protocol")

LINGER = 2.0  # seconds a refused connection drains what the client still sends
# File descriptors kept free of the public listener's connections: the admin listener's
# connections (ADMIN_CONNECTIONS), the store, the worker's pipes, upstream connections.
FD_RESERVE = 256
ADMIN_CONNECTIONS = 64
REASONS = ("header_timeout", "body_timeout", "headers_too_large", "evicted", "refused")


@dataclass(frozen=True)
class Policy:
    """The bounds of one listener (from hookd.yaml's ``limits``, see `hookd.daemon.listeners`)."""

    max_connections: int
    max_headers: int  # bytes of request line + headers
    header_timeout: float  # seconds
    body_timeout: float  # seconds


@dataclass
class Guard:
    """What the connections of one listener share: the policy, who is idle, the counts."""

    name: str
    policy: Policy
    # Connections without a request in progress, oldest first (the eviction order).
    idle: collections.OrderedDict[GuardedProtocol, None] = field(
        default_factory=collections.OrderedDict)
    open: int = 0
    closed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))

    def count(self, reason: str) -> None:
        self.closed[reason] += 1
        # One message per listener and reason: the log handler throttles each (logs.FloodFilter).
        log.warning(f"{self.name} listener closed a connection ({reason})",
                    extra={"listener": self.name, "reason": reason,
                           "limits": _limits_text(self.policy)})


def _limits_text(policy: Policy) -> str:
    return (f"max_connections={policy.max_connections} max_headers={policy.max_headers} "
            f"header_timeout={policy.header_timeout:g}s body_timeout={policy.body_timeout:g}s")


def policies(limits: Limits, open_files: int | None) -> dict[str, Policy]:
    """The public and admin listeners' policies under the process's open-file limit.

    The public cap leaves `FD_RESERVE` descriptors free, so a flood on it can never take
    the admin listener's, the store's or the worker's; the admin listener has a small
    cap of its own.

    >>> from hookd.config.model import Limits
    >>> policies(Limits(), 1024)["public"].max_connections
    768
    >>> policies(Limits(max_connections=100), None)["public"].max_connections
    100
    """
    public = limits.max_connections
    if open_files is not None:
        public = max(16, min(public, open_files - FD_RESERVE))
    return {
        name: Policy(max_connections=cap, max_headers=limits.max_headers,
                     header_timeout=limits.header_timeout, body_timeout=limits.body_timeout)
        for name, cap in (("public", public), ("admin", ADMIN_CONNECTIONS))
    }


def open_file_limit() -> int | None:
    """The soft RLIMIT_NOFILE, None when unlimited."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def protocol_class(guard: Guard) -> type[GuardedProtocol]:
    """The protocol class uvicorn instantiates per connection of this listener."""
    return type(f"GuardedProtocol_{guard.name}", (GuardedProtocol,), {"guard": guard})


class GuardedProtocol(HttpToolsProtocol):
    guard: ClassVar[Guard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = True  # the bytes arriving belong to a request's head
        self._head_bytes = 0
        self._refused = False  # answered here: what arrives is dropped
        self._counted = False

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        guard.open += 1
        self._counted = True
        if guard.open > guard.policy.max_connections:
            victim = next(iter(guard.idle), None)
            if victim is None:  # every connection has a request in flight
                guard.count("refused")
                self._drop()
                transport.close()
                return
            guard.count("evicted")
            victim._drop()
            victim.transport.close()
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop()
        super().connection_lost(exc)

    def _drop(self) -> None:
        """Forget this connection in the guard (idempotent)."""
        self._cancel()
        self.guard.idle.pop(self, None)
        if self._counted:
            self._counted = False
            self.guard.open -= 1

    # ------------------------------------------------------------------ timers

    def _arm(self, seconds: float, reason: str) -> None:
        self._cancel()
        self._timer = self.loop.call_later(seconds, self._expired, reason)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, reason: str) -> None:
        self._timer = None
        if reason != "linger":
            self.guard.count(reason)
        self._drop()
        if not self.transport.is_closing():
            self.transport.close()  # a waiting app sees http.disconnect

    def _wait_for_head(self) -> None:
        """No request in progress: the next bytes are a head, due within the header timeout."""
        self._in_head, self._head_bytes = True, 0
        self.guard.idle[self] = None
        self._arm(self.guard.policy.header_timeout, "header_timeout")

    # ------------------------------------------------------------------ data

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a 431
        cap = self.guard.policy.max_headers
        while self._in_head and data:
            room = cap - self._head_bytes
            if room <= 0:
                self._headers_too_large()
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self.guard.idle.pop(self, None)
        self._arm(self.guard.policy.body_timeout, "body_timeout")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel()
        # What arrives next is the next request's head (pipelined, or after this answer).
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed its keep-alive timer: nothing is pipelined, the connection is idle.
        if self.timeout_keep_alive_task is not None and not self.transport.is_closing():
            self._wait_for_head()

    def _headers_too_large(self) -> None:
        guard = self.guard
        guard.count("headers_too_large")
        self._refused = True
        self._drop()
        if self.cycle is None or self.cycle.response_complete:
            body = b'{"error":"request headers larger than %d bytes"}' % guard.policy.max_headers
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (len(body), body))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._arm(LINGER, "linger")
        else:
            self.transport.close()


class GuardMetrics(Collector):
    """``hookd_connections_open{listener}`` and ``hookd_connections_closed_total{listener,
    reason}``: a flood shows as evictions and header timeouts, not as failed deliveries."""

    def __init__(self, guards: list[Guard]) -> None:
        self.guards = guards

    def _families(self) -> tuple[CounterMetricFamily, GaugeMetricFamily]:
        closed = CounterMetricFamily(
            "hookd_connections_closed", "Connections hookd closed before a request completed, "
            "by listener and reason (header_timeout, body_timeout, headers_too_large, "
            "evicted, refused).", labels=["listener", "reason"])
        open_ = GaugeMetricFamily("hookd_connections_open", "Connections open on each listener.",
                                  labels=["listener"])
        return closed, open_

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        closed, open_ = self._families()
        for g in self.guards:
            for reason, n in g.closed.items():
                closed.add_metric([g.name, reason], n)
            open_.add_metric([g.name], g.open)
        return closed, open_

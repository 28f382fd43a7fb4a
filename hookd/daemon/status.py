"""What the running daemon is doing, in one screen: ``GET /api/status`` and its rendering.

Operators ask the same few questions after a push or an alert: which config revision is
running, did the last reload take, are the webhooks upstream healthy, is work piling up,
are runs failing. The daemon gathers the facts (`StatusFacts`, I/O lives in the daemon);
everything here is pure: the JSON document served on the admin listener, the one-line
summary sent to systemd as ``STATUS=``, and the text `hookd status` prints.

>>> summary_line(12, {"active": 11, "failed": 1})
'12 flows, 11 subscriptions active, 1 failing'
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Subscription states that mean "needs attention" in summaries. "retrying" is not a stored
# status: it is a `pending` row with a last error (its create failed and is retried), see
# `shown_state`.
FAILING_STATES = ("failed", "orphaned", "retrying")


def shown_state(stored: str, last_error: str | None) -> str:
    """The state status documents count a subscription under.

    A create that keeps timing out leaves its row `pending` (it may have happened
    upstream, so the next pass looks before creating again); counting it as pending
    said "0 failing" while every create failed.

    >>> shown_state("pending", None), shown_state("pending", "502 Bad Gateway")
    ('pending', 'retrying')
    """
    return "retrying" if stored == "pending" and last_error else stored


def state_counts(rows: Iterable[tuple[str, str | None]]) -> dict[str, int]:
    """(stored status, last error) pairs → shown state → count."""
    counts: dict[str, int] = {}
    for stored, last_error in rows:
        state = shown_state(stored, last_error)
        counts[state] = counts.get(state, 0) + 1
    return counts


@dataclass(frozen=True)
class ReloadOutcome:
    """The result of one attempt to load the config (at start, on a file change, on SIGHUP)."""

    at: float  # unix time
    trigger: str  # "start", "watch", "sighup"
    ok: bool
    revision: str  # of the files that were loaded (also when rejected)
    errors: tuple[str, ...] = ()  # formatted diagnostics when rejected

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at, "trigger": self.trigger,
            "outcome": "applied" if self.ok else "rejected",
            "revision": self.revision, "errors": list(self.errors),
        }


@dataclass(frozen=True)
class Failure:
    """A recent problem worth showing: a subscription in a failing state or a failed run."""

    kind: str  # "subscription" or "run"
    name: str  # flow name
    id: str
    error: str
    at: float | None = None


@dataclass(frozen=True)
class StatusFacts:
    version: str
    started_at: float
    now: float
    revision: str  # of the running (last good) config
    flows: int  # enabled flows in the running config
    last_reload: ReloadOutcome | None
    subscriptions: Mapping[str, int]  # state → count
    inbox_depth: int | None  # deliveries not yet processed; None when unknown
    runs_last_hour: Mapping[str, int] | None  # outcome → count; None when unknown
    failures: Sequence[Failure] = ()
    draining: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    # ``oauth:`` connections that cannot authenticate: name → (problem, fix).
    connections: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def summary_line(flows: int, subscriptions: Mapping[str, int]) -> str:
    """The ``STATUS=`` line systemd shows in ``systemctl status hookd``."""
    active = subscriptions.get("active", 0)
    failing = sum(subscriptions.get(s, 0) for s in FAILING_STATES)
    return f"{flows} flows, {active} subscriptions active, {failing} failing"


def document(facts: StatusFacts) -> dict[str, Any]:
    """The JSON served at ``GET /api/status`` (documented in docs/daemon.md)."""
    return {
        "version": facts.version,
        "state": "draining" if facts.draining else "running",
        "uptime": round(facts.now - facts.started_at, 3),
        "summary": summary_line(facts.flows, facts.subscriptions),
        "config": {
            "revision": facts.revision,
            "flows": facts.flows,
            "last_reload": facts.last_reload.to_json() if facts.last_reload else None,
        },
        "subscriptions": dict(sorted(facts.subscriptions.items())),
        "inbox_depth": facts.inbox_depth,
        "runs_last_hour": dict(sorted(facts.runs_last_hour.items()))
        if facts.runs_last_hour is not None else None,
        "recent_failures": [
            {"kind": f.kind, "flow": f.name, "id": f.id, "error": f.error, "at": f.at}
            for f in facts.failures
        ],
        "connections": {name: {"problem": why, "fix": fix}
                        for name, (why, fix) in sorted(facts.connections.items())},
        **facts.extra,
    }


def _ago(seconds: float) -> str:
    """How long ago, roughly.

    >>> _ago(5), _ago(125), _ago(7300), _ago(200000)
    ('5s ago', '2m ago', '2h ago', '2d ago')
    """
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _counts(counts: Mapping[str, int] | None) -> str:
    if counts is None:
        return "unknown"
    return ", ".join(f"{n} {state}" for state, n in counts.items()) if counts else "none"


def format_text(doc: Mapping[str, Any], now: float | None = None) -> str:
    """What `hookd status` prints: the document as a few aligned lines."""
    now = time.time() if now is None else now
    config = doc.get("config") or {}
    lines = [
        f"hookd {doc.get('version', '?')}: {doc.get('state', '?')}, "
        f"up {_ago(float(doc.get('uptime', 0))).removesuffix(' ago')}",
        f"summary:        {doc.get('summary', '')}",
        f"config:         revision {config.get('revision') or '?'}, {config.get('flows', 0)} flows",
    ]
    reload = config.get("last_reload")
    if reload:
        lines.append(
            f"last reload:    {reload['outcome']} ({reload['trigger']}, "
            f"{_ago(now - float(reload['at']))}, revision {reload['revision']})"
        )
        lines.extend(f"                {error}" for error in reload.get("errors", []))
    lines.append(f"subscriptions:  {_counts(doc.get('subscriptions'))}")
    depth = doc.get("inbox_depth")
    lines.extend(_store_lines(doc.get("store")))
    lines.append(f"inbox depth:    {'unknown' if depth is None else depth}")
    lines.append(f"runs (1 h):     {_counts(doc.get('runs_last_hour'))}")
    failures = doc.get("recent_failures") or []
    lines.append(f"recent failures: {len(failures) or 'none'}")
    lines.extend(f"  {f['kind']} {f['flow']} ({f['id']}): {f['error']}" for f in failures)
    for name, item in (doc.get("connections") or {}).items():
        lines.append(f"connection {name}: {item['problem']}; {item['fix']}")
    return "\n".join(lines)


def _store_lines(store: Mapping[str, Any] | None) -> list[str]:
    """The store, and with PostgreSQL each replica and which one leads.

    >>> _store_lines({"backend": "sqlite", "location": "/s/hookd.db", "leading": True})
    ['store:          sqlite /s/hookd.db']
    >>> _store_lines({"backend": "postgresql", "location": "postgresql://db/h", "leading": False,
    ...   "replica": "a", "replicas": [{"name": "a", "host": "h1", "pid": 7, "version": "1",
    ...   "heartbeat_age": 2.0, "alive": True, "leader": False}, {"name": "b", "host": "h2",
    ...   "pid": 9, "version": "1", "heartbeat_age": 1.0, "alive": True, "leader": True}]})
    ... # doctest: +NORMALIZE_WHITESPACE
    ['store:          postgresql postgresql://db/h (this replica: a)',
     'replicas:       a  h1 pid 7  hookd 1  heartbeat 2s ago',
     '                b  h2 pid 9  hookd 1  heartbeat 1s ago  leader']
    """
    if not store:
        return []
    this = f" (this replica: {store['replica']})" if store.get("replica") else ""
    lines = [f"store:          {store.get('backend')} {store.get('location')}{this}"]
    for n, r in enumerate(store.get("replicas") or []):
        state = "  leader" if r.get("leader") else ("" if r.get("alive") else "  gone")
        lines.append(f"{'replicas:' if n == 0 else '':<16}{r['name']}  {r['host']} pid {r['pid']}"
                     f"  hookd {r['version']}  heartbeat {_ago(float(r['heartbeat_age']))}"
                     f"{state}")
    return lines


def exit_code(doc: Mapping[str, Any]) -> int:
    """`hookd status` exit code: 0 healthy, 1 when something needs attention (a rejected
    config, failing subscriptions, a connection without a usable OAuth token)."""
    reload = (doc.get("config") or {}).get("last_reload") or {}
    subscriptions = doc.get("subscriptions") or {}
    failing = sum(int(subscriptions.get(s, 0)) for s in FAILING_STATES)
    unready = bool(doc.get("connections"))
    return 1 if reload.get("outcome") == "rejected" or failing or unready else 0


def routes(collect: Callable[[], Awaitable[StatusFacts]]) -> list[Any]:
    """Starlette routes for the admin listener: ``GET /api/status``. `collect` gathers
    the facts (a few indexed reads of the store, off the event loop)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(document(await collect()))

    return [Route("/api/status", status, methods=["GET"])]

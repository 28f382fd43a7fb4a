"""Fill the status page's view models from the store (`hookd.admin.pages.reads`).

Each read is a seek on an index whatever the history's size (`hookd.store.sqlite.activity`
and `hookd.store.postgres.activity` say how), so a page answers in well under 100 ms with 100,000 runs
(``bench/bench_status_page.py``).

What is shown is masked here, before any template sees it: header values that are
credentials, and every secret the logs know (`hookd.telemetry.logs.REDACTOR`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from hookd.admin.pages import models as m
from hookd.admin.pages.reads import Reads
from hookd.config.model import Config, Flow
from hookd.store.activity import DeliverySummary, Minute
from hookd.store.records import Run, SubscriptionRow
from hookd.subscriptions.desired import DesiredSubscription, desired_subscriptions
from hookd.telemetry.logs import REDACTOR

BODY_CAP = 64 * 1024  # characters of formatted body shown on a page (the rest: download)
VALUE_CAP = 32 * 1024  # characters of a step's input or output shown
RATE_OF = 100  # the success rate is over a flow's last RATE_OF finished runs
PAGE_SIZE = 50
RECENT = 8  # deliveries and runs on the overview
MASK = "***"
# Header names whose values are credentials (the connector's own verification header is
# added per delivery): never shown, whatever the connector.
SECRET_HEADER_WORDS = ("auth", "token", "secret", "signature", "key", "password", "cookie")


# --------------------------------------------------------------------------- masking


def mask_headers(headers: Mapping[str, str], also: Sequence[str] = ()) -> dict[str, str]:
    """Headers with credential values replaced by ``***``.

    >>> mask_headers({"X-Hub-Signature-256": "sha256=ab", "X-GitHub-Event": "push"})
    {'X-Hub-Signature-256': '***', 'X-GitHub-Event': 'push'}
    """
    extra = {h.lower() for h in also if h}
    out: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        secret = low in extra or any(word in low for word in SECRET_HEADER_WORDS)
        out[name] = MASK if secret else REDACTOR.redact(str(value))
    return out


def _redact(text: str | None) -> str | None:
    return None if text is None else REDACTOR.redact(text)


def formatted(value: Any, cap: int) -> tuple[str, bool]:
    """`value` as indented JSON, cut at `cap` characters; (text, was it cut)."""
    if value is None:
        return "", False
    text = REDACTOR.redact(json.dumps(value, indent=2, ensure_ascii=False, default=str))
    return (text[:cap], True) if len(text) > cap else (text, False)


def formatted_body(body: bytes, cap: int = BODY_CAP) -> tuple[str, bool]:
    """A delivery body for the page: indented JSON when it parses (a body far beyond the
    cap is not parsed at all: the page shows its beginning as text)."""
    if len(body) <= cap * 4:
        try:
            return formatted(json.loads(body), cap)
        except ValueError:
            pass
    text = body[: cap * 4].decode("utf-8", "replace")
    return (text[:cap], True) if len(body) > cap or len(text) > cap else (text, False)


# --------------------------------------------------------------------------- rows → views


def subscription_view(row: SubscriptionRow) -> m.SubscriptionView:
    return m.SubscriptionView(
        id=row.id, flow=row.flow, connector=row.connector, operation=row.operation,
        connection=row.connection, status=row.status, location=_redact(row.location),
        upstream_id=row.upstream_id, last_error=_redact(row.last_error),
        verified_at=row.verified_at, created_at=row.created_at, updated_at=row.updated_at,
    )


def run_summary(run: Run) -> m.RunSummary:
    return m.RunSummary(
        id=run.id, delivery_id=run.delivery_id, flow=run.flow, status=run.status,
        attempt=run.attempt, created_at=run.created_at, duration=run.duration,
        error=_redact(run.error),
    )


def delivery_row(d: DeliverySummary) -> DeliverySummary:
    return dataclasses.replace(d, error=_redact(d.error))


# --------------------------------------------------------------------------- overview


async def overview(store: Reads, config: Config, daemon: m.DaemonView,
                   *, now: float) -> m.Overview:
    # Independent reads, awaited together: a backend that can run them side by side does.
    subs, last_hour, facts, recent, minutes, recent_runs = await asyncio.gather(
        store.subscriptions.all(), store.activity.counts_since(now - 3600),
        store.activity.flow_facts([f.name for f in _flows(config)], 0),
        store.activity.deliveries(limit=RECENT), buckets(store, now=now),
        store.runs.list(limit=RECENT))
    depth = await store.deliveries.depth()
    counts: dict[str, int] = {}
    for row in subs:
        counts[row.status] = counts.get(row.status, 0) + 1
    problems = [
        m.Problem("subscription", r.flow, r.id, _redact(r.last_error) or r.status,
                  r.updated_at, hint=hint_for(r.last_error or r.status))
        for r in subs if subscription_view(r).failing
    ]
    for name, fact in facts.items():
        last = fact.last_run
        if last is not None and last.status == "failed":
            problems.append(m.Problem("flow", name, last.id, _redact(last.error) or "failed",
                                      last.created_at))
    problems.sort(key=lambda p: p.at or 0, reverse=True)
    return m.Overview(
        daemon=daemon, now=now, flows=sum(f.enabled for f in config.flows.values()),
        subscriptions=dict(sorted(counts.items())), deliveries_last_hour=last_hour.deliveries,
        inbox_depth=depth, runs_last_hour=last_hour.runs, problems=problems, buckets=minutes,
        recent_deliveries=[delivery_row(d) for d in recent],
        recent_runs=[run_summary(r) for r in recent_runs],
    )


async def buckets(store: Reads, *, now: float, minutes: int = 24 * 60) -> list[Minute]:
    """Deliveries and failed runs per minute over the last `minutes`, oldest first."""
    end = (int(now) // 60 + 1) * 60
    return await store.activity.per_minute(end - minutes * 60, minutes)


def hint_for(error: str) -> str:
    """A next step for common subscription errors (the reconciler's errors say what
    happened; this says what to try).

    >>> hint_for("401 Unauthorized: Bad credentials")
    "check the connection's token (hookd check resolves it; the upstream refused it)"
    """
    low = error.lower()
    if "401" in low or "403" in low or "credential" in low:
        return "check the connection's token (hookd check resolves it; the upstream refused it)"
    if "404" in low:
        return "check the trigger's parameters (a repository or project the token cannot see?)"
    if "422" in low or "already exists" in low:
        return "a hook with this URL exists upstream: `hookd plan` shows whether it is adopted"
    if "orphaned" in low:
        return "hookd cannot delete it (no Location, no delete operation): remove it upstream"
    if "timeout" in low or "connect" in low:
        return "the upstream did not answer: hookd retries with backoff"
    return "`hookd plan` shows what the next reconcile would do"


# --------------------------------------------------------------------------- flows


def _flows(config: Config) -> list[Flow]:
    return sorted(config.flows.values(), key=lambda f: f.name)


async def flows(store: Reads, config: Config) -> list[m.FlowRow]:
    by_flow: dict[str, SubscriptionRow] = {}
    for row in await store.subscriptions.all():
        current = by_flow.get(row.flow)
        if current is None or row.updated_at > current.updated_at:
            by_flow[row.flow] = row

    names = [f.name for f in _flows(config)]
    facts = await store.activity.flow_facts(names, RATE_OF)
    out = []
    for flow in _flows(config):
        sub, fact = by_flow.get(flow.name), facts[flow.name]
        rate = (fact.outcomes.count("succeeded") / len(fact.outcomes)
                if fact.outcomes else None)
        newest = fact.last_delivery
        out.append(m.FlowRow(
            name=flow.name, enabled=flow.enabled, connector=flow.trigger.connector,
            operation=flow.trigger.operation,
            subscription=subscription_view(sub) if sub is not None else None,
            last_ping=sub.verified_at if sub is not None else None,
            last_delivery_at=newest.received_at if newest else None,
            last_delivery_id=newest.id if newest else None,
            last_run=run_summary(fact.last_run) if fact.last_run else None,
            success_rate=rate, rate_of=len(fact.outcomes),
        ))
    return out


# --------------------------------------------------------------------------- subscriptions


async def subscription(store: Reads, config: Config, server_secret: bytes,
                       sub_id: str) -> m.SubscriptionDetail | None:
    row = await store.subscriptions.get(sub_id)
    desired = next((d for d in desired_subscriptions(config, server_secret) if d.id == sub_id),
                   None)
    if row is None and desired is None:
        return None
    flow = row.flow if row is not None else desired.flow if desired is not None else ""
    events: tuple[str, ...] = ()
    if desired is not None and isinstance(desired.body, Mapping):
        raw = desired.body.get("events")
        if isinstance(raw, list):
            events = tuple(str(e) for e in raw)
    view = subscription_view(row) if row is not None else None
    return m.SubscriptionDetail(
        subscription=view, id=sub_id, flow=flow, events=events,
        request=preview(config, desired) if desired is not None and desired.upstream else None,
        hint=hint_for(row.last_error) if row is not None and row.last_error else "",
    )


def _masked(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, Mapping):
        return {k: _masked(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, MASK)
        return value
    return value if value is None or isinstance(value, int | float | bool) else str(value)


def preview(config: Config, desired: DesiredSubscription) -> m.RequestPreview | None:
    """What `hookd plan` would send to create `desired`: method, URL, headers and body
    with the signing secret and the callback URL's token masked (`SecretRef` values show
    as their reference, never resolved)."""
    connector = config.connectors.get(desired.connector)
    op = connector.operations.get(desired.operation) if connector is not None else None
    if connector is None or op is None:
        return None
    token = desired.callback_url.rstrip("/").rsplit("/", 1)[-1]
    secrets = [desired.secret, token]
    path, query, headers = op.path, [], {}
    for p in op.parameters:
        if p.name not in desired.parameters or p.location == "body":
            continue
        value = str(_masked(desired.parameters[p.name], secrets))
        if p.location == "path":
            path = path.replace("{" + p.name + "}", value)
        elif p.location == "query":
            query.append(f"{p.name}={value}")
        elif p.location == "header":
            headers[p.name] = value
    connection = config.connections.get(desired.connection or "")
    base = (connection.base_url if connection is not None else None) or connector.base_url
    url = base.rstrip("/") + (path if path.startswith("/") else "/" + path)
    if query:
        url += "?" + "&".join(query)
    body = ""
    if desired.body is not None:
        body = json.dumps(_masked(desired.body, secrets), indent=2, ensure_ascii=False)
    return m.RequestPreview(op.method, url, mask_headers(headers), body)


# --------------------------------------------------------------------------- deliveries


async def deliveries(store: Reads, config: Config, filt: m.DeliveryFilter,
                     *, before: str | None = None, limit: int = PAGE_SIZE) -> m.DeliveryPage:
    rows = await store.activity.deliveries(flow=filt.flow, status=filt.status,
                                           since=filt.since, until=filt.until, before=before,
                                           limit=limit + 1)
    page = [delivery_row(r) for r in rows[:limit]]
    return m.DeliveryPage(rows=page, filter=filt,
                          next_before=page[-1].id if len(rows) > limit else None,
                          flows=[f.name for f in _flows(config)])


def _verification_header(config: Config, flow: str) -> str:
    f = config.flows.get(flow)
    connector = config.connectors.get(f.trigger.connector) if f is not None else None
    return connector.verification.header if connector is not None else ""


async def delivery(store: Reads, config: Config, delivery_id: str,
                   *, cap: int = BODY_CAP) -> m.DeliveryDetail | None:
    d = await store.deliveries.get(delivery_id)
    if d is None:
        return None
    row = DeliverySummary(d.id, d.flow, d.subscription_id, d.received_at, d.event, d.status,
                          d.attempts, len(d.body), _redact(d.error))
    body, cut = formatted_body(d.body, cap)
    runs = [run_summary(r) for r in await store.runs.list(delivery_id=d.id, limit=20)]
    return m.DeliveryDetail(row, mask_headers(d.headers, [_verification_header(config, d.flow)]),
                            body, cut, runs)


# --------------------------------------------------------------------------- runs


async def run(store: Reads, run_id: str) -> m.RunDetail | None:
    r = await store.runs.get(run_id)
    if r is None:
        return None
    steps = []
    for s in r.steps:
        steps.append(m.StepView(
            id=s.step_id, index=s.index, kind=s.kind, status=s.status, attempt=s.attempt,
            started_at=s.started_at, duration=s.duration,
            input=formatted(s.input, VALUE_CAP)[0], output=formatted(s.output, VALUE_CAP)[0],
            error=_redact(s.error),
        ))
    others = [run_summary(o) for o in await store.runs.list(delivery_id=r.delivery_id, limit=20)
              if o.id != r.id]
    return m.RunDetail(run_summary(r), r.config_revision, r.started_at, r.finished_at,
                       steps, others)


async def latest_attempt(store: Reads, delivery_id: str) -> tuple[str, int] | None:
    """(run id, attempt) of a delivery's newest run."""
    latest = await store.runs.latest_for_delivery(delivery_id)
    return (latest.id, latest.attempt) if latest is not None else None


# --------------------------------------------------------------------------- live


async def changes(store: Reads, *, after_delivery: str, after_run: str,
                  watching: Sequence[str]) -> tuple[list[DeliverySummary], list[m.RunSummary]]:
    """Deliveries and runs created after the cursors (oldest first, at most 100 each), and
    the runs in `watching` (unfinished ones a page shows) as they are now."""
    new = [delivery_row(d) for d in await store.activity.deliveries_after(after_delivery)]
    found = [run_summary(r) for r in await store.activity.runs_after(after_run)]
    ids = {r.id for r in found}
    for run_id in watching:
        if run_id not in ids:
            r = await store.runs.get(run_id, steps=False)
            if r is not None:
                found.append(run_summary(r))
    return new, found

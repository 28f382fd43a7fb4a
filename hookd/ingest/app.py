"""The public callback listener: ``POST /hooks/{subscription_id}/{token}`` and nothing else.

Upstreams give a webhook receiver seconds (GitHub: 10 s, no retry), so this app does only
what must happen before the answer, in this order, each step able to refuse:

    route (404/410/503) → size cap (413) → content type (400) → read body, capped (413)
    → verify signature (401) → ping? (200, stamp the subscription)
    → the inbox: JSON check (400) → payload schema under policy reject (400)
      → dedup + durable record (group commit) → 202 {"delivery": id}
      (200 + original id on a repeat); under ``warn`` the worker checks the schema

The inbox's writer checks the body (`hookd.callbacks.payload`), not this event loop: the loop is
what limits ingest, and the writer does it in the round trip that makes the delivery
durable anyway (its SQLite and fsync work runs without the GIL meanwhile).

Nothing is recorded unless every check passed, and nothing is answered 2xx before the
inbox has committed it. Each refusal is an exception; `error_response` is the one place
that maps them to HTTP answers, and no input can make this app answer 5xx except the
store itself failing (503, so the upstream retries).

`AppState` holds what requests read: the config and its route table (swapped as one
attribute on reload, so a request sees the old or the new config, never a mix), the
store (`hookd.store.interface.Store`: its inbox records, its subscriptions answer for ids
the table does not route), the metrics and the draining flag.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.routing import Route as StarletteRoute

from hookd.callbacks import payload, routing, verify
from hookd.config.model import Config
from hookd.store import errors as store_errors
from hookd.store.interface import Inbox, Store
from hookd.store.records import NewDelivery, SubscriptionRow
from hookd.telemetry.metrics import Metrics
from hookd.telemetry.throttle import Throttle

log = logging.getLogger("hookd.ingest.app")

MAX_DELIVERY_ID = 200  # longer delivery-id headers are not used for dedup


# ---------------------------------------------------------------------------- errors


class HookError(Exception):
    """A refusal with its HTTP status and a one-line reason for the sender."""

    status = 400
    outcome = "bad_request"

    def __init__(self, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.extra = extra


class BadRequest(HookError):
    pass


class TooLarge(HookError):
    status, outcome = 413, "too_large"


class Draining(HookError):
    status, outcome = 503, "unavailable"


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer of the public listener: always a small JSON document."""

    status: int
    doc: dict[str, Any]
    retry_after: bool = False  # 503: tell the upstream when to retry


def error_response(exc: Exception) -> tuple[Answer, str]:
    """The answer to a refused request, and its metrics outcome. The only such mapping."""
    if isinstance(exc, HookError):
        status, outcome, body = exc.status, exc.outcome, {"error": exc.reason, **exc.extra}
    elif isinstance(exc, routing.NotFound):
        status, outcome, body = 404, "not_found", {"error": "not found"}
    elif isinstance(exc, routing.Gone):
        status, outcome, body = 410, "gone", {"error": "subscription deleted; stop sending"}
    elif isinstance(exc, routing.Unavailable):
        status, outcome, body = 503, "disabled", {"error": str(exc)}
    elif isinstance(exc, verify.VerificationFailed):
        status, outcome, body = 401, "unauthorized", {"error": f"verification failed: {exc.reason}"}
    elif isinstance(exc, payload.Refused):
        status, outcome = 400, exc.outcome
        body = {"error": exc.reason, **({"violations": exc.violations} if exc.violations else {})}
    elif isinstance(exc, store_errors.Unavailable):
        status, outcome, body = 503, "unavailable", {"error": "cannot record the delivery now; retry"}
    else:
        log.exception("unexpected error handling a callback", exc_info=exc)
        status, outcome, body = 500, "error", {"error": "internal error"}
    return Answer(status, body, retry_after=status == 503), outcome


# ---------------------------------------------------------------------------- state


class AppState:
    """What the public and admin apps read; the daemon owns it and swaps `config`.

    Assigning `config` builds the new route table first and then replaces one attribute,
    so a request sees the old or the new routes, never a mix. The table is built from the
    config and the subscriptions read last (`rows`, re-read by `refresh` after a
    reconcile); a request for an id it does not route reads that subscription from the
    store (`find_row`), off the event loop.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        server_secret: bytes,
        *,
        rows: Iterable[SubscriptionRow] = (),
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        max_body: int | None = None,
        resolve: Callable[[Any], str] | None = None,
    ) -> None:
        self.store = store
        self.server_secret = server_secret
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.draining = False
        self.rejected_config: str | None = None  # set by the daemon when a reload fails
        self.refusals = Throttle()  # the "delivery refused" log lines
        self._max_body = max_body
        self._resolve = resolve or _default_resolve
        self._rows = {r.id: r for r in rows}
        self._current: tuple[Config, routing.RouteTable] = (config, self._build(config))
        self.inbox: Inbox = store.inbox
        self.inbox.on_commit(self.metrics.observe_commit)

    @property
    def config(self) -> Config:
        return self._current[0]

    @config.setter
    def config(self, config: Config) -> None:
        self._current = (config, self._build(config))

    @property
    def routes(self) -> routing.RouteTable:
        return self._current[1]

    @property
    def max_body(self) -> int:
        return self._max_body if self._max_body is not None else self.config.settings.max_body

    async def refresh(self, config: Config | None = None) -> None:
        """Re-read the subscriptions (after a reconcile changed them) and rebuild the routes,
        for `config` when given (a reload). Built on a thread (it compiles each flow's
        payload schema), so the listeners keep answering meanwhile."""
        try:
            self._rows = {r.id: r for r in await self.store.subscriptions.all()}
        except store_errors.StoreError as exc:
            log.warning("cannot read subscriptions; routing from the last known ones",
                        extra={"error": str(exc)})
        await asyncio.to_thread(setattr, self, "config", config or self.config)

    async def find_row(self, subscription_id: str) -> SubscriptionRow | None:
        try:
            return await self.store.subscriptions.get(subscription_id)
        except store_errors.StoreError:
            return None

    async def aclose(self) -> None:
        """Answer 503 from now on; commit what the inbox holds and stop its writer."""
        self.draining = True
        await self.inbox.aclose()

    def _build(self, config: Config) -> routing.RouteTable:
        return routing.build(config, self.server_secret, rows=self._rows, resolve=self._resolve)


def _default_resolve(value: Any) -> str:
    from hookd.config import secrets

    return secrets.resolve_value(value)


# ---------------------------------------------------------------------------- app


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def create_app(state: AppState) -> HookApp:
    """The public listener: only ``POST /hooks/{subscription_id}/{token}``."""
    return HookApp(state)


class HookApp:
    """The public listener as a plain ASGI app.

    Every callback goes through here, so its per-request cost is the listener's capacity:
    ``POST /hooks/<id>/<token>`` is answered directly from the ASGI messages — no
    middleware stack, no Request/Response objects — which roughly halves the Python work
    around the checks themselves (bench/bench_ingest.py). Anything else (other methods and
    paths, redirects, lifespan) goes to a Starlette app with the same single route, so
    404/405 and the rest stay Starlette's.
    """

    def __init__(self, state: AppState) -> None:
        self.state = state
        # Routes already looked up with a valid token, for the current route table only:
        # the token check is an HMAC per request otherwise. Only active routes of the
        # table are kept, so wrong tokens and unknown ids cannot grow it.
        self._known: dict[tuple[str, str], routing.Route] = {}
        self._known_table: routing.RouteTable | None = None

        async def routed(scope: Scope, receive: Receive, send: Send) -> None:
            params = scope["path_params"]
            await self.hook(scope, receive, send, params["subscription_id"], params["token"])

        self.fallback = Starlette(
            routes=[StarletteRoute("/hooks/{subscription_id}/{token}", routed, methods=["POST"])]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            parts = scope["path"].split("/")
            if len(parts) == 4 and parts[1] == "hooks" and parts[2] and parts[3] and not parts[0]:
                await self.hook(scope, receive, send, parts[2], parts[3])
                return
        await self.fallback(scope, receive, send)

    async def hook(
        self, scope: Scope, receive: Receive, send: Send, subscription_id: str, token: str
    ) -> None:
        state = self.state
        started = time.perf_counter()
        received_at = state.clock()
        route: routing.Route | None = None
        try:
            if state.draining:
                raise Draining("hookd is shutting down; retry")
            route = await self._route(subscription_id, token)
            answer, outcome = await _accept(state, route, scope, receive, received_at)
        except Exception as exc:
            answer, outcome = error_response(exc)
        m = state.metrics  # counted before answering: a client that got its answer sees it
        sub, flow = (route.subscription_id, route.flow) if route is not None else ("", "")
        m.deliveries.inc(sub, flow, outcome)
        if outcome == "unauthorized":
            m.verification_failures.inc(sub, flow)
        m.request_seconds.observe(time.perf_counter() - started, outcome)
        if answer.status >= 400:
            _log_refusal(state, route, subscription_id, answer, outcome)
        await _send_answer(send, answer)


    async def _route(self, subscription_id: str, token: str) -> routing.Route:
        table = self.state.routes
        if table is not self._known_table:  # a reload or a reconcile swapped the table
            self._known, self._known_table = {}, table
        key = (subscription_id, token)
        route = self._known.get(key)
        if route is None:
            row = None
            if routing.needs_row(table, subscription_id, token):
                row = await self.state.find_row(subscription_id)
            route = routing.lookup(table, subscription_id, token, lambda _: row)
            if table.routes.get(subscription_id) is route:
                self._known[key] = route
        return route


def _log_refusal(state: AppState, route: routing.Route | None, subscription_id: str,
                 answer: Answer, outcome: str) -> None:
    """One info line per refused delivery (throttled per outcome and subscription): why
    an upstream's deliveries fail is the first thing an operator looks for. The token
    is never logged; an unknown subscription id is the caller's text, so it is cut short
    and unknown ids share one throttle key."""
    held = state.refusals.admit((outcome, route.subscription_id if route is not None else ""))
    if held is None:
        return
    fields: dict[str, object] = {
        "reason": str(answer.doc.get("error", outcome)), "outcome": outcome,
        "status": answer.status, "subscription": subscription_id[:80],
    }
    if route is not None:
        fields["flow"] = route.flow
    if held:
        fields["suppressed"] = held
    log.info("delivery refused", extra=fields)


_JSON_TYPE = (b"content-type", b"application/json")
_RETRY_AFTER = (b"retry-after", b"5")


async def _send_answer(send: Send, answer: Answer) -> None:
    """Send `answer`. A failed send to a connection the HTTP server has already given up on
    is ignored: uvicorn may answer a request itself (400 for a broken chunked body) while
    the app is still running, and then there is nobody left to answer."""
    body = orjson.dumps(answer.doc)
    headers = [_JSON_TYPE, (b"content-length", b"%d" % len(body))]
    if answer.retry_after:
        headers.append(_RETRY_AFTER)
    try:
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except OSError:
        raise
    except Exception as exc:
        log.debug("connection closed before the answer was sent", extra={"error": str(exc)})


async def _accept(
    state: AppState, route: routing.Route, scope: Scope, receive: Receive, received_at: float
) -> tuple[Answer, str]:
    """Everything after routing; returns the answer and its metrics outcome.

    The body is checked by the inbox's writer (`Inbox.record_body`, `hookd.callbacks.payload`), off
    this event loop: a body that is not JSON, or that the ``reject`` policy refuses, comes
    back as `payload.Refused` (400) and nothing is recorded.
    """
    headers = _headers(scope)
    body = await _read_body(receive, headers, state.max_body)
    verify.verify(route.verification, route.secret, headers, body, now=received_at)

    event = headers.get(route.event_header) if route.event_header else None
    if route.ping_event is not None and event == route.ping_event:
        payload.check_json(body)  # a ping is JSON too
        await state.inbox.mark_verified(route.subscription_id, received_at)
        return Answer(200, {"ping": "ok", "subscription": route.subscription_id}), "ping"

    dedup_key = None
    if route.delivery_id_header:
        delivery_id = headers.get(route.delivery_id_header)
        if delivery_id and len(delivery_id) <= MAX_DELIVERY_ID:
            dedup_key = f"{route.subscription_id}:{delivery_id}"

    drop = route.drop_headers
    delivery = NewDelivery(
        subscription_id=route.subscription_id,
        flow=route.flow,
        received_at=received_at,
        headers={k: v for k, v in headers.items() if k not in drop} if drop else headers,
        body=body,
        event=event,
        dedup_key=dedup_key,
    )
    check = route.validator if route.validation != "off" else None
    result = await state.inbox.record_body(delivery, dedup_key=dedup_key, check=check,
                                           policy=route.validation, batch=route.batch)
    if result.duplicate:
        return Answer(200, {"delivery": result.ids[0], "duplicate": True}), "duplicate"
    accepted: dict[str, Any] = {"delivery": result.ids[0] if result.ids else None}
    if route.batch:
        accepted["deliveries"] = result.ids
    return Answer(202, accepted), "accepted"


def _headers(scope: Scope) -> dict[str, str]:
    """Lower-case header names (ASGI gives them so); repeated headers joined with ", "."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


async def _read_body(receive: Receive, headers: dict[str, str], cap: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed `cap` — from
    Content-Length before reading anything, else while counting the stream."""
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest("invalid Content-Length")
        if int(length) > cap:
            raise TooLarge(f"body larger than {cap} bytes")
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise BadRequest("content type must be application/json")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise BadRequest("client disconnected before the body was complete")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > cap:
                raise TooLarge(f"body larger than {cap} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)

"""The public callback listener: ``POST /hooks/{subscription_id}/{token}`` and nothing else.

Upstreams give a webhook receiver seconds (GitHub: 10 s, no retry), so this app does only
what must happen before the answer, in this order, each step able to refuse:

    route (404/410/503) → size cap (413) → content type (400) → read body, capped (413)
    → verify signature (401) → parse JSON (400) → ping? (200, stamp the subscription)
    → payload schema (400 under policy reject; flag under warn) → dedup + durable record
    through the group-commit inbox → 202 {"delivery": id}   (200 + original id on a repeat)

Nothing is recorded unless every check passed, and nothing is answered 2xx before the
inbox has committed it. Each refusal is an exception; `error_response` is the one place
that maps them to HTTP answers, and no input can make this app answer 5xx except the
store itself failing (503, so the upstream retries).

`AppState` holds what requests read: the config and its route table (swapped as one
attribute on reload, so a request sees the old or the new config, never a mix), the
store connection, the inbox, the metrics and the draining flag.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from hookd import routing, verify
from hookd.inbox import Inbox, InboxError
from hookd.metrics import Metrics
from hookd.model import Config
from hookd.store import db
from hookd.store.deliveries import FLAG_SCHEMA_WARNING, NewDelivery
from hookd.store.subscriptions import SubscriptionRow, SubscriptionStore

log = logging.getLogger("hookd.server")

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


class InvalidPayload(HookError):
    outcome = "invalid_payload"


class TooLarge(HookError):
    status, outcome = 413, "too_large"


class Draining(HookError):
    status, outcome = 503, "unavailable"


def error_response(exc: Exception) -> tuple[Response, str]:
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
    elif isinstance(exc, InboxError):
        status, outcome, body = 503, "unavailable", {"error": "cannot record the delivery now; retry"}
    else:
        log.exception("unexpected error handling a callback", exc_info=exc)
        status, outcome, body = 500, "error", {"error": "internal error"}
    headers = {"retry-after": "5"} if status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers), outcome


# ---------------------------------------------------------------------------- state


class AppState:
    """What the public and admin apps read; the daemon owns it and swaps `config`.

    Assigning `config` builds the new route table first and then replaces one attribute,
    so a request sees the old or the new routes, never a mix. `conn` is the daemon's
    store connection (used on the event loop for rare reads: a subscription that is not
    in the current config); the inbox opens its own connection to the same file.
    """

    def __init__(
        self,
        config: Config,
        conn: sqlite3.Connection | None,
        server_secret: bytes,
        *,
        metrics: Metrics | None = None,
        inbox: Inbox | None = None,
        clock: Callable[[], float] = time.time,
        max_body: int | None = None,
        resolve: Callable[[Any], str] | None = None,
    ) -> None:
        self.conn = conn
        self.server_secret = server_secret
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.draining = False
        self.rejected_config: str | None = None  # set by the daemon when a reload fails
        self._max_body = max_body
        self._resolve = resolve or _default_resolve
        self._current: tuple[Config, routing.RouteTable] = (config, self._build(config))
        self.inbox = inbox or Inbox(
            self._db_path(config),
            dedup_window=config.settings.retention.dedup_window,
            clock=clock,
        )
        self.inbox.on_commit(self.metrics.observe_commit)
        # The pipeline worker sets itself here (`hookd.worker.Worker`); it is poked after
        # each commit that recorded deliveries, so runs start without waiting for a poll.
        self.worker: Any = None
        self.inbox.add_listener(self._poke_worker)

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

    def refresh(self) -> None:
        """Rebuild the routes from the store (after a reconcile changed subscriptions)."""
        self.config = self.config

    def find_row(self, subscription_id: str) -> SubscriptionRow | None:
        if self.conn is None:
            return None
        try:
            return SubscriptionStore(self.conn).get(subscription_id)
        except sqlite3.Error:
            return None

    def _poke_worker(self) -> None:
        poke = getattr(self.worker, "poke", None)
        if poke is not None:
            poke()

    async def aclose(self) -> None:
        """Commit what the inbox holds and stop its writer (the daemon calls this last)."""
        self.draining = True
        await self.inbox.aclose()

    def _build(self, config: Config) -> routing.RouteTable:
        rows: dict[str, SubscriptionRow] = {}
        if self.conn is not None:
            try:
                rows = {r.id: r for r in SubscriptionStore(self.conn).all()}
            except sqlite3.Error:
                log.warning("cannot read subscriptions; routing from the config alone")
        return routing.build(config, self.server_secret, rows=rows, resolve=self._resolve)

    def _db_path(self, config: Config) -> Path:
        if self.conn is not None:
            for row in self.conn.execute("PRAGMA database_list"):
                if row[1] == "main" and row[2]:
                    return Path(row[2])
        return Path(config.settings.state_dir) / db.DB_NAME


def _default_resolve(value: Any) -> str:
    from hookd import secrets

    return secrets.resolve_value(value)


# ---------------------------------------------------------------------------- app


def create_app(state: AppState) -> Starlette:
    """The public listener: only ``POST /hooks/{subscription_id}/{token}``."""

    async def hook(request: Request) -> Response:
        started = time.perf_counter()
        received_at = state.clock()
        route: routing.Route | None = None
        try:
            if state.draining:
                raise Draining("hookd is shutting down; retry")
            params = request.path_params
            route = routing.lookup(
                state.routes, params["subscription_id"], params["token"], state.find_row
            )
            response, outcome = await _accept(state, route, request, received_at)
        except Exception as exc:
            response, outcome = error_response(exc)
        m = state.metrics
        sub, flow = (route.subscription_id, route.flow) if route is not None else ("", "")
        m.deliveries.inc(sub, flow, outcome)
        if outcome == "unauthorized":
            m.verification_failures.inc(sub, flow)
        m.request_seconds.observe(time.perf_counter() - started, outcome)
        return response

    return Starlette(
        routes=[StarletteRoute("/hooks/{subscription_id}/{token}", hook, methods=["POST"])],
        middleware=[Middleware(_GuardedSend)],
    )


class _GuardedSend:
    """Ignore a failed ``send`` to a connection the HTTP server has already given up on.

    uvicorn may answer a request itself (400 for a broken chunked body) while the app is
    still running; the app's own answer then raises inside uvicorn. There is nobody left
    to answer, so that is not an application error: drop the rest of the response.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        broken = False

        async def guarded(message: Any) -> None:
            nonlocal broken
            if broken:
                return
            try:
                await send(message)
            except Exception as exc:
                if isinstance(exc, OSError):
                    raise
                broken = True
                log.debug("connection closed before the answer was sent", extra={"error": str(exc)})

        await self.app(scope, receive, guarded)


async def _accept(
    state: AppState, route: routing.Route, request: Request, received_at: float
) -> tuple[Response, str]:
    """Everything after routing; returns the answer and its metrics outcome."""
    headers = _headers(request)
    body = await _read_body(request, headers, state.max_body)
    verify.verify(route.verification, route.secret, headers, body, now=received_at)
    payload = _parse_json(body)

    event = headers.get(route.event_header) if route.event_header else None
    if route.ping_event is not None and event == route.ping_event:
        await state.inbox.mark_verified(route.subscription_id, received_at)
        pong = {"ping": "ok", "subscription": route.subscription_id}
        return JSONResponse(pong, status_code=200), "ping"

    items: list[Any] = payload if route.batch and isinstance(payload, list) else [payload]
    flags: tuple[str, ...] = ()
    if route.validator is not None:
        problems = [p for item in items for p in routing.violations(route, item)][:3]
        if problems and route.validation == "reject":
            raise InvalidPayload("payload does not match the trigger's schema", violations=problems)
        if problems:
            flags = (FLAG_SCHEMA_WARNING,)
            log.warning("payload does not match the trigger's schema",
                        extra={"flow": route.flow, "violations": problems})

    dedup_key = None
    if route.delivery_id_header:
        delivery_id = headers.get(route.delivery_id_header)
        if delivery_id and len(delivery_id) <= MAX_DELIVERY_ID:
            dedup_key = f"{route.subscription_id}:{delivery_id}"

    recorded_headers = {k: v for k, v in headers.items() if k not in route.drop_headers}
    if len(items) == 1 and items[0] is payload:
        bodies = [body]  # the raw body as received, not re-encoded
        indexes: list[int | None] = [None]
    else:
        bodies = [json.dumps(item, separators=(",", ":")).encode() for item in items]
        indexes = list(range(len(items)))
    deliveries = [
        NewDelivery(
            subscription_id=route.subscription_id,
            flow=route.flow,
            received_at=received_at,
            headers=recorded_headers,
            body=b,
            event=event,
            dedup_key=dedup_key,
            flags=flags,
            item=i,
        )
        for b, i in zip(bodies, indexes, strict=True)
    ]
    result = await state.inbox.record(deliveries, dedup_key=dedup_key)
    if result.duplicate:
        doc: dict[str, Any] = {"delivery": result.ids[0], "duplicate": True}
        return JSONResponse(doc, status_code=200), "duplicate"
    accepted: dict[str, Any] = {"delivery": result.ids[0] if result.ids else None}
    if route.batch:
        accepted["deliveries"] = result.ids
    return JSONResponse(accepted, status_code=202), "accepted"


def _headers(request: Request) -> dict[str, str]:
    """Lower-case header names (ASGI gives them so); repeated headers joined with ", "."""
    out: dict[str, str] = {}
    for raw_name, raw_value in request.scope["headers"]:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


async def _read_body(request: Request, headers: dict[str, str], cap: int) -> bytes:
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
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise TooLarge(f"body larger than {cap} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequest("client disconnected before the body was complete") from None
    return b"".join(chunks)


def _parse_json(body: bytes) -> Any:
    if not body:
        raise BadRequest("empty body; expected JSON")
    try:
        return json.loads(body)
    except RecursionError:
        raise BadRequest("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers
        raise BadRequest(f"invalid JSON: {_one_line(str(exc))}") from None


def _one_line(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

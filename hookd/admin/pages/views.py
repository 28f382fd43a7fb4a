"""The status page's routes on the admin listener: sign-in, pages, replay, live stream.

Every page but the sign-in form needs a session (`hookd.admin.pages.session`); every
POST needs the session's CSRF token and must not come from another site. Answers carry
a strict Content-Security-Policy (scripts and styles from ``/static`` only, no inline
code), are never cached, and cannot be framed. Errors are one template
(`error_page`), with the status code the situation calls for.

Pages read the store through `hookd.admin.pages.reads` (awaited: the store decides
where the queries run, never on the event loop).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hookd.admin.api import status_of
from hookd.admin.auth import cross_site
from hookd.admin.pages import chart, live, queries, render
from hookd.admin.pages import models as m
from hookd.admin.pages.reads import Reads
from hookd.admin.pages.session import COOKIE, TTL, SessionKeys, derive_key
from hookd.config.model import Config
from hookd.store import errors

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
DELIVERY_STATUSES = ("queued", "running", "done", "failed")
MAX_FORM = 8192  # bytes of a form body (a token, a CSRF token)


@dataclass(frozen=True)
class Site:
    """What the pages need from the daemon, as callables (they change on reload)."""

    config: Callable[[], Config]
    store: Reads
    server_secret: bytes
    admin_token: Callable[[], str | None]  # None: no token, nobody can sign in
    daemon: Callable[[], m.DaemonView]
    token_ok: Callable[[str], bool]  # is a presented token the admin token? (constant time)
    poke: Callable[[], None] = lambda: None
    draining: Callable[[], bool] = lambda: False
    clock: Callable[[], float] = time.time

    def keys(self) -> SessionKeys | None:
        token = self.admin_token()
        return SessionKeys(derive_key(self.server_secret, token)) if token else None


# --------------------------------------------------------------------------- answers


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
            "X-Frame-Options": "DENY"}


def page(template: str, code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(render.render(template, **context), status_code=code,
                        headers=_headers())


def error_page(status: int, message: str, *, signed_in: bool = True) -> HTMLResponse:
    """The one place a page error becomes an answer."""
    return page("error.html", status, status=status, message=message, signed_in=signed_in,
                csrf="", nav="")


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_headers())


def safe_next(target: str | None) -> str:
    """A same-site path to go to after signing in (never another host).

    >>> safe_next("/runs/abc"), safe_next("//evil.example"), safe_next("https://x"), safe_next(None)
    ('/runs/abc', '/', '/', '/')
    """
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def form(request: Request) -> dict[str, str] | None:
    """An urlencoded form (the pages post nothing else); None when too big or not one."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _time_param(text: str | None) -> float | None:
    """``2026-12-02T14:00`` (UTC, as `<input type=datetime-local>` sends it) → unix time."""
    if not text:
        return None
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


# --------------------------------------------------------------------------- routes


def routes(site: Site) -> list[BaseRoute]:
    Handler = Callable[[Request, str], Awaitable[Response]]

    def session(request: Request) -> str | None:
        keys = site.keys()
        cookie = request.cookies.get(COOKIE)
        if keys is None or not keys.valid(cookie, now=site.clock()):
            return None
        return cookie

    def signed_in(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            cookie = session(request)
            if cookie is None:
                if request.method != "GET":
                    return error_page(403, "Sign in first.", signed_in=False)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return redirect("/signin?" + urlencode({"next": target}))
            keys = site.keys()
            assert keys is not None
            return await handler(request, keys.csrf(cookie))

        return wrapped

    async def mutation(request: Request) -> dict[str, str] | Response:
        """The form of a POST that passed the cross-site and CSRF checks, else the refusal."""
        if cross_site(dict(request.headers)):
            return error_page(403, "Cross-site request refused.")
        data = await form(request)
        keys = site.keys()
        if data is None or keys is None or not keys.csrf_ok(request.cookies.get(COOKIE),
                                                            data.get("csrf")):
            return error_page(403, "The form expired or did not come from this page: "
                                   "reload the page and try again.")
        return data

    # ------------------------------------------------------------------ sign-in

    async def signin_form(request: Request) -> Response:
        if session(request) is not None:
            return redirect(safe_next(request.query_params.get("next")))
        return page("signin.html", next=safe_next(request.query_params.get("next")),
                    error="", signed_in=False, nav="", csrf="",
                    configured=site.admin_token() is not None)

    async def signin(request: Request) -> Response:
        if cross_site(dict(request.headers)):
            return error_page(403, "Cross-site request refused.", signed_in=False)
        data = await form(request) or {}
        target = safe_next(data.get("next"))
        keys = site.keys()
        if keys is None or not site.token_ok(data.get("token", "").strip()):
            return page("signin.html", 401, next=target, signed_in=False, nav="", csrf="",
                        error="That is not the admin token.",
                        configured=site.admin_token() is not None)
        response = redirect(target)
        secure = request.url.scheme == "https"
        response.set_cookie(COOKIE, keys.issue(now=site.clock()), max_age=TTL, path="/",
                            httponly=True, samesite="strict", secure=secure)
        return response

    async def signout(request: Request, csrf: str) -> Response:
        data = await mutation(request)
        if isinstance(data, Response):
            return data
        response = redirect("/signin")
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # ------------------------------------------------------------------ pages

    async def overview(request: Request, csrf: str) -> Response:
        config, now, daemon = site.config(), site.clock(), site.daemon()
        view = await queries.overview(site.store, config, daemon, now=now)
        after = await site.store.activity.cursors()
        return page("overview.html", o=view, chart=chart.draw(view.buckets, now=now),
                    now=now, csrf=csrf, nav="overview", signed_in=True, live=live.cursor(*after))

    async def flows(request: Request, csrf: str) -> Response:
        config = site.config()
        rows = await queries.flows(site.store, config)
        return page("flows.html", flows=rows, now=site.clock(), csrf=csrf, nav="flows",
                    signed_in=True)

    async def subscription(request: Request, csrf: str) -> Response:
        config, sub_id = site.config(), request.path_params["id"]
        detail = await queries.subscription(site.store, config, site.server_secret, sub_id)
        if detail is None:
            return error_page(404, f"No subscription {sub_id}.")
        return page("subscription.html", d=detail, now=site.clock(), csrf=csrf, nav="flows",
                    signed_in=True)

    async def deliveries(request: Request, csrf: str) -> Response:
        q = request.query_params
        status = q.get("status") or None
        if status is not None and status not in DELIVERY_STATUSES:
            return error_page(400, f"status must be one of {', '.join(DELIVERY_STATUSES)}.")
        try:
            filt = m.DeliveryFilter(flow=q.get("flow") or None, status=status,
                                    since=_time_param(q.get("since")),
                                    until=_time_param(q.get("until")))
        except ValueError:
            return error_page(400, "since and until are times like 2026-12-02T14:00 (UTC).")
        before = q.get("before") or None
        config = site.config()
        result = await queries.deliveries(site.store, config, filt, before=before)
        after = await site.store.activity.cursors()
        return page("deliveries.html", p=result, before=before, now=site.clock(), csrf=csrf,
                    nav="deliveries", signed_in=True, statuses=DELIVERY_STATUSES,
                    live=live.cursor(*after) if before is None else "",
                    next_url="/deliveries?" + urlencode(
                        result.filter.query(before=result.next_before or "")))

    async def delivery(request: Request, csrf: str) -> Response:
        config, delivery_id = site.config(), request.path_params["id"]
        # The cursor first: a run created after it arrives as a live event, one created
        # before it is found below. Nothing falls between the two.
        after = await site.store.activity.cursors()
        replayed = request.query_params.get("replayed", "")
        if replayed.isdigit():  # after a replay: the attempt it replaced
            latest = await queries.latest_attempt(site.store, delivery_id)
            if latest is not None and latest[1] > int(replayed):
                return redirect(f"/runs/{latest[0]}")
        detail = await queries.delivery(site.store, config, delivery_id)
        if detail is None:
            return error_page(404, f"No delivery {delivery_id} (pruned, or never received).")
        return page("delivery.html", d=detail, now=site.clock(), csrf=csrf, nav="deliveries",
                    signed_in=True, replayed=bool(replayed), live=live.cursor(*after))

    async def delivery_body(request: Request, csrf: str) -> Response:
        delivery_id = request.path_params["id"]
        body = await site.store.activity.body(delivery_id)
        if body is None:
            return error_page(404, f"No delivery {delivery_id}.")
        name = quote(f"delivery-{delivery_id}.json")
        return Response(body, media_type="application/json", headers={
            **_headers(), "Content-Disposition": f'attachment; filename="{name}"'})

    async def run(request: Request, csrf: str) -> Response:
        run_id = request.path_params["id"]
        detail = await queries.run(site.store, run_id)
        if detail is None:
            return error_page(404, f"No run {run_id} (pruned, or a wrong id).")
        return page("run.html", r=detail, now=site.clock(), csrf=csrf, nav="runs",
                    signed_in=True, live=live.cursor("", "") if not detail.finished else "")

    async def replay_run(request: Request, csrf: str) -> Response:
        data = await mutation(request)
        if isinstance(data, Response):
            return data
        run_id = request.path_params["id"]
        # The attempt this replay supersedes is read before the replay: once it commits,
        # a worker (any replica's, woken at once) may create the new run at any moment.
        before = await site.store.runs.get(run_id, steps=False)
        previous = (await queries.latest_attempt(site.store, before.delivery_id)
                    if before is not None else None)
        try:
            delivery_id = await site.store.runs.replay(run_id, kind="run")
        except errors.StoreError as exc:
            return error_page(status_of(exc), str(exc))
        attempt = previous[1] if previous else 0
        site.poke()
        # No waiting here for the worker (it may be busy for long): the new run's page
        # when the run exists already, else the delivery's page, which goes on to the
        # new run as soon as it exists (live, or at the next load: `delivery`).
        latest = await queries.latest_attempt(site.store, delivery_id)
        if latest is not None and latest[1] > attempt:
            return redirect(f"/runs/{latest[0]}")
        return redirect(f"/deliveries/{delivery_id}?replayed={attempt}")

    async def live_stream(request: Request, csrf: str) -> Response:
        return live.stream(request, site.store, draining=site.draining)

    return [
        Route("/", signed_in(overview), methods=["GET"]),
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signed_in(signout), methods=["POST"]),
        Route("/flows", signed_in(flows), methods=["GET"]),
        Route("/subscriptions/{id}", signed_in(subscription), methods=["GET"]),
        Route("/deliveries", signed_in(deliveries), methods=["GET"]),
        Route("/deliveries/{id}", signed_in(delivery), methods=["GET"]),
        Route("/deliveries/{id}/body", signed_in(delivery_body), methods=["GET"]),
        Route("/runs/{id}", signed_in(run), methods=["GET"]),
        Route("/runs/{id}/replay", signed_in(replay_run), methods=["POST"]),
        Route("/live", signed_in(live_stream), methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]

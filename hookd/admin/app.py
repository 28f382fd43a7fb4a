"""The admin listener: health, readiness, metrics, and the routes other parts mount.

Kept apart from the public callback listener so that the operational endpoints (and the
runs API) are never exposed to the internet by accident: the admin listener binds
127.0.0.1 by default, the public one serves only ``/hooks/…``.

- ``GET /healthz``  200 while the process runs (liveness).
- ``GET /readyz``   200 when a config is loaded and the store can record, else 503.
  The store part is the store's last known state (`hookd.store.interface.StoreHealth`),
  never a query: readiness must answer while another process holds the store's lock.
  A newer config that was rejected does not make hookd unready (the last good one is
  serving); it is reported in the body. 503 while draining.
- ``GET /metrics``  Prometheus text format (`hookd.telemetry.metrics`).
- anything passed in `routes` (the runs API of `hookd.admin.api`, the daemon's status route).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from hookd.admin.auth import AdminAuth, AdminGuard
from hookd.ingest.app import AppState
from hookd.store import errors as store_errors

log = logging.getLogger("hookd.admin.app")

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def create_admin_app(
    state: AppState, routes: Sequence[BaseRoute] | None = None,
    auth: Callable[[], AdminAuth] | None = None,
) -> Starlette | AdminGuard:
    """The admin app. `routes` default to the runs API (`hookd.admin.api`) when it is installed.

    With `auth` (the daemon always gives it: the current `AdminAuth`, which follows
    reloads), every request passes `hookd.admin.auth.AdminGuard` first."""
    depth: list[int | None] = [None]  # read by /metrics just before rendering
    if state.metrics.inbox_depth.read is None:
        state.metrics.inbox_depth.read = lambda: depth[0]
    if state.metrics.store_wal_bytes.read is None:
        state.metrics.store_wal_bytes.read = lambda: state.store.health.state().wal_bytes

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        code, doc = readiness(state)
        return JSONResponse(doc, status_code=code)

    async def metrics(request: Request) -> Response:
        try:
            depth[0] = await state.store.deliveries.depth()
        except store_errors.StoreError:
            depth[0] = None
        return PlainTextResponse(state.metrics.render(), media_type=PROMETHEUS_TYPE)

    extra = list(routes) if routes is not None else _api_routes(state)
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *extra,
        ]
    )
    return app if auth is None else AdminGuard(app, auth)


def readiness(state: AppState) -> tuple[int, dict[str, Any]]:
    """``(status code, document)`` for ``/readyz``."""
    store_ok, store_error = store_writable(state)
    doc: dict[str, Any] = {
        "status": "ready",
        "config": "rejected" if state.rejected_config else "ok",
        "revision": state.config.revision,
        "store": "ok" if store_ok else "error",
    }
    if state.rejected_config:
        doc["rejected"] = state.rejected_config
    if not store_ok:
        doc["store_error"] = store_error
    if state.draining or not store_ok:
        doc["status"] = "draining" if state.draining else "unavailable"
        return 503, doc
    return 200, doc


def store_writable(state: AppState) -> tuple[bool, str]:
    """Can deliveries be recorded? The store's last known state: never waits."""
    health = state.store.health.state()
    return health.ok, health.error or ""


def _api_routes(state: AppState) -> list[BaseRoute]:
    """The runs API routes of `hookd.admin.api` when that module provides them."""
    try:
        api = importlib.import_module("hookd.admin.api")
    except ImportError:
        return []
    factory = getattr(api, "routes", None) or getattr(api, "create_routes", None)
    if factory is None:
        return []
    try:
        return list(factory(state.store) if callable(factory) else factory)
    except Exception:
        log.exception("cannot build the runs API routes")
        return []

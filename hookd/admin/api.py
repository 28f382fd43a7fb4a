"""The runs API on the admin listener: run history as JSON, and replay.

    GET  /api/runs?flow=&status=&limit=&before=   newest first, without steps
    GET  /api/runs/{id}                           one run with its steps (id prefix ok)
    POST /api/runs/{id}/replay                    queue the run's delivery again → 202
    POST /api/deliveries/{id}/replay              queue a delivery again → 202

Replays answer ``202 {"delivery": id}``: the worker creates the new run (it is poked so it
starts at once). Errors are ``{"error": message}`` with 400 (bad query), 404 (unknown),
409 (the delivery is still queued or running) or 410 (the delivery was pruned).

The admin listener is meant to be bound to localhost (or a management network): these
routes show step inputs (secrets already redacted) and can re-run flows.

`routes(store)` takes the daemon's store (`hookd.store.interface.Store`); a replay wakes the
worker through the store's wake-up hook. The store runs its calls off the event loop.
The store raises domain errors; `STATUS` is where they become HTTP statuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from hookd.store import errors
from hookd.store.interface import Store
from hookd.store.records import RUN_STATUSES

MAX_LIMIT = 1000
# The store's errors as this API's answers (the store knows nothing of HTTP).
STATUS: tuple[tuple[type[errors.StoreError], int], ...] = (
    (errors.NotFound, 404), (errors.Conflict, 409), (errors.Gone, 410),
    (errors.Unavailable, 503),
)


def status_of(exc: errors.StoreError) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


def routes(store: Store) -> list[BaseRoute]:
    return _routes(store)


def create_app(store: Store) -> Starlette:
    """A Starlette app with only these routes (tests; the daemon mounts `routes`)."""
    return Starlette(routes=routes(store))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _routes(store: Store) -> list[BaseRoute]:
    async def list_runs(request: Request) -> JSONResponse:
        q = request.query_params
        status = q.get("status") or None
        if status is not None and status not in RUN_STATUSES:
            return _error(400, f"status must be one of {', '.join(RUN_STATUSES)}")
        try:
            limit = int(q.get("limit") or 50)
        except ValueError:
            return _error(400, "limit must be an integer")
        limit = max(0, min(limit, MAX_LIMIT))
        try:
            runs = await store.runs.list(flow=q.get("flow") or None, status=status,
                                         limit=limit, before=q.get("before") or None)
        except errors.StoreError as exc:
            return _error(status_of(exc), str(exc))
        return JSONResponse({"runs": [r.to_json(steps=False) for r in runs]})

    async def get_run(request: Request) -> JSONResponse:
        run_id = request.path_params["id"]
        try:
            run = await store.runs.get(run_id)
        except errors.StoreError as exc:
            return _error(status_of(exc), str(exc))
        if run is None:
            return _error(404, f"no run {run_id!r}")
        return JSONResponse(run.to_json())

    def replay_route(kind: Literal["run", "delivery"]) -> Callable[[Request], Any]:
        async def handler(request: Request) -> JSONResponse:
            ident = request.path_params["id"]
            try:
                delivery_id = await store.runs.replay(ident, kind=kind)
            except errors.StoreError as exc:
                return _error(status_of(exc), str(exc))
            return JSONResponse({"delivery": delivery_id}, status_code=202)

        return handler

    return [
        Route("/api/runs", list_runs, methods=["GET"]),
        Route("/api/runs/{id}", get_run, methods=["GET"]),
        Route("/api/runs/{id}/replay", replay_route("run"), methods=["POST"]),
        Route("/api/deliveries/{id}/replay", replay_route("delivery"), methods=["POST"]),
    ]

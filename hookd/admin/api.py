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

`routes(state)` takes the daemon's app state: anything with a ``config`` attribute (the
current `Config`, for the state directory) and optionally a ``worker`` (to poke).
Each request opens its own short-lived SQLite connection in a thread, so the event loop
never waits on the database and no connection is shared between threads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from hookd.store.sqlite import db as dbmod
from hookd.store.sqlite.runs import RUN_STATUSES, ReplayError, RunStore, replay

MAX_LIMIT = 1000


def routes(state: Any) -> list[BaseRoute]:
    def state_dir() -> Path:
        return Path(state.config.settings.state_dir)

    def poke() -> None:
        worker = getattr(state, "worker", None)
        if worker is not None:
            worker.poke()

    return _routes(state_dir, poke)


def create_app(state: Any) -> Starlette:
    """A Starlette app with only these routes (tests; the daemon mounts `routes`)."""
    return Starlette(routes=routes(state))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _routes(state_dir: Callable[[], Path], poke: Callable[[], None]) -> list[BaseRoute]:
    def with_conn(fn: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = dbmod.connect(state_dir() / dbmod.DB_NAME)
        try:
            dbmod.migrate(conn)
            return fn(conn)
        finally:
            conn.close()

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
        runs = await run_in_threadpool(with_conn, lambda c: RunStore(c).list(
            flow=q.get("flow") or None, status=status, limit=limit,
            before=q.get("before") or None))
        return JSONResponse({"runs": [r.to_json(steps=False) for r in runs]})

    async def get_run(request: Request) -> JSONResponse:
        run_id = request.path_params["id"]
        run = await run_in_threadpool(with_conn, lambda c: RunStore(c).get(run_id))
        if run is None:
            return _error(404, f"no run {run_id!r}")
        return JSONResponse(run.to_json())

    def replay_route(kind: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> JSONResponse:
            ident = request.path_params["id"]
            try:
                delivery_id = await run_in_threadpool(
                    with_conn, lambda c: replay(c, ident, kind=kind))
            except ReplayError as exc:
                return _error(exc.status, str(exc))
            poke()
            return JSONResponse({"delivery": delivery_id}, status_code=202)

        return handler

    return [
        Route("/api/runs", list_runs, methods=["GET"]),
        Route("/api/runs/{id}", get_run, methods=["GET"]),
        Route("/api/runs/{id}/replay", replay_route("run"), methods=["POST"]),
        Route("/api/deliveries/{id}/replay", replay_route("delivery"), methods=["POST"]),
    ]

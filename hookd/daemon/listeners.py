"""The daemon's two listeners: building the apps (the admin one behind its `AdminAuth`),
their bounds (`hookd.daemon.protocol` guards), the uvicorn servers, starting and stopping
them.

hookd owns the signals, not uvicorn: a uvicorn server exits on SIGINT by itself, which
would skip the drain (`quiet_server`). Both servers share the daemon's event loop;
`make_server` is the one place their uvicorn options are chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

    from hookd.admin.auth import AdminAuth
    from hookd.config.model import Config, Settings
    from hookd.daemon.protocol import Guard
    from hookd.daemon.status import StatusFacts
    from hookd.ingest.app import AppState
    from hookd.telemetry.metrics import Metrics

log = logging.getLogger("hookd.daemon.lifecycle")


def quiet_server(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server that leaves the signals to hookd."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    return Server(config)


def guards(settings: Settings, metrics: Metrics) -> list[Guard]:
    """The public and admin listeners' bounds (`hookd.daemon.protocol`), on /metrics."""
    from hookd.daemon import protocol

    limits = settings.limits
    open_files = protocol.open_file_limit()
    policies = protocol.policies(limits, open_files)
    guards = [protocol.Guard(name, policies[name]) for name in ("public", "admin")]
    if policies["public"].max_connections < limits.max_connections:
        log.warning("the open-file limit lowers the public listener's connection cap",
                    extra={"open_files": open_files,
                           "max_connections": policies["public"].max_connections,
                           "hint": "raise LimitNOFILE= (systemd) or ulimit -n"})
    metrics.add(protocol.GuardMetrics(guards))
    return guards


def make_server(app: Any, host: str, port: int, settings: Settings,
                guard: Guard) -> uvicorn.Server:
    """The one place a listener's uvicorn config is made (`hookd.daemon.protocol`)."""
    import uvicorn

    from hookd.daemon import protocol

    limits = settings.limits
    config = uvicorn.Config(
        app, host=host, port=port,
        log_config=None,  # hookd's handler formats and redacts everything
        access_log=False,  # callback paths carry tokens; hookd logs deliveries itself
        lifespan="off", server_header=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout)),
        # httptools with hookd's header cap, header/body timeouts and connection cap
        # (h11, and so h11_max_incomplete_event_size, is never used).
        http=protocol.protocol_class(guard),
        timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]  # a float works
        # A backstop only: uvicorn answers 503 when its count of connections or of
        # requests in flight reaches this. The guard keeps connections at the cap, but
        # those it closes leave uvicorn's count a moment later (during a burst of
        # accepts), so the backstop sits well above the cap.
        limit_concurrency=2 * guard.policy.max_connections,
        backlog=min(2048, guard.policy.max_connections),
    )
    return quiet_server(config)


async def serve(server: uvicorn.Server, sockets: list[socket.socket] | None) -> None:
    """Run one listener; uvicorn's ``sys.exit(3)`` when it cannot bind ends only this task
    (the daemon then stops with exit code 2), not the whole event loop."""
    with contextlib.suppress(SystemExit):
        await server.serve(sockets=sockets)


def inherited_socket(env: dict[str, str]) -> socket.socket | None:
    """The public listener passed by systemd socket activation (fd 3), if any."""
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    return socket.socket(fileno=3) if count >= 1 else None


def build_apps(state: AppState, collect: Callable[[], Awaitable[StatusFacts]],
               auth: Callable[[], AdminAuth], pages: Sequence[Any] = ()) -> tuple[Any, Any]:
    """The public app, and the admin app with ``/api/status``, the runs API and `pages`
    (the status page's routes, `hookd.daemon.pages.routes`), behind `auth` (the running
    config's `hookd.admin.auth.AdminAuth`)."""
    from hookd.admin import api
    from hookd.admin.app import create_admin_app
    from hookd.daemon import status
    from hookd.ingest.app import create_app

    routes = [*status.routes(collect), *api.routes(state.store), *pages]
    return create_app(state), create_admin_app(state, routes, auth=auth)


class AdminAuthSource:
    """The admin listener's `AdminAuth` for the running config (`hookd.admin.auth`), called
    per request: made again when a reload brings new settings; a token that cannot be
    resolved then keeps the last one (and says so)."""

    def __init__(self, config: Callable[[], Config]) -> None:
        self._config = config
        self._auth: tuple[Settings, AdminAuth] | None = None  # (settings, auth) made last

    def __call__(self) -> AdminAuth:
        from hookd.admin import auth
        from hookd.config import secrets
        from hookd.telemetry import logs

        config = self._config()
        settings = config.settings
        if self._auth is not None and self._auth[0] is settings:
            return self._auth[1]
        try:
            token = auth.server_token(settings, lambda ref: secrets.resolve_value(
                ref, base_dir=config.directory))
        except Exception as exc:
            if self._auth is None:
                raise
            log.error("cannot read the admin token; keeping the last one",
                      extra={"error": str(exc)})
            token = self._auth[1].token
        logs.register_secret(token)
        current = auth.AdminAuth.for_settings(settings, token)
        self._auth = (settings, current)
        return current


def bound_ports(servers: list[uvicorn.Server]) -> dict[str, int]:
    """The port each listener (public, admin) got from the system."""
    ports: dict[str, int] = {}
    for name, server in zip(("public", "admin"), servers, strict=True):
        for listening in server.servers:
            for sock in listening.sockets:
                ports.setdefault(name, int(sock.getsockname()[1]))
    return ports


def with_ports(config: Config, bound: dict[str, int]) -> Config:
    """`config` with the `bound` ports where its listeners say 0 (any free port)."""
    import dataclasses

    settings, changed = config.settings, {}
    for name, port in bound.items():
        listener = getattr(settings, name)
        if listener.port == 0:
            changed[name] = dataclasses.replace(listener, port=port)
    if not changed:
        return config
    return dataclasses.replace(config, settings=dataclasses.replace(settings, **changed))


async def started(servers: list[uvicorn.Server], serving: list[asyncio.Task[Any]]) -> bool:
    """Wait until every server listens; False when one gave up (cannot bind)."""
    while not all(s.started for s in servers):
        if any(t.done() for t in serving):
            return False  # uvicorn exits its task when it cannot bind
        await asyncio.sleep(0.005)
    return True


async def stop_servers(servers: list[uvicorn.Server], serving: list[asyncio.Task[Any]]) -> None:
    for server in servers:
        server.should_exit = True
    _, pending = await asyncio.wait(serving, timeout=5)
    if pending:  # connections that will not close: stop waiting for them
        for server in servers:
            server.force_exit = True
        await asyncio.wait(pending, timeout=2)

"""The daemon's two listeners: building the apps, the uvicorn servers, starting and
stopping them.

hookd owns the signals, not uvicorn: a uvicorn server exits on SIGINT by itself, which
would skip the drain (`quiet_server`). Both servers share the daemon's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

    from hookd.config.model import Settings
    from hookd.daemon.status import StatusFacts
    from hookd.ingest.app import AppState


def quiet_server(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server that leaves the signals to hookd."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    return Server(config)


def make_server(app: Any, host: str, port: int, settings: Settings) -> uvicorn.Server:
    """One listener's server: the one place its uvicorn options are chosen."""
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port,
        log_config=None,  # hookd's handler formats and redacts everything
        access_log=False,  # callback paths carry tokens; hookd logs deliveries itself
        lifespan="off", server_header=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout)),
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


def build_apps(state: AppState,
               collect: Callable[[], Awaitable[StatusFacts]]) -> tuple[Any, Any]:
    """The public app, and the admin app with ``/api/status`` and the runs API."""
    from hookd.admin import api
    from hookd.admin.app import create_admin_app
    from hookd.daemon import status
    from hookd.ingest.app import create_app

    routes = [*status.routes(collect), *api.routes(state.store)]
    return create_app(state), create_admin_app(state, routes)


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

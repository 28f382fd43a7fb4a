"""The database goes away under a running replica: callbacks are answered 503 with
Retry-After, /readyz says 503, nothing is acknowledged that is not committed; when the
database is back, so is the replica (docs/scale-out.md, "Durability")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

from tests.fakes.github import free_port
from tests.test_daemon import wait_until
from tests.test_scaleout import http_flow


class Cut:
    """A TCP forwarder to PostgreSQL that a test can cut (every connection, and new ones
    refused) and restore on the same port: a network outage between hookd and its database."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def _call(self, coro) -> None:  # type: ignore[no-untyped-def]
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def up(self) -> None:
        async def start() -> None:
            self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

        self._call(start())

    def down(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
            for w in list(self._writers):
                w.transport.abort()

        self._call(stop())

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_connection(*self.target)
        self._writers.update((writer, w2))

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(copy(reader, w2), copy(r2, writer))


def test_database_down_answers_503_and_acknowledges_nothing_uncommitted(
        postgres_url: str, tmp_path: Path) -> None:
    parts = urlsplit(postgres_url)
    cut = Cut(parts.hostname or "127.0.0.1", parts.port or 5432)
    cut.up()
    netloc = parts.netloc.rsplit("@", 1)
    via = urlunsplit((parts.scheme, f"{netloc[0]}@127.0.0.1:{cut.port}", parts.path, "", ""))
    config = tmp_path / "config"
    (config / "flows").mkdir(parents=True)
    public, admin = free_port(), free_port()
    (config / "hookd.yaml").write_text(
        f"public_url: http://127.0.0.1:{public}\nstore: ${{env:HOOKD_DB}}\n"
        f"listen:\n  public: {{host: 127.0.0.1, port: {public}}}\n"
        f"  admin: {{host: 127.0.0.1, port: {admin}}}\nshutdown_timeout: 5s\n")
    (config / "flows" / "a.yaml").write_text(
        http_flow("a", "  - id: note\n    log: {message: hi}\n"))
    proc = subprocess.Popen([sys.executable, "-m", "hookd", "run", "--config", str(config),
                             "--state-dir", str(tmp_path / "state")],
                            env={**os.environ, "HOOKD_DB": via}, stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "hookd.log").open("w"))
    try:
        readyz = f"http://127.0.0.1:{admin}/readyz"
        wait_until(lambda: httpx.get(readyz, timeout=2).status_code == 200, 60, "ready")
        from tests.test_scaleout import Cluster, _callback_url

        url = wait_until(lambda: _callback_url(Cluster(config, postgres_url, None, None, ""),  # type: ignore[arg-type]
                                               "a"), 20, "callback URL")
        assert httpx.post(url, json={"n": 1}, timeout=10).status_code == 202

        cut.down()
        started = time.monotonic()
        refused = httpx.post(url, json={"n": 2}, timeout=30)
        assert refused.status_code == 503, refused.text
        assert refused.headers.get("retry-after")
        assert time.monotonic() - started < 15  # the pool's wait, not a hang
        wait_until(lambda: httpx.get(readyz, timeout=2).status_code == 503, 15, "readyz 503")

        cut.up()
        wait_until(lambda: httpx.get(readyz, timeout=2).status_code == 200, 30, "ready again")
        wait_until(lambda: httpx.post(url, json={"n": 3}, timeout=10).status_code == 202, 30,
                   "accepting again")
        with psycopg.connect(postgres_url) as conn:
            bodies = {bytes(r[0]) for r in conn.execute("SELECT body FROM deliveries")}
        assert b'{"n":1}' in bodies and b'{"n":3}' in bodies
        assert b'{"n":2}' not in bodies  # answered 503: not recorded, the upstream retries
    finally:
        proc.terminate()
        proc.wait(20)
        cut.down()

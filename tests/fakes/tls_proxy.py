"""A test CA, a TLS server for a real host name, and an HTTPS proxy in front of it.

How hookd is checked against real hosts without the network: ``HTTPS_PROXY`` points at
`ConnectProxy` (a real ``CONNECT`` proxy on 127.0.0.1 that tunnels every ``host:443`` to
one local TLS server), that server presents a certificate for the real host name
(``api.github.com``) signed by a throw-away CA, and ``SSL_CERT_FILE`` names that CA.
hookd must honour both standard variables for requests to get through.

Certificates are made with the ``openssl`` command line (no Python dependency).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.fakes.github import free_port, serve_app


def have_openssl() -> bool:
    return shutil.which("openssl") is not None


def make_certificates(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for `host`, in `directory`."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=hookd test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}", "-keyout", "server.key",
        "-out", "server.csr")
    (directory / "ext.cnf").write_text(f"subjectAltName=DNS:{host}\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@contextmanager
def serve_tls(app: Any, certfile: Path, keyfile: Path) -> Iterator[int]:
    """`app` under uvicorn with TLS on 127.0.0.1; yields the port."""
    with serve_app(app, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)) as url:
        yield int(url.rsplit(":", 1)[1])


class ConnectProxy:
    """``CONNECT host:443`` → a tunnel to 127.0.0.1:`target_port`; records the targets."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connects: list[str] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        self.connects.append(target)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

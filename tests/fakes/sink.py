"""A real HTTP server on 127.0.0.1 that records what it receives (a notification target).

Each request is kept with its method, path, headers, body and the time it arrived and
was answered, so tests can assert the exact text a step sent and that steps of a
serialised flow never overlapped. `responses` scripts the statuses to answer with (then
`default_status`); `delay` holds each request that long before answering.
"""

from __future__ import annotations

import json
import os
import selectors
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    started: float
    ended: float = 0.0

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Sink:
    responses: list[int] = field(default_factory=list)
    default_status: int = 200
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)  # as answered (after `delay`)
    arrived: list[str] = field(default_factory=list)  # paths as they arrive (before `delay`)
    headers: dict[str, str] = field(default_factory=dict)  # sent with every answer

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave in separate writes

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                started = time.time()
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with sink._lock:
                    sink.arrived.append(self.path)
                if sink.delay:
                    time.sleep(sink.delay)
                with sink._lock:
                    status = sink.responses.pop(0) if sink.responses else sink.default_status
                    rec = Received(self.command, self.path, {k.lower(): v for k, v in
                                                             self.headers.items()}, body, started)
                    sink.received.append(rec)
                payload = json.dumps({"ok": status < 400, "n": len(sink.received)}).encode()
                rec.ended = time.time()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in sink.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._wake_r, self._wake_w = os.pipe()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        # Not serve_forever: its select wakes every poll interval (0.5 s) to notice
        # shutdown(), and every test paid that on close. This one wakes on a connection or
        # on close() (a byte on the wake-up pipe).
        with selectors.DefaultSelector() as selector:
            selector.register(self.server, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj == self._wake_r:
                        return
                    self.server.handle_request()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        os.write(self._wake_w, b"x")
        self.thread.join()
        self.server.server_close()
        os.close(self._wake_r)
        os.close(self._wake_w)

"""A load balancer in front of hookd replicas, as nginx with ``proxy_next_upstream error
http_503`` behaves (docs/scale-out.md): requests go round-robin; a replica that refuses
the connection or answers 503 is skipped and the request goes to the next one.

`backends` may change while it runs (a test kills a replica and its port goes dead).
"""

from __future__ import annotations

import itertools
import threading

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class Balancer:
    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self.forwarded: dict[str, int] = {}

    def app(self) -> Starlette:
        client = httpx.AsyncClient(timeout=30)

        async def forward(request: Request) -> Response:
            body = await request.body()
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() not in ("host", "content-length")}
            with self._lock:
                start = next(self._turn)
            backends = list(self.backends)
            last = Response("no backend answered", status_code=502)
            for n in range(len(backends)):
                backend = backends[(start + n) % len(backends)]
                try:
                    answer = await client.request(request.method, backend + request.url.path,
                                                  content=body, headers=headers)
                except httpx.TransportError:
                    continue
                if answer.status_code == 503:
                    last = Response(answer.content, status_code=503)
                    continue
                with self._lock:
                    self.forwarded[backend] = self.forwarded.get(backend, 0) + 1
                return Response(answer.content, status_code=answer.status_code,
                                headers={k: v for k, v in answer.headers.items()
                                         if k.lower() in ("content-type", "retry-after")})
            return last

        return Starlette(routes=[Route("/{path:path}", forward, methods=["POST", "GET"])])

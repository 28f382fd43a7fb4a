"""One generic upstream for every corpus connector: a real HTTP server on 127.0.0.1 that
records what hookd sends to a connector's *real* host and answers as the spec says.

hookd's requests reach it through `Rerouting`, an httpx transport that sends each
request to 127.0.0.1 unchanged but for the connection target: the ``Host`` header still
names the real host (``api.calendly.com``), the path and query are hookd's. The fake
answers a create (anything but GET and DELETE) with ``201``, the new subscription's id
under every id-like name the operation's 2xx response schema declares (and ``id``), and
a ``Location`` on the same host — how a Power Automate upstream says where to delete
the hook, declared in the spec or not; ``GET`` with an empty list; ``DELETE`` of a known
id with ``204``, else ``404``. The test compares the recorded requests with
what the connector's own files say Power Platform would send.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


@dataclass
class Seen:
    method: str
    scheme: str
    host: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: Any


@dataclass
class CorpusUpstream:
    """The app; set `id_fields` and `location` per connector before its apply."""

    id_fields: tuple[str, ...] = ("id",)
    location: bool = True
    requests: list[Seen] = field(default_factory=list)
    live: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._ids = itertools.count(7001)

    def reset(self, id_fields: tuple[str, ...], location: bool) -> None:
        self.id_fields, self.location = id_fields, location
        self.requests.clear()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("latin-1")
        seen = Seen(request.method, request.headers.get("x-test-scheme", "https"),
                    request.headers.get("host", ""), request.url.path,
                    list(request.query_params.multi_items()),
                    {k.lower(): v for k, v in request.headers.items()}, body)
        self.requests.append(seen)
        await self._answer(seen)(scope, receive, send)

    def _answer(self, seen: Seen) -> Response:
        if seen.method == "GET":
            return JSONResponse([])
        if seen.method == "DELETE":
            known = next((i for i in self.live if seen.path.rstrip("/").endswith("/" + i)
                          or any(v == i for _, v in seen.query)), None)
            if known is None:
                return JSONResponse({"message": "no such subscription"}, 404)
            self.live.discard(known)
            return Response(status_code=204)
        sub_id = str(next(self._ids))
        self.live.add(sub_id)
        headers = {}
        if self.location:
            headers["Location"] = f"{seen.scheme}://{seen.host}/__subscriptions/{sub_id}"
        return JSONResponse({name: sub_id for name in self.id_fields}, 201, headers=headers)


class Rerouting(httpx.AsyncBaseTransport):
    """Send every request to `target` (``http://127.0.0.1:PORT``), keeping its Host."""

    def __init__(self, target: str) -> None:
        self.target = httpx.URL(target)
        # The target is plain HTTP: no CA bundle to load (70 ms per transport, and the
        # corpus test makes two per connector).
        assert self.target.scheme == "http", target
        self.inner = httpx.AsyncHTTPTransport(verify=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        original = request.url
        request.headers["x-test-scheme"] = original.scheme
        request.url = original.copy_with(scheme=self.target.scheme, host=self.target.host,
                                         port=self.target.port)
        try:
            return await self.inner.handle_async_request(request)
        finally:
            request.url = original

    async def aclose(self) -> None:
        await self.inner.aclose()

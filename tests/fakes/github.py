"""A fake of GitHub's repository-hooks API, a real HTTP server on 127.0.0.1.

Stateful and close to the documented behaviour, so the reconciler is tested against the
shapes it meets in production:

- ``POST /repos/{o}/{r}/hooks`` → 201 with ``Location``; 422 when a hook with the same
  ``config.url`` exists in that repository; a ``ping`` delivery to the new hook's URL
  (``ping=True``), signed with the hook's secret.
- ``GET /repos/{o}/{r}/hooks`` → 30 per page with RFC 8288 ``Link`` (``per_page``/``page``).
- ``GET`` / ``PATCH`` / ``DELETE /repos/{o}/{r}/hooks/{id}`` → 200 / 200 / 204, 404 when
  unknown.
- 403 without a ``User-Agent`` header, 401 for a wrong token, 404 for an unknown
  repository (GitHub hides private repos).
- `deliver(hook_id, event, payload)` posts a signed delivery (``X-Hub-Signature-256``).
- Fault injection: `fail_rate` of requests answer 500, 429 with ``Retry-After`` or are
  slow (beyond the client timeout) or dropped *after* the write took effect — the nasty
  case for non-idempotent creates; `latency` per request.

`write_requests` counts POST/PATCH/DELETE; `list_requests` counts GET lists.

`github_connector()` builds the typed connector model hookd would load for GitHub, so tests
do not depend on the connector loader.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hookd.connectors.model import (
    Auth,
    Connector,
    DeleteStrategy,
    ListStrategy,
    Operation,
    Parameter,
    Verification,
    WebhookTrigger,
)

PER_PAGE = 30


def github_connector(name: str = "github", *, base_url: str = "https://api.github.com") -> Connector:
    """The GitHub connector as the loader would build it (repository webhooks)."""
    scheme, _, host = base_url.partition("://")
    owner_repo = (
        Parameter("owner", "path", required=True, type="string"),
        Parameter("repo", "path", required=True, type="string"),
    )
    body_schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "default": "web"},
            "active": {"type": "boolean", "default": True},
            "events": {"type": "array", "items": {"type": "string"}, "default": ["push"]},
            "config": {
                "type": "object",
                "properties": {
                    "url": {"type": "string", "x-ms-notification-url": True},
                    "content_type": {"type": "string", "default": "json"},
                    "secret": {"type": "string"},
                    "insecure_ssl": {"type": "string", "default": "0"},
                },
            },
        },
    }
    ops = {
        "webhook-trigger": Operation(
            "webhook-trigger", "POST", "/repos/{owner}/{repo}/hooks",
            parameters=(*owner_repo, Parameter("body", "body", schema=body_schema)),
            body_schema=body_schema, trigger="single", location_header=True,
        ),
        "list-hooks": Operation("list-hooks", "GET", "/repos/{owner}/{repo}/hooks",
                                parameters=owner_repo),
        "delete-hook": Operation(
            "delete-hook", "DELETE", "/repos/{owner}/{repo}/hooks/{hook_id}",
            parameters=(*owner_repo, Parameter("hook_id", "path", required=True, type="integer")),
        ),
    }
    return Connector(
        name=name, title="GitHub", scheme=scheme, host=host.rstrip("/"), base_path="/",
        operations=ops,
        webhooks={
            "webhook-trigger": WebhookTrigger(
                "webhook-trigger",
                notification_url=("body", "config", "url"),
                secret_path=("body", "config", "secret"),
                delete=DeleteStrategy("operation", "delete-hook", "hook_id", "id", "sibling"),
                list=ListStrategy("list-hooks", url_field="config.url", id_field="id"),
            )
        },
        auth=Auth("oauth2"),
        verification=Verification("hmac-sha256", "X-Hub-Signature-256", "sha256=", "hex"),
        delivery_id_header="X-GitHub-Delivery", event_header="X-GitHub-Event", ping_event="ping",
    )


@dataclass
class Faults:
    """Fractions of requests (0..1) answered badly; drawn independently per request."""

    error_500: float = 0.0
    rate_limit_429: float = 0.0
    slow: float = 0.0  # sleeps `slow_seconds` before answering (after the write)
    drop: float = 0.0  # closes the connection without an answer (after the write)
    slow_seconds: float = 2.0
    retry_after: int = 1

    @classmethod
    def mixed(cls, rate: float, **kw: Any) -> Faults:
        """`rate` spread over 500s, 429s, slow answers and dropped connections."""
        return cls(error_500=rate * 0.4, rate_limit_429=rate * 0.2, slow=rate * 0.2,
                   drop=rate * 0.2, **kw)


@dataclass
class Hook:
    id: int
    owner: str
    repo: str
    config: dict[str, Any]
    events: list[str]
    active: bool = True
    name: str = "web"


@dataclass
class FakeGitHub:
    """State plus the starlette app; run it with `serve()`."""

    token: str = "ghp_test"
    repos: set[tuple[str, str]] = field(default_factory=set)  # empty = any repo exists
    latency: float = 0.0
    ping: bool = False
    faults: Faults = field(default_factory=Faults)
    seed: int = 1
    hooks: dict[int, Hook] = field(default_factory=dict)
    write_requests: int = 0
    list_requests: int = 0
    requests: int = 0
    pings: list[tuple[int, int]] = field(default_factory=list)  # (hook id, status)
    log: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    base_url: str = ""

    def __post_init__(self) -> None:
        self._next_id = 1
        # (owner, repo, url) → hook id; entries are checked against `hooks` on use, so
        # tests may delete from `hooks` directly.
        self._by_url: dict[tuple[str, str, str], int] = {}
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    # -------------------------------------------------------------- test helpers

    def add_hook(self, owner: str, repo: str, url: str, events: list[str] | None = None,
                 secret: str | None = None) -> Hook:
        """A hook created by someone else (not through the API counters)."""
        with self._lock:
            hook = Hook(self._next_id, owner, repo,
                        {"url": url, "content_type": "json", **({"secret": secret} if secret else {})},
                        events or ["push"])
            self.hooks[hook.id] = hook
            self._by_url[(owner, repo, url)] = hook.id
            self._next_id += 1
            return hook

    def _exists(self, owner: str, repo: str, url: str) -> bool:
        hook = self.hooks.get(self._by_url.get((owner, repo, url), -1))
        return hook is not None and (hook.owner, hook.repo, hook.config.get("url")) == (
            owner, repo, url)

    def hooks_of(self, owner: str, repo: str) -> list[Hook]:
        return [h for h in self.hooks.values() if (h.owner, h.repo) == (owner, repo)]

    def reset_counters(self) -> None:
        self.write_requests = self.list_requests = self.requests = 0
        self.log.clear()

    def deliver(self, hook_id: int, event: str, payload: Any) -> httpx.Response:
        """POST a signed delivery to the hook's URL, as GitHub does."""
        hook = self.hooks[hook_id]
        return _send_delivery(hook, event, payload)

    # -------------------------------------------------------------- the app

    def app(self) -> Starlette:
        routes = [
            Route("/repos/{owner}/{repo}/hooks", self._collection, methods=["GET", "POST"]),
            Route("/repos/{owner}/{repo}/hooks/{hook_id:int}", self._item,
                  methods=["GET", "PATCH", "DELETE"]),
            Route("/__stats", self._stats, methods=["GET", "DELETE"]),
        ]
        return Starlette(routes=routes)

    async def _stats(self, request: Request) -> Response:
        """Counters for a fake running in another process (benchmarks); DELETE resets."""
        if request.method == "DELETE":
            self.reset_counters()
            if request.query_params.get("hooks") == "1":
                self.hooks.clear()
        return JSONResponse({"hooks": len(self.hooks), "requests": self.requests,
                             "write_requests": self.write_requests,
                             "list_requests": self.list_requests})

    async def _gate(self, request: Request) -> Response | None:
        """Latency, credentials, repository, then injected faults (before the write)."""
        self.requests += 1
        self.log.append((request.method, request.url.path))
        if request.method in ("POST", "PATCH", "DELETE"):
            self.write_requests += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if not request.headers.get("user-agent"):
            # As GitHub does: https://docs.github.com/rest/using-the-rest-api/getting-started
            return JSONResponse({"message": "Request forbidden by administrative rules. Please "
                                 "make sure your request has a User-Agent header"}, 403)
        auth = request.headers.get("authorization", "")
        if auth not in (f"Bearer {self.token}", f"token {self.token}"):
            return JSONResponse({"message": "Bad credentials"}, 401)
        owner, repo = request.path_params["owner"], request.path_params["repo"]
        if self.repos and (owner, repo) not in self.repos:
            return JSONResponse({"message": "Not Found"}, 404)
        draw = self._rng.random()
        f = self.faults
        if draw < f.error_500:
            return JSONResponse({"message": "Server Error"}, 500)
        if draw < f.error_500 + f.rate_limit_429:
            return JSONResponse({"message": "rate limited"}, 429,
                                headers={"Retry-After": str(f.retry_after)})
        return None

    def _after_write_fault(self) -> str | None:
        """Slow or dropped *after* the write happened (the client cannot know)."""
        f = self.faults
        draw = self._rng.random()
        if draw < f.slow:
            return "slow"
        if draw < f.slow + f.drop:
            return "drop"
        return None

    async def _finish(self, fault: str | None, response: Response) -> Response:
        if fault == "slow":
            await asyncio.sleep(self.faults.slow_seconds)
        if fault == "drop":
            raise _Drop()
        return response

    async def _collection(self, request: Request) -> Response:
        gate = await self._gate(request)
        if gate is not None:
            return gate
        owner, repo = request.path_params["owner"], request.path_params["repo"]
        if request.method == "GET":
            self.list_requests += 1
            return self._list(request, owner, repo)
        body = await request.json()
        config = dict(body.get("config") or {})
        url = config.get("url")
        if not url:
            return JSONResponse({"message": "Validation Failed",
                                 "errors": [{"field": "config.url", "code": "missing"}]}, 422)
        fault = self._after_write_fault()
        with self._lock:
            if self._exists(owner, repo, url):
                return JSONResponse({"message": "Validation Failed", "errors": [
                    {"resource": "Hook", "code": "custom",
                     "message": "Hook already exists on this repository"}]}, 422)
            hook = Hook(self._next_id, owner, repo, config, list(body.get("events") or ["push"]),
                        bool(body.get("active", True)), body.get("name", "web"))
            self.hooks[hook.id] = hook
            self._by_url[(owner, repo, url)] = hook.id
            self._next_id += 1
        if self.ping:
            asyncio.get_running_loop().run_in_executor(None, self._ping, hook)
        location = f"{self.base_url}/repos/{owner}/{repo}/hooks/{hook.id}"
        return await self._finish(
            fault, JSONResponse(self._render(hook), 201, headers={"Location": location}))

    def _ping(self, hook: Hook) -> None:
        try:
            r = _send_delivery(hook, "ping", {"zen": "Keep it logically awesome.",
                                              "hook_id": hook.id, "hook": self._render(hook)})
            self.pings.append((hook.id, r.status_code))
        except httpx.HTTPError:
            self.pings.append((hook.id, 0))

    def _list(self, request: Request, owner: str, repo: str) -> Response:
        per_page = int(request.query_params.get("per_page", PER_PAGE))
        page = int(request.query_params.get("page", 1))
        items = sorted(self.hooks_of(owner, repo), key=lambda h: h.id)
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        last = max(1, -(-len(items) // per_page))
        base = f"{self.base_url}/repos/{owner}/{repo}/hooks"
        links = []
        if page < last:
            links.append(f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{base}?per_page={per_page}&page={last}>; rel="last"')
        if links:
            headers["Link"] = ", ".join(links)
        return JSONResponse([self._render(h) for h in chunk], headers=headers)

    async def _item(self, request: Request) -> Response:
        gate = await self._gate(request)
        if gate is not None:
            return gate
        hook_id = request.path_params["hook_id"]
        hook = self.hooks.get(hook_id)
        owner, repo = request.path_params["owner"], request.path_params["repo"]
        if hook is None or (hook.owner, hook.repo) != (owner, repo):
            return JSONResponse({"message": "Not Found"}, 404)
        if request.method == "GET":
            return JSONResponse(self._render(hook))
        if request.method == "PATCH":  # GitHub's "Update a repository webhook"
            data = await request.json()
            with self._lock:
                hook.events = list(data.get("events", hook.events))
                hook.active = bool(data.get("active", hook.active))
                hook.config.update(data.get("config") or {})
            return JSONResponse(self._render(hook))
        fault = self._after_write_fault()
        with self._lock:
            self.hooks.pop(hook_id, None)
        return await self._finish(fault, Response(status_code=204))

    def _render(self, hook: Hook) -> dict[str, Any]:
        config = dict(hook.config)
        if "secret" in config:
            config["secret"] = "********"  # GitHub never returns the secret
        url = f"{self.base_url}/repos/{hook.owner}/{hook.repo}/hooks/{hook.id}"
        return {"type": "Repository", "id": hook.id, "name": hook.name, "active": hook.active,
                "events": hook.events, "config": config, "url": url,
                "ping_url": url + "/pings", "test_url": url + "/test"}


class _Drop(Exception):
    """Raised inside a handler to make the server close the connection unanswered."""


def _send_delivery(hook: Hook, event: str, payload: Any) -> httpx.Response:
    raw = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
               "X-GitHub-Delivery": f"{random.getrandbits(64):016x}",
               "X-GitHub-Hook-ID": str(hook.id), "User-Agent": "GitHub-Hookshot/fake"}
    secret = hook.config.get("secret")
    if secret:
        digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        headers["X-Hub-Signature-256"] = f"sha256={digest}"
    return httpx.post(hook.config["url"], content=raw, headers=headers, timeout=10)


# ------------------------------------------------------------------ serving


class _DroppingApp:
    """ASGI wrapper: a `_Drop` from the app becomes a connection closed without response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except _Drop:
            # Promise a body, send none, and fail: uvicorn closes the connection mid-response,
            # which the client sees as a dropped connection (not as an HTTP error status).
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"1000")]})
            raise RuntimeError("fake: dropped connection") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_app(app: Any, port: int | None = None, **options: Any) -> Iterator[str]:
    """Run an ASGI app under uvicorn in a thread on 127.0.0.1; yields its base URL.
    `options` go to ``uvicorn.Config`` (``ssl_certfile``/``ssl_keyfile``: TLS)."""
    port = port or free_port()
    options = {"lifespan": "off", **options}  # ``lifespan="on"``: the app starts a store
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical",
                            access_log=False, timeout_keep_alive=30, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("fake server did not start")
        time.sleep(0.005)
    try:
        yield f"{'https' if options.get('ssl_certfile') else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def serve(fake: FakeGitHub) -> Iterator[FakeGitHub]:
    """Serve `fake` on 127.0.0.1; sets `fake.base_url`."""
    port = free_port()
    fake.base_url = f"http://127.0.0.1:{port}"
    with serve_app(_DroppingApp(fake.app()), port):
        yield fake

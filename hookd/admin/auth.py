"""Who may use the admin listener: a bearer token, a Host check, same-origin JSON mutations.

The admin API shows payloads (``GET /api/runs/{id}``) and re-runs flows (``POST
…/replay``). Binding it to localhost is not enough on its own: any process on the machine
could call it, a web page open in the operator's browser could POST to it (a "simple"
cross-site request with ``Content-Type: text/plain`` needs no preflight), and a page on
an attacker's domain that resolves to 127.0.0.1 (DNS rebinding) could even read its
answers. So, in this order:

1. ``Host`` must name this listener (`host_allowed`): an IP literal (a rebinding page
   always sends its own *name*), ``localhost``, the bind address, or one of
   ``admin.hosts`` → else ``421``;
2. a mutation (any method but GET/HEAD/OPTIONS) must not come from another origin
   (``Origin`` other than the ``Host``, or ``Sec-Fetch-Site: cross-site``) → else ``403``;
3. ``/api/…`` (and ``/metrics`` with ``admin.open_metrics: false``) requires
   ``Authorization: Bearer <token>`` (`token_matches`, constant time) → else ``401``;
4. a mutation of the API must say ``Content-Type: application/json`` (what no HTML form
   or simple cross-site request can send) → else ``415``. The status page's forms
   (`hookd.admin.pages`, urlencoded, signed in with a session cookie) carry a CSRF token
   bound to the session instead, which the page checks.

``/healthz`` and ``/readyz`` stay open (load balancers probe them without credentials).

The token is ``admin.token`` from hookd.yaml (a secret reference) or, by default, the
contents of ``<state_dir>/admin.token``, created (mode 0600) at the first start; the CLI
reads the same (`client_token`). `token_matches` is the one check, for the API and for
anything that signs in with the token later (a status page's session: `same_token`).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from hookd.config.model import Settings

TOKEN_FILE = "admin.token"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --------------------------------------------------------------------------- the token


def load_or_create_token(state_dir: Path) -> str:
    """The token in ``state_dir/admin.token``, created once (``O_EXCL``, mode 0600)."""
    path = Path(state_dir) / TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(path)
    token = "hookd_" + secrets.token_urlsafe(32)
    try:
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return token


def read_token(path: Path) -> str:
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{path} is empty; remove it and restart hookd to make a new token")
    return token


def server_token(settings: Settings, resolve: Callable[[Any], str]) -> str:
    """The token the daemon requires: ``admin.token`` resolved, else the state dir's file."""
    if settings.admin_auth.token is not None:
        return resolve(settings.admin_auth.token)
    return load_or_create_token(settings.state_dir)


def client_token(reference: object, state_dir: Path | None,
                 resolve: Callable[[str], str]) -> str | None:
    """The token a CLI command sends: hookd.yaml's ``admin.token`` (`reference`, as
    written) resolved, else ``state_dir/admin.token``; None when neither can be read (the
    daemon then answers 401, which the command reports)."""
    if isinstance(reference, str):
        try:
            return resolve(reference)
        except Exception:
            return None
    if state_dir is not None:
        try:
            return read_token(Path(state_dir) / TOKEN_FILE)
        except (OSError, ValueError):
            return None
    return None


def token_matches(expected: str, authorization: str | None) -> bool:
    """Does an ``Authorization`` header carry `expected` as a bearer token? Constant time.

    >>> token_matches("abc", "Bearer abc"), token_matches("abc", "bearer abc")
    (True, True)
    >>> token_matches("abc", "Bearer abd"), token_matches("abc", None), token_matches("", "Bearer ")
    (False, False, False)
    """
    if not authorization:
        return False
    scheme, _, given = authorization.strip().partition(" ")
    return scheme.lower() == "bearer" and same_token(expected, given.strip())


def same_token(expected: str, given: str) -> bool:
    """Is `given` the admin token? Constant time; an empty token never matches. The one
    comparison: the API's bearer header here, a sign-in form or session later."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


# --------------------------------------------------------------------------- Host, Origin


def _hostname(host: str) -> str:
    """``Host`` without its port, lower-case (``[::1]:8081`` → ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(host: str | None, names: Iterable[str]) -> bool:
    """Is `host` (a ``Host`` header) one of `names`, ``localhost`` or an IP literal?

    >>> host_allowed("127.0.0.1:8081", []), host_allowed("[::1]:8081", [])
    (True, True)
    >>> host_allowed("localhost:8081", []), host_allowed("evil.example", [])
    (True, False)
    >>> host_allowed("Admin.Internal:8081", ["admin.internal"]), host_allowed(None, [])
    (True, False)
    """
    if not host:
        return False
    name = _hostname(host)
    return name == "localhost" or _is_ip(name) or name in {n.lower() for n in names}


def cross_site(headers: dict[str, str]) -> bool:
    """Does a request come from a page of another origin than the ``Host`` it was sent to?

    >>> cross_site({"host": "127.0.0.1:8081", "origin": "http://127.0.0.1:8081"})
    False
    >>> cross_site({"host": "127.0.0.1:8081", "origin": "https://evil.example"})
    True
    >>> cross_site({"host": "h", "sec-fetch-site": "cross-site"}), cross_site({"host": "h"})
    (True, False)
    """
    if headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False  # not a browser's cross-origin request (curl, the CLI)
    scheme, _, rest = origin.partition("://")
    return not rest or rest.lower() != headers.get("host", "").lower()


# --------------------------------------------------------------------------- the guard


@dataclass(frozen=True)
class AdminAuth:
    """What `AdminGuard` enforces: the token and the Host names (from `Settings`)."""

    token: str
    hosts: frozenset[str]
    open_metrics: bool = True

    @classmethod
    def for_settings(cls, settings: Settings, token: str) -> AdminAuth:
        bound = settings.admin.host.lower()
        names = set(settings.admin_auth.hosts)
        if bound and not _is_ip(bound):
            names.add(bound)
        return cls(token, frozenset(names), settings.admin_auth.open_metrics)

    def refusal(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
        """``(status, reason)`` when the request is refused, else None (module docstring)."""
        if path in OPEN_PATHS:
            return None
        if not host_allowed(headers.get("host"), self.hosts):
            return 421, "unknown Host; add it to admin.hosts in hookd.yaml"
        mutation = method not in SAFE_METHODS
        if mutation and cross_site(headers):
            return 403, "cross-site request refused"
        api = path.startswith("/api/") or path == "/api"
        protected = api or (path == "/metrics" and not self.open_metrics)
        if protected and not token_matches(self.token, headers.get("authorization")):
            return 401, "admin token required (Authorization: Bearer …; see docs/daemon.md)"
        if mutation and api:
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                return 415, "content type must be application/json"
        return None


class AdminGuard:
    """ASGI middleware in front of the admin app: `AdminAuth.refusal` for every request.
    `auth` gives the current `AdminAuth` (a reload may change the token or the names)."""

    def __init__(self, app: ASGIApp, auth: Callable[[], AdminAuth]) -> None:
        self.app, self.auth = app, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope["headers"]}
            refused = self.auth().refusal(scope["method"], scope["path"], headers)
            if refused is not None:
                await _answer(send, *refused)
                return
        await self.app(scope, receive, send)


async def _answer(send: Send, status: int, reason: str) -> None:
    body = orjson.dumps({"error": reason})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="hookd admin"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

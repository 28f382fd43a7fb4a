"""A fake OAuth 2.0 authorization server with one protected API, a real HTTP server on 127.0.0.1.

It behaves as RFC 6749, RFC 7636 (PKCE), RFC 7009 (revocation) and RFC 8252 (loopback
redirects) say, so ``hookd connect`` and the token refresh are tested against the rules a
real provider enforces:

- ``GET /authorize`` plays the user who consents: a 302 to the redirect URI with
  ``code`` and the caller's ``state``. An unknown client or an unregistered redirect URI
  gets a 400 page and *no* redirect (§4.1.2.1); a missing S256 ``code_challenge``
  redirects with ``error=invalid_request`` (this server requires PKCE). A registered
  loopback redirect matches any port (RFC 8252 §7.3).
- ``POST /token``: client authentication by ``client_secret_post`` or Basic (401
  ``invalid_client``); ``authorization_code`` once per code, same redirect URI, the
  verifier must hash to the challenge; ``refresh_token`` rotates (the old refresh token
  is dead afterwards); errors are JSON ``{"error": …}`` with 400 (§5.2). Like GitHub, a
  request without a User-Agent is refused (403).
- ``POST /revoke``: forgets a refresh or access token (200 also for unknown tokens).
- ``GET /api/items``: the protected resource; 401 with ``WWW-Authenticate`` unless the
  bearer token is a live access token.

Token lifetimes are what the server announces (``expires_in``); it does not expire
tokens by its own clock — the client's injected clock decides when to refresh, and
`revoke_access` makes a token die early (the 401 case).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.fakes.github import serve_app

LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str


@dataclass
class FakeAuthServer:
    client_id: str = "hookd-test-client"
    client_secret: str = "client-secret-value-1234"
    redirect_uris: tuple[str, ...] = ("http://127.0.0.1/callback",)
    expires_in: int = 3600
    base_url: str = ""
    codes: dict[str, Grant] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token → scope
    access_tokens: set[str] = field(default_factory=set)
    token_requests: list[dict[str, str]] = field(default_factory=list)  # forms received
    api_requests: list[str] = field(default_factory=list)  # bearer tokens presented
    refuse_api: bool = False  # the API refuses every token (a 401 a refresh cannot fix)

    # ------------------------------------------------------------ test controls

    def issue(self, scope: str = "items.read") -> tuple[str, str]:
        """An (access, refresh) pair as if a user had connected earlier."""
        access, refresh = f"at-{secrets.token_urlsafe(16)}", f"rt-{secrets.token_urlsafe(16)}"
        self.access_tokens.add(access)
        self.refresh_tokens[refresh] = scope
        return access, refresh

    def revoke_access(self, token: str) -> None:
        self.access_tokens.discard(token)

    def grants(self, kind: str) -> list[dict[str, str]]:
        return [f for f in self.token_requests if f.get("grant_type") == kind]

    # ------------------------------------------------------------ server

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/authorize", self._authorize, methods=["GET"]),
            Route("/token", self._token, methods=["POST"]),
            Route("/revoke", self._revoke, methods=["POST"]),
            Route("/api/items", self._items, methods=["GET"]),
        ])

    def _redirect_ok(self, uri: str) -> bool:
        got = urlsplit(uri)
        for registered in self.redirect_uris:
            want = urlsplit(registered)
            if uri == registered:
                return True
            if (want.hostname in LOOPBACK and got.hostname == want.hostname
                    and got.scheme == want.scheme and got.path == want.path):
                return True  # RFC 8252 §7.3: any port on loopback
        return False

    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        redirect = q.get("redirect_uri", "")
        if q.get("client_id") != self.client_id or not self._redirect_ok(redirect):
            return PlainTextResponse("unknown client or redirect_uri", status_code=400)
        state = q.get("state", "")

        def back(**params: str) -> Response:
            sep = "&" if "?" in redirect else "?"
            return RedirectResponse(f"{redirect}{sep}{urlencode({**params, 'state': state})}",
                                    status_code=302)

        if q.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return back(error="invalid_request", error_description="PKCE S256 is required")
        code = secrets.token_urlsafe(24)
        self.codes[code] = Grant(self.client_id, redirect, q["code_challenge"], q.get("scope", ""))
        return back(code=code)

    def _client(self, request: Request, form: dict[str, str]) -> str | None:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            client, secret = unquote(user), unquote(password)
        else:
            client, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client if (client, secret) == (self.client_id, self.client_secret) else None

    async def _token(self, request: Request) -> Response:
        if not request.headers.get("user-agent"):
            return JSONResponse({"message": "Request forbidden: a User-Agent is required"}, 403)
        form = await _form(request)
        self.token_requests.append(form)
        if self._client(request, form) is None:
            return _error("invalid_client", 401)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            found = self.codes.pop(form.get("code", ""), None)  # one use only
            if found is None or found.redirect_uri != form.get("redirect_uri"):
                return _error("invalid_grant")
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if digest.rstrip(b"=").decode() != found.challenge:
                return _error("invalid_grant", description="PKCE verification failed")
            return self._tokens(found.scope)
        if grant == "refresh_token":
            scope = self.refresh_tokens.pop(form.get("refresh_token", ""), None)  # rotation
            if scope is None:
                return _error("invalid_grant", description="refresh token revoked or unknown")
            return self._tokens(scope)
        return _error("unsupported_grant_type")

    def _tokens(self, scope: str) -> Response:
        access, refresh = self.issue(scope)
        return JSONResponse({"access_token": access, "token_type": "Bearer",
                             "expires_in": self.expires_in, "refresh_token": refresh,
                             "scope": scope},
                            headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def _revoke(self, request: Request) -> Response:
        token = (await _form(request)).get("token", "")
        self.refresh_tokens.pop(token, None)
        self.access_tokens.discard(token)
        return Response(status_code=200)

    async def _items(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        self.api_requests.append(token)
        if token not in self.access_tokens or self.refuse_api:
            return JSONResponse({"message": "invalid token"}, 401,
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return JSONResponse([{"id": 1}])


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (RFC 6749 §4.1.3)."""
    if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
        return {}
    return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))


def _error(code: str, status: int = 400, description: str = "") -> Response:
    body: dict[str, Any] = {"error": code}
    if description:
        body["error_description"] = description
    return JSONResponse(body, status, headers={"Cache-Control": "no-store"})


@contextmanager
def serve(fake: FakeAuthServer) -> Iterator[FakeAuthServer]:
    """Serve `fake` on 127.0.0.1; sets `fake.base_url`."""
    with serve_app(fake.app()) as url:
        fake.base_url = url
        yield fake

"""OAuth 2.0 access tokens for upstream requests: the `TokenSource` behind ``oauth:`` connections.

`OAuthTokens` answers `access_token(connection)` from the `TokenStore`, refreshing
ahead of expiry (`hookd.oauth.tokens.needs_refresh`) and again after a 401
(`invalidate`). Its token requests go through the same `Upstream` as every other request
(`Upstream.post_form`: the same client, so the same proxy, CA bundle and User-Agent).

Rotation without locks across processes: the daemon and its worker process may both
refresh. Before refreshing, and again when the provider refuses a refresh token, the
store is read once more: if another process has already stored newer tokens, those are
used (a refresh token refused because someone else rotated it is not "revoked"). Only
a refusal of the refresh token that is still the stored one marks the connection as
needing ``hookd connect`` (kept in the store, so ``hookd status`` and ``hookd check``
report it without asking the provider again).

Every token is registered with `hookd.telemetry.logs.register_secret` the moment it is
known; errors quote the provider's ``error`` code and description, never a token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from hookd.config import secrets
from hookd.config.model import Connection, MaybeSecret
from hookd.connectors.model import Connector
from hookd.connectors.oauth import OAuthSettings, for_parameter_set
from hookd.oauth import authorization as authz
from hookd.oauth import providers
from hookd.oauth import tokens as tok
from hookd.oauth.tokens import TokenSet
from hookd.telemetry.logs import register_secret
from hookd.upstream import errors
from hookd.upstream.client import Upstream
from hookd.upstream.errors import PermanentError, RetryableError

if TYPE_CHECKING:
    import httpx

    from hookd.store.tokens import TokenStore

DEFAULT_REDIRECT = "http://127.0.0.1:{port}/callback"


def fix_hint(name: str) -> str:
    return f"run `hookd connect {name}`"


def resolve(value: MaybeSecret, env: Mapping[str, str] | None = None) -> str:
    """A literal or a secret reference, resolved and registered for log masking."""
    try:
        text = secrets.resolve_value(value, env=env)
    except secrets.SecretError as exc:
        raise PermanentError(str(exc)) from None
    register_secret(text)
    return text


def endpoints(connection: Connection, connector: Connector,
              env: Mapping[str, str] | None = None) -> providers.Endpoints:
    """The provider endpoints of an ``oauth:`` connection (raises `PermanentError`)."""
    conf = connection.oauth
    if conf is None:
        raise PermanentError(f"connection '{connection.name}' has no oauth: block")
    settings = for_parameter_set(connector.oauth, connection.parameter_set)
    if settings is None:
        if not (conf.authorization_url and conf.token_url):
            raise PermanentError(
                f"connection '{connection.name}': connector '{connector.name}' declares no "
                "OAuth settings; set oauth.authorization_url and oauth.token_url")
        settings = OAuthSettings("oauth2")
    try:
        return providers.endpoints(settings, conf, parameters(connection, env))
    except providers.OAuthError as exc:
        raise PermanentError(f"connection '{connection.name}': {exc}") from None


def parameters(connection: Connection, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The connection's parameters as text (for the templates of ``oauth2generic``)."""
    return {k: resolve(v, env) for k, v in connection.parameters.items()}


def client(connection: Connection, redirect_uri: str | None = None,
           env: Mapping[str, str] | None = None) -> authz.Client:
    conf = connection.oauth
    assert conf is not None
    return authz.Client(
        client_id=resolve(conf.client_id, env),
        client_secret=resolve(conf.client_secret, env) if conf.client_secret is not None else None,
        redirect_uri=redirect_uri or conf.redirect_uri or DEFAULT_REDIRECT.format(port=0),
    )


class OAuthTokens:
    """The `TokenSource` of an `Upstream` (see module docstring)."""

    def __init__(self, store: TokenStore, upstream: Upstream, *,
                 clock: Callable[[], float] = time.time,
                 env: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.upstream = upstream
        self.clock = clock
        self.env = env
        self._locks: dict[str, asyncio.Lock] = {}
        self._cache: dict[str, TokenSet] = {}

    # ------------------------------------------------------------ TokenSource

    async def access_token(self, connection: str) -> str | None:
        found = self.upstream.oauth_connection(connection)
        if found is None:
            return None
        conn, connector = found
        async with self._locks.setdefault(connection, asyncio.Lock()):
            tokens = self._cache.get(connection)
            if tokens is None or tokens.error:  # `hookd connect` may have fixed it since
                tokens = self._load(connection)
            if tokens is None:
                seed = conn.oauth.refresh_token if conn.oauth else None
                if seed is None:
                    raise PermanentError(f"connection '{connection}': no OAuth token; "
                                         f"{fix_hint(connection)}")
                tokens = TokenSet("", resolve(seed, self.env), expires_at=0.0)
            if tokens.error:
                raise PermanentError(f"connection '{connection}': the refresh token no longer "
                                     f"works ({tokens.error}); {fix_hint(connection)}")
            if tokens.access_token == "" or tok.needs_refresh(tokens, self.clock()):
                tokens = await self._refresh(conn, connector, tokens)
            self._cache[connection] = tokens
            register_secret(tokens.access_token)
            return tokens.access_token

    async def invalidate(self, connection: str) -> None:
        tokens = self._cache.get(connection) or self._load(connection)
        if tokens is not None and not tokens.error:
            self._cache[connection] = tok.expired(tokens)

    # ------------------------------------------------------------ grants

    async def exchange(self, connection: Connection, connector: Connector, client: authz.Client,
                       code: str, verifier: str) -> TokenSet:
        """Trade an authorization code for tokens and store them (``hookd connect``)."""
        register_secret(code)
        ep = endpoints(connection, connector, self.env)
        request = authz.code_request(ep, client, code, verifier, parameters(connection, self.env))
        tokens = await self._token_call(request, None)
        self._save(connection.name, tokens)
        return tokens

    async def _refresh(self, conn: Connection, connector: Connector, tokens: TokenSet) -> TokenSet:
        name = conn.name
        stored = self._load(name)
        if stored is not None and stored.access_token != tokens.access_token \
                and not stored.error and not tok.needs_refresh(stored, self.clock()):
            return stored  # another process refreshed meanwhile
        if not tokens.refresh_token:
            raise PermanentError(f"connection '{name}': the OAuth token expired and the "
                                 f"provider gave no refresh token; {fix_hint(name)}")
        ep = endpoints(conn, connector, self.env)
        request = authz.refresh_request(ep, client(conn, env=self.env), tokens.refresh_token,
                                        parameters(conn, self.env))
        try:
            fresh = await self._token_call(request, tokens)
        except tok.TokenError as exc:
            stored = self._load(name)
            if stored is not None and stored.refresh_token != tokens.refresh_token \
                    and not stored.error:
                return stored  # rotated by another process: not revoked
            if exc.reauthorize:
                self._save(name, replace(tokens, error=exc.code or "refused"))
                raise PermanentError(f"connection '{name}': {exc}; the refresh token no "
                                     f"longer works; {fix_hint(name)}") from None
            raise RetryableError(f"connection '{name}': {exc}") from None
        self._save(name, fresh)
        return fresh

    async def _token_call(self, request: authz.TokenRequest, previous: TokenSet | None) -> TokenSet:
        response = await self.upstream.post_form(request.url, request.body, request.headers)
        data = _json(response)
        verdict = errors.classify(response.status_code, response.headers, now=self.clock())
        if verdict.retryable:
            raise RetryableError(f"POST {_where(request.url)}: {response.status_code} from the "
                                 "token endpoint", status=response.status_code,
                                 retry_after=verdict.after)
        if verdict.kind != "ok":
            raise tok.error_of(response.status_code, data)
        fresh = tok.from_response(data, self.clock(), previous)
        register_secret(fresh.access_token)
        if fresh.refresh_token:
            register_secret(fresh.refresh_token)
        return fresh

    # ------------------------------------------------------------ store

    def _load(self, name: str) -> TokenSet | None:
        tokens = self.store.get(name)
        if tokens is not None:
            register_secret(tokens.access_token)
            if tokens.refresh_token:
                register_secret(tokens.refresh_token)
        return tokens

    def _save(self, name: str, tokens: TokenSet) -> None:
        self.store.put(name, tokens)
        self._cache[name] = tokens


def _json(response: httpx.Response) -> Any:
    """A token response: JSON (RFC 6749 §5.1), or form-encoded as some providers answer."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return dict(parse_qsl(response.text))


def _where(url: str) -> str:
    """The URL without its query (where a token endpoint is, never what was sent)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def attach(upstream: Upstream, store: TokenStore, *, clock: Callable[[], float] = time.time,
           env: Mapping[str, str] | None = None) -> Upstream:
    """`upstream`, asking an `OAuthTokens` over `store` for its ``oauth:`` connections
    (callers pass `hookd.store.tokens.FileTokenStore`: store and upstream are siblings)."""
    upstream.tokens = OAuthTokens(store, upstream, clock=clock, env=env)
    return upstream

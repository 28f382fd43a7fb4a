"""The only code that sends HTTP to upstream services, and the one place their failures are mapped.

Everything hookd asks of an upstream — subscribe, list hooks, delete a hook, a pipeline's
``call`` step — goes through `Upstream`:

- `build_request` renders a connector operation into an ``httpx.Request`` through
  `hookd.connectors.requests.compose` — the one place requests are made: parameters, a
  JSON (or form) body, the credentials of the connection's parameter set (basic, every
  API key in its header or query, an OAuth2 bearer token from the `TokenSource`, else
  the static ``token``), ``Accept`` and ``User-Agent: hookd/<version>``, and the
  connector's policy templates (host, headers, query, path, body). `preview` is the same
  request for `hookd plan`, secrets masked. The connection's ``base_url`` overrides the
  spec's host (GitHub Enterprise, a self-hosted GitLab, tests).
- `send` maps every failure exactly once, by `hookd.upstream.errors.classify` (the one
  decision every HTTP sender shares): `PermanentError` for what needs a config or
  credentials change (most 4xx, explained; 3xx, since redirects are not followed),
  `RetryableError` for the rest (most 5xx, 408, 425, timeouts, connection errors, 429,
  403 with GitHub's rate-limit signs). Retryable failures
  are retried with exponential backoff and jitter, waiting for ``Retry-After`` /
  ``x-ratelimit-reset`` when given, a bounded number of times; waits longer than
  `max_wait` give up for this pass instead of stalling it.

Credentials are only attached to URLs on the connector's own origin: a ``Location`` or a
``Link: rel="next"`` pointing elsewhere gets no token. Error messages carry method, path
and status, never query strings (API keys travel there) or bodies we sent.

Proxies and CAs come from the standard environment (``HTTPS_PROXY``, ``NO_PROXY``,
``SSL_CERT_FILE``) when no transport is given. The transport, clock, sleep, random source
and token source are injectable so tests need no network
(`httpx.MockTransport`) and no real waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin

import httpx

from hookd import __version__
from hookd.config import secrets
from hookd.config.model import Connection, SecretRef, Value
from hookd.connectors import requests
from hookd.connectors.model import Connector, Operation, ParameterSet
from hookd.telemetry.logs import register_secret
from hookd.upstream import errors
from hookd.upstream.errors import PermanentError, RetryableError, UpstreamError
from hookd.upstream.token_source import StaticTokens, TokenSource

log = logging.getLogger("hookd.upstream.client")

# (operation id, parameters) of the request whose answer gave a URL (a Location).
Origin = tuple[str, Mapping[str, Value]]

# Every request says who sends it: GitHub refuses requests without a User-Agent (403).
USER_AGENT = f"hookd/{__version__}"

_EXPLAIN = {
    400: "the upstream rejected the request as malformed",
    401: "bad credentials: check the connection's token, key or password",
    403: "the token lacks permission for this repository or admin:repo_hook scope",
    404: "not found: the token lacks permission for this repository or admin:repo_hook "
         "scope, or the repository/resource does not exist",
    405: "the upstream does not allow this method on this path",
    409: "conflict with the upstream's current state",
    410: "gone",
    413: "the request is too large for the upstream",
    415: "the upstream does not accept this content type",
    422: "a hook with this URL and events already exists, or the body is invalid",
}


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4  # retries after the first attempt
    base_delay: float = 0.5  # first backoff, seconds; doubles each retry
    max_delay: float = 30.0  # cap of one backoff
    max_wait: float = 120.0  # a Retry-After longer than this gives up for this pass


def where(request: httpx.Request) -> str:
    """``POST https://api.github.com/repos/o/r/hooks`` — no query string (keys travel there)."""
    url = request.url
    return f"{request.method} {url.scheme}://{url.netloc.decode()}{url.path}"


def classify(response: httpx.Response, *, now: float) -> UpstreamError | None:
    """The error a response means, or None for success (2xx). Pure; table-tested.

    The decision is `hookd.upstream.errors.classify`'s; this adds the message (method,
    path, status, the upstream's own words, an explanation for the common 4xx).
    """
    status = response.status_code
    if 200 <= status < 300:
        return None
    text = _upstream_message(response)
    verdict = errors.classify(status, response.headers, now=now, message=text)
    what = f"{where(response.request)}: {status} {response.reason_phrase}"
    if verdict.kind == "rate_limited":
        return RetryableError(f"{what}: rate limited by the upstream", status=status,
                              body=text, retry_after=verdict.after)
    if verdict.kind == "retryable":
        return RetryableError(f"{what}{': ' + text if text else ''}", status=status, body=text,
                              retry_after=verdict.after)
    if status == 403 and text and text.lower() != response.reason_phrase.lower():
        # The upstream's own reason first (a missing User-Agent, an IP allow-list, an
        # SSO requirement): guessing at scopes would send the operator the wrong way.
        return PermanentError(f"{what}: the upstream refused the request: {text}",
                              status=status, body=text)
    if 300 <= status < 400:
        target = response.headers.get("location", "")
        explain = ("redirects are not followed (credentials would go along): point the "
                   "connection's base_url at the final address"
                   + (f" ({target.split('?', 1)[0]})" if target else ""))
    else:
        explain = _EXPLAIN.get(status, "the upstream refused the request")
    if status == 422 and text and "exist" in text.lower():
        explain = "a hook with this URL and events already exists"
    detail = f" (upstream says: {text})" if text else ""
    return PermanentError(f"{what}: {explain}{detail}", status=status, body=text)


def _upstream_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text[:200].strip()
    if isinstance(data, dict):
        parts = [str(data.get("message") or data.get("error") or "")]
        for err in data.get("errors") or []:
            if isinstance(err, dict) and err.get("message"):
                parts.append(str(err["message"]))
        return "; ".join(p for p in parts if p)[:300]
    return ""


def backoff(attempt: int, policy: RetryPolicy, rnd: float) -> float:
    """Delay before retry `attempt` (0-based): exponential, capped, jittered 50–150%.

    >>> backoff(0, RetryPolicy(base_delay=1.0), 0.5), backoff(3, RetryPolicy(base_delay=1.0), 0.5)
    (1.0, 8.0)
    """
    return min(policy.max_delay, policy.base_delay * 2**attempt) * (0.5 + rnd)


class Upstream:
    """An async HTTP client for connector operations (see module docstring)."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        env: Mapping[str, str] | None = None,
        max_connections: int = 100,
        tokens: TokenSource | None = None,
    ) -> None:
        self.retry = retry
        self.tokens: TokenSource = tokens or StaticTokens()
        # The ``oauth:`` connections asked for, by name, for a token source that needs
        # their settings (`hookd.upstream.oauth.OAuthTokens`).
        self._oauth: dict[str, tuple[Connection, Connector]] = {}
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._env = env
        self.client = httpx.AsyncClient(
            transport=transport,
            verify=_ssl_context(),
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
        )
        self.requests_sent = 0  # every attempt, for reports and benchmarks

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------ requests

    def base_url(self, connector: Connector, connection: Connection | None,
                 operation_id: str | None = None) -> str:
        """The backend URL of `operation_id`'s requests (any operation's when None),
        after the connection's ``base_url`` or a ``dynamichosturl`` policy."""
        inputs, _ = self._inputs(connector, connection, None, [])
        base = requests.backend_url(connector, inputs, operation_id)
        if not base:
            raise PermanentError(
                f"connector '{connector.name}' has no host; set base_url on the connection")
        return base

    def draft(
        self,
        connector: Connector,
        operation: str | Operation,
        connection: Connection | None,
        parameters: Mapping[str, Value],
        body: Value = None,
        *,
        token: str | None = None,
    ) -> tuple[requests.Draft, list[str]]:
        """The request for `operation` before it is sent (`hookd.connectors.requests`),
        and the secret values it carries (what a display must mask)."""
        op = connector.operations[operation] if isinstance(operation, str) else operation
        hidden: list[str] = []
        inputs, hidden = self._inputs(connector, connection, token, hidden)
        for p in op.parameters:
            if p.required and p.location == "path" and p.name not in parameters:
                raise PermanentError(
                    f"{connector.name}.{op.operation_id}: missing path parameter '{p.name}'")
        texts = {name: self._text(value, hidden) for name, value in parameters.items()}
        resolved = self._resolve(body, hidden) if body is not None else None
        try:
            return requests.compose(connector, op, inputs, texts, resolved), hidden
        except requests.PolicyError as exc:
            raise PermanentError(f"{connector.name}.{op.operation_id}: {exc}") from None

    async def build_request(
        self,
        connector: Connector,
        operation: str | Operation,
        connection: Connection | None,
        parameters: Mapping[str, Value],
        body: Value = None,
    ) -> httpx.Request:
        """The request for `operation` with `parameters` by name and `body` (JSON):
        credentials, ``Accept``, ``User-Agent`` and the connector's policies applied."""
        token = await self._token(connector, connection)
        draft, _ = self.draft(connector, operation, connection, parameters, body, token=token)
        return _with_token_source(_to_httpx(draft), connection, token)

    def preview(
        self,
        connector: Connector,
        operation: str | Operation,
        connection: Connection | None,
        parameters: Mapping[str, Value],
        body: Value = None,
        *,
        hide: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """What `hookd plan` shows of the request: method, full URL, headers, JSON body
        and the policies applied, secret values (and `hide`) as ``***``. Sends nothing
        and asks no token source (an OAuth2 token shows as ``Bearer ***``)."""
        draft, hidden = self.draft(connector, operation, connection, parameters, body,
                                   token=requests.MASK)
        return requests.masked(draft, [*hidden, *hide])

    def preview_url(self, method: str, url: str, connector: Connector,
                    connection: Connection | None, *, hide: tuple[str, ...] = ()) -> dict[str, Any]:
        """`preview` of a request to a URL the upstream gave (a Location)."""
        draft, hidden = self._url_draft(method, url, connector, connection, requests.MASK)
        return requests.masked(draft, [*hidden, *hide])

    async def request_for_url(
        self, method: str, url: str, connector: Connector, connection: Connection | None,
        *, origin: Origin | None = None,
    ) -> httpx.Request:
        """A request to an absolute URL the upstream gave us (Location, Link next).

        Credentials (and the connector's every-operation header and query policies) are
        attached only when the URL is on the connector's own origin: its backend URL, one a
        dynamichosturl policy gives an operation, or `origin` — the operation and
        parameters of the request that answered with this URL (a host built from
        ``@queryParameters``/``@headers``).
        """
        token = await self._token(connector, connection)
        draft, _ = self._url_draft(method, url, connector, connection, token, origin)
        return _with_token_source(_to_httpx(draft), connection, token)

    def _url_draft(self, method: str, url: str, connector: Connector,
                   connection: Connection | None, token: str | None,
                   origin: Origin | None = None) -> tuple[requests.Draft, list[str]]:
        hidden: list[str] = []
        inputs, hidden = self._inputs(connector, connection, token, hidden)
        own = connection is not None and _origin(httpx.URL(url)) in self._origins(
            connector, connection, origin)
        return requests.compose_url(connector, method, url, inputs, credentials=own), hidden

    def _origins(self, connector: Connector, connection: Connection,
                 origin: Origin | None) -> set[tuple[str, str, int | None]]:
        named = {o for p in connector.policies if p.template == "dynamichosturl"
                 for o in p.operations}
        bases = {self.base_url(connector, connection, o) for o in (None, *sorted(named))}
        if origin is not None and origin[0] in connector.operations:
            with contextlib.suppress(PermanentError):
                bases.add(self.draft(connector, origin[0], connection, origin[1])[0].url())
        return {_origin(httpx.URL(b)) for b in bases}

    async def _token(self, connector: Connector, connection: Connection | None) -> str | None:
        """The token source's access token when the connection's credential is oauth2."""
        if connection is None:
            return None
        pset = self._parameter_set(connector, connection)
        if not any(c.kind == "oauth2" for c in pset.credentials):
            return None
        if connection.oauth is not None:
            self._oauth[connection.name] = (connection, connector)
        return await self.tokens.access_token(connection.name)

    def oauth_connection(self, name: str) -> tuple[Connection, Connector] | None:
        """The ``oauth:`` connection `name` (and its connector) a request was built for."""
        return self._oauth.get(name)

    def _parameter_set(self, connector: Connector, connection: Connection) -> ParameterSet:
        try:
            return requests.parameter_set(connector, connection.parameter_set)
        except KeyError:
            names = ", ".join(s.name for s in connector.parameter_sets)
            raise PermanentError(
                f"connection '{connection.name}': connector '{connector.name}' has no "
                f"parameter set '{connection.parameter_set}' (it has: {names})") from None

    def _inputs(self, connector: Connector, connection: Connection | None, token: str | None,
                hidden: list[str]) -> tuple[requests.Inputs, list[str]]:
        """The connection's parameters resolved to text; secret ones go to `hidden`."""
        if connection is None:
            return requests.Inputs(user_agent=USER_AGENT), hidden
        pset = self._parameter_set(connector, connection)
        credential_params = {c.parameter for c in pset.credentials} | {"password", "token"}
        values: dict[str, str] = {}
        for name, value in connection.parameters.items():
            text = self._text(value, hidden)
            values[name] = text
            declared = pset.parameters.get(name) or connector.connection_parameters.get(name)
            if name in credential_params or (declared is not None and declared.secret):
                hidden.append(text)
                register_secret(text)
        if token:
            hidden.append(token)
        return requests.Inputs(values, connection.parameter_set, connection.base_url, token,
                               USER_AGENT), hidden

    def _text(self, value: Value, hidden: list[str] | None = None) -> str:
        value = self._resolve(value, hidden)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list | tuple):
            return ",".join(self._text(v) for v in value)
        return "" if value is None else str(value)

    def _resolve(self, value: Value, hidden: list[str] | None = None) -> Value:
        """Secret references resolved (and registered for log masking, and added to
        `hidden`), recursively."""
        if isinstance(value, str):
            ref = secrets.parse_ref(value)
            value = ref if ref is not None else value
        if isinstance(value, SecretRef):
            try:
                text = secrets.resolve(value, env=self._env)
            except secrets.SecretError as exc:
                raise PermanentError(str(exc)) from None
            register_secret(text)
            if hidden is not None:
                hidden.append(text)
            return text
        if isinstance(value, Mapping):
            return {k: self._resolve(v, hidden) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._resolve(v, hidden) for v in value]
        return value

    # ------------------------------------------------------------ sending

    async def send(self, request: httpx.Request, *, retry: bool = True) -> httpx.Response:
        """Send with retries; a 2xx response, else `PermanentError`/`RetryableError`."""
        attempts = 1 + (self.retry.retries if retry else 0)
        last: RetryableError | None = None
        for attempt in range(attempts):
            try:
                try:
                    return await self._send_once(request)
                except PermanentError as exc:
                    if exc.status != 401 or not await self._fresh_token(request):
                        raise
                    return await self._send_once(request)  # once, with the new token
            except RetryableError as exc:
                last = exc
                if attempt + 1 >= attempts:
                    break
                if exc.retry_after is not None and exc.retry_after > self.retry.max_wait:
                    raise RetryableError(
                        f"{exc} (asked to wait {exc.retry_after:.0f}s; trying next pass)",
                        status=exc.status, body=exc.body, retry_after=exc.retry_after,
                    ) from None
                delay = (exc.retry_after if exc.retry_after is not None
                         else backoff(attempt, self.retry, self._rng()))
                log.info("upstream retry", extra={"request": where(request), "error": str(exc),
                                                  "attempt": attempt + 1, "delay": round(delay, 3)})
                await self._sleep(delay)
        assert last is not None
        raise last

    async def _fresh_token(self, request: httpx.Request) -> bool:
        """After a 401 on a token from the token source: tell it, and put a new token on
        `request`; False when there is none (or the same one)."""
        connection = request.extensions.get(_TOKEN_CONNECTION)
        if not connection:
            return False
        old = request.headers.get("authorization", "")
        await self.tokens.invalidate(connection)
        token = await self.tokens.access_token(connection)
        if not token or f"Bearer {token}" == old:
            return False
        register_secret(token)
        request.headers["Authorization"] = f"Bearer {token}"
        return True

    async def post_form(self, url: str, body: str, headers: Mapping[str, str]) -> httpx.Response:
        """POST a form (an OAuth token request) through this client — same proxy, CA and
        default headers as every request — and return the response whatever its status:
        the caller reads the token endpoint's own errors. Connection failures are
        `RetryableError`s as for any request."""
        return await self._transmit(self.client.build_request(
            "POST", url, content=body.encode(), headers=dict(headers)))

    async def _transmit(self, request: httpx.Request) -> httpx.Response:
        """One attempt; connection failures as `RetryableError`, any status returned."""
        self.requests_sent += 1
        try:
            response = await self.client.send(request)
            await response.aread()
        except httpx.TimeoutException:
            raise RetryableError(f"{where(request)}: timed out") from None
        except httpx.TransportError as exc:
            raise RetryableError(
                f"{where(request)}: connection failed ({type(exc).__name__})") from None
        return response

    async def _send_once(self, request: httpx.Request) -> httpx.Response:
        response = await self._transmit(request)
        error = classify(response, now=self._clock())
        if error is not None:
            raise error
        return response

    async def call(
        self,
        connector: Connector,
        operation: str | Operation,
        connection: Connection | None,
        parameters: Mapping[str, Value],
        body: Value = None,
        *,
        retry: bool = True,
    ) -> httpx.Response:
        """Build and send one operation (the pipeline's ``call`` step uses this)."""
        return await self.send(await self.build_request(connector, operation, connection, parameters,
                                                  body), retry=retry)

    async def list_all(
        self,
        connector: Connector,
        operation: str,
        connection: Connection | None,
        parameters: Mapping[str, Value],
        *,
        items_field: str = "",
        max_pages: int = 1000,
    ) -> list[Any]:
        """Every item of a paginated list, following ``Link: <…>; rel="next"``."""
        request = await self.build_request(connector, operation, connection, parameters)
        items: list[Any] = []
        for _ in range(max_pages):
            response = await self.send(request)
            data = response.json() if response.content else []
            page = dig(data, items_field) if items_field else data
            if not isinstance(page, list):
                raise PermanentError(
                    f"{where(request)}: expected a list"
                    f"{' at ' + items_field if items_field else ''}, got {type(page).__name__}")
            items.extend(page)
            next_url = response.links.get("next", {}).get("url")
            if not next_url:
                return items
            next_url = urljoin(str(response.request.url), next_url)
            request = await self.request_for_url("GET", next_url, connector, connection)
        raise PermanentError(f"{where(request)}: more than {max_pages} pages")


def dig(data: Any, dotted: str) -> Any:
    """``dig({"config": {"url": "x"}}, "config.url") == "x"``; None when absent."""
    for key in dotted.split(".") if dotted else ():
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One default (certifi/system) context per process: building one costs ~0.1 s."""
    return httpx.create_ssl_context()


# Request extension naming the connection whose token-source token the request carries.
_TOKEN_CONNECTION = "hookd.token_connection"


def _with_token_source(request: httpx.Request, connection: Connection | None,
                       token: str | None) -> httpx.Request:
    """Mark `request` as carrying `connection`'s token-source token (for the 401 retry)
    when its Authorization is that token (a policy may have replaced it)."""
    if token and connection is not None \
            and request.headers.get("authorization") == f"Bearer {token}":
        register_secret(token)
        request.extensions[_TOKEN_CONNECTION] = connection.name
    return request


def _to_httpx(draft: requests.Draft) -> httpx.Request:
    content: bytes | None = None
    if draft.body is not None:
        content = json.dumps(draft.body).encode()
    elif draft.form:
        content = urlencode(draft.form).encode()
    params: list[tuple[str, Any]] = list(draft.query)
    return httpx.Request(draft.method, draft.url(), params=params or None,
                         headers=draft.headers, content=content)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)

"""The only code that sends HTTP to upstream services, and the one place their failures are mapped.

Everything hookd asks of an upstream — subscribe, list hooks, delete a hook, a pipeline's
``call`` step — goes through `Upstream`:

- `build_request` renders a connector operation into an ``httpx.Request``: path, query and
  header parameters, a JSON (or form) body, authentication from the connection (basic,
  API key in a header or the query, bearer token for oauth2/static tokens), and the base
  URL from the spec or the connection's ``base_url`` override (GitHub Enterprise, a
  self-hosted GitLab, tests).
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

The transport, clock, sleep and random source are injectable so tests need no network
(`httpx.MockTransport`) and no real waiting.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urljoin

import httpx

from hookd.config import secrets
from hookd.config.model import Connection, SecretRef, Value
from hookd.connectors.model import Connector, Operation
from hookd.telemetry.logs import register_secret
from hookd.upstream import errors
from hookd.upstream.errors import PermanentError, RetryableError, UpstreamError

log = logging.getLogger("hookd.upstream.client")

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
    ) -> None:
        self.retry = retry
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
            headers={"User-Agent": "hookd", "Accept": "application/json"},
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

    def base_url(self, connector: Connector, connection: Connection | None) -> str:
        base = (connection.base_url if connection and connection.base_url else connector.base_url)
        if not base:
            raise PermanentError(
                f"connector '{connector.name}' has no host; set base_url on the connection")
        return base.rstrip("/")

    def build_request(
        self,
        connector: Connector,
        operation: str | Operation,
        connection: Connection | None,
        parameters: Mapping[str, Value],
        body: Value = None,
    ) -> httpx.Request:
        """The request for `operation` with `parameters` by name and `body` (JSON)."""
        op = connector.operations[operation] if isinstance(operation, str) else operation
        path = op.path
        query: dict[str, str] = {}
        headers: dict[str, str] = {}
        form: dict[str, str] = {}
        for p in op.parameters:
            if p.location == "body" or p.name not in parameters:
                if p.required and p.location == "path" and p.name not in parameters:
                    raise PermanentError(
                        f"{connector.name}.{op.operation_id}: missing path parameter '{p.name}'")
                continue
            value = self._text(parameters[p.name])
            if p.location == "path":
                path = path.replace("{" + p.name + "}", quote(value, safe=""))
            elif p.location == "query":
                query[p.name] = value
            elif p.location == "header":
                headers[p.name] = value
            elif p.location == "formData":
                form[p.name] = value
        url = self.base_url(connector, connection) + (path if path.startswith("/") else "/" + path)
        content: bytes | None = None
        if body is not None:
            content = json.dumps(self._resolve(body)).encode()
            headers["Content-Type"] = "application/json"
        elif form:
            content = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = httpx.Request(op.method, url, params=query or None, headers=headers,
                                content=content)
        self._authenticate(request, connector, connection)
        return request

    def request_for_url(
        self, method: str, url: str, connector: Connector, connection: Connection | None
    ) -> httpx.Request:
        """A request to an absolute URL the upstream gave us (Location, Link next).

        Credentials are attached only when the URL is on the connector's own origin.
        """
        request = httpx.Request(method, url)
        if _origin(request.url) == _origin(httpx.URL(self.base_url(connector, connection))):
            self._authenticate(request, connector, connection)
        return request

    def _authenticate(
        self, request: httpx.Request, connector: Connector, connection: Connection | None
    ) -> None:
        if connection is None:
            return
        params = connection.parameters
        auth = connector.auth
        if auth.kind == "basic":
            user = self._secret(params.get("username", ""))
            password = self._secret(params.get("password", ""))
            raw = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.headers["Authorization"] = f"Basic {raw}"
        elif auth.kind == "apikey":
            key = _first(params, (auth.parameter, "api_key", "apiKey", "key", auth.name, "token"))
            if key is None:
                return
            value = self._secret(key)
            if auth.location == "query":
                request.url = request.url.copy_merge_params({auth.name: value})
            else:
                request.headers[auth.name or "X-API-Key"] = value
        else:  # oauth2 (static token for now) or no declared scheme but a token given
            token = _first(params, (auth.parameter, "token", "access_token", "bearer_token"))
            if token is not None:
                request.headers["Authorization"] = f"Bearer {self._secret(token)}"

    def _secret(self, value: Value) -> str:
        text = self._text(value)
        register_secret(text)
        return text

    def _text(self, value: Value) -> str:
        value = self._resolve(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list | tuple):
            return ",".join(self._text(v) for v in value)
        return "" if value is None else str(value)

    def _resolve(self, value: Value) -> Value:
        """Secret references resolved (and registered for log masking), recursively."""
        if isinstance(value, str):
            ref = secrets.parse_ref(value)
            value = ref if ref is not None else value
        if isinstance(value, SecretRef):
            try:
                text = secrets.resolve(value, env=self._env)
            except secrets.SecretError as exc:
                raise PermanentError(str(exc)) from None
            register_secret(text)
            return text
        if isinstance(value, Mapping):
            return {k: self._resolve(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._resolve(v) for v in value]
        return value

    # ------------------------------------------------------------ sending

    async def send(self, request: httpx.Request, *, retry: bool = True) -> httpx.Response:
        """Send with retries; a 2xx response, else `PermanentError`/`RetryableError`."""
        attempts = 1 + (self.retry.retries if retry else 0)
        last: RetryableError | None = None
        for attempt in range(attempts):
            try:
                return await self._send_once(request)
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

    async def _send_once(self, request: httpx.Request) -> httpx.Response:
        self.requests_sent += 1
        try:
            response = await self.client.send(request)
            await response.aread()
        except httpx.TimeoutException:
            raise RetryableError(f"{where(request)}: timed out") from None
        except httpx.TransportError as exc:
            raise RetryableError(
                f"{where(request)}: connection failed ({type(exc).__name__})") from None
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
        return await self.send(self.build_request(connector, operation, connection, parameters,
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
        request = self.build_request(connector, operation, connection, parameters)
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
            request = self.request_for_url("GET", next_url, connector, connection)
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


def _first(params: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if name and params.get(name) not in (None, ""):
            return params[name]
    return None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)

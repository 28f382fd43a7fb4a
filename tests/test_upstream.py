"""hookd.upstream.client: requests rendered from connector operations; failures mapped once, retried."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from hookd.config.model import Connection, SecretRef
from hookd.connectors.model import Auth, Connector, Operation, Parameter
from hookd.upstream.client import (
    PermanentError,
    RetryableError,
    RetryPolicy,
    Upstream,
    classify,
)
from tests.fakes.github import github_connector

GH = github_connector()
CONN = Connection("gh", "github", {"token": SecretRef("env", "GH_TOKEN")})
ENV = {"GH_TOKEN": "ghp_secret_value"}


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def client(handler: Callable[[httpx.Request], httpx.Response], *, retries: int = 3,
           sleeps: Sleeps | None = None, now: float = 1000.0) -> Upstream:
    return Upstream(httpx.MockTransport(handler), retry=RetryPolicy(retries=retries, base_delay=1.0),
                    sleep=sleeps or Sleeps(), clock=lambda: now, rng=lambda: 0.5, env=ENV)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_github_create_request_path_body_and_bearer() -> None:
    up = client(lambda r: httpx.Response(200))
    body = {"events": ["push"], "config": {"url": "https://h/hooks/a/t"}}
    req = up.build_request(GH, "webhook-trigger", CONN, {"owner": "o w", "repo": "r"}, body)
    assert (req.method, str(req.url)) == ("POST", "https://api.github.com/repos/o%20w/r/hooks")
    assert req.headers["authorization"] == "Bearer ghp_secret_value"
    assert json.loads(req.content) == body


def test_connection_base_url_overrides_the_spec() -> None:
    up = client(lambda r: httpx.Response(200))
    conn = Connection("ghe", "github", {"token": "t"}, base_url="https://ghe.corp/api/v3/")
    req = up.build_request(GH, "list-hooks", conn, {"owner": "o", "repo": "r"})
    assert str(req.url) == "https://ghe.corp/api/v3/repos/o/r/hooks"


def _keyed(location: str) -> Connector:
    op = Operation("sub", "POST", "/subs", parameters=(Parameter("cb", "query"),
                                                        Parameter("X-Tenant", "header")))
    return Connector("k", host="api.k.example", operations={"sub": op},
                     auth=Auth("apikey", "api-key", location))  # type: ignore[arg-type]


@pytest.mark.parametrize("location", ["header", "query"])
def test_api_key_in_header_or_query(location: str) -> None:
    up = client(lambda r: httpx.Response(200))
    req = up.build_request(_keyed(location), "sub", Connection("k", "k", {"api_key": "K123"}),
                           {"cb": "https://h/x", "X-Tenant": "t1"})
    assert req.url.params["cb"] == "https://h/x" and req.headers["x-tenant"] == "t1"
    if location == "header":
        assert req.headers["api-key"] == "K123"
    else:
        assert req.url.params["api-key"] == "K123"


def test_basic_auth() -> None:
    conn = Connection("b", "b", {"username": "u", "password": "p"})
    c = Connector("b", host="h", operations={"x": Operation("x", "GET", "/")}, auth=Auth("basic"))
    req = client(lambda r: httpx.Response(200)).build_request(c, "x", conn, {})
    assert req.headers["authorization"] == "Basic dTpw"


def test_missing_secret_is_permanent_and_names_the_reference_only() -> None:
    up = Upstream(httpx.MockTransport(lambda r: httpx.Response(200)), env={})
    with pytest.raises(PermanentError, match=r"\$\{env:GH_TOKEN\}"):
        up.build_request(GH, "list-hooks", CONN, {"owner": "o", "repo": "r"})


def _resp(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    req = httpx.Request("POST", "https://api.github.com/repos/o/r/hooks?api_key=SECRET")
    return httpx.Response(status, json=body, headers=headers, request=req)


@pytest.mark.parametrize(
    "status, body, headers, kind, text, retry_after",
    [
        (201, {}, None, None, "", None),
        (401, {"message": "Bad credentials"}, None, PermanentError, "bad credentials", None),
        (403, {"message": "Forbidden"}, None, PermanentError, "admin:repo_hook", None),
        (404, {"message": "Not Found"}, None, PermanentError, "lacks permission", None),
        (422, {"message": "Validation Failed", "errors": [{"message": "Hook already exists on this repository"}]},
         None, PermanentError, "a hook with this URL and events already exists", None),
        (400, {"message": "x"}, None, PermanentError, "malformed", None),
        (408, None, None, RetryableError, "408", None),
        (500, {"message": "boom"}, None, RetryableError, "500", None),
        (503, None, {"Retry-After": "7"}, RetryableError, "503", 7.0),
        (429, None, {"Retry-After": "3"}, RetryableError, "rate limited", 3.0),
        (403, {"message": "API rate limit exceeded"},
         {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1060"}, RetryableError, "rate limited", 60.0),
        (429, None, {"Retry-After": "Thu, 01 Jan 1970 00:17:00 GMT"}, RetryableError, "rate", 20.0),
        (429, None, {"Retry-After": "soon"}, RetryableError, "rate limited", None),
        (403, {"message": "You have exceeded a secondary rate limit."}, None, RetryableError,
         "rate limited", 60.0),
        (403, {"message": "x"}, {"Retry-After": "5"}, RetryableError, "rate limited", 5.0),
        (425, None, None, RetryableError, "425", None),
        (501, None, None, PermanentError, "501", None),
        (302, None, {"Location": "https://elsewhere.example/x?token=SECRET"}, PermanentError,
         "redirects are not followed", None),
    ],
)
def test_classify(status: int, body: Any, headers: dict[str, str] | None, kind: type | None,
                  text: str, retry_after: float | None) -> None:
    error = classify(_resp(status, body, headers), now=1000.0)
    if kind is None:
        assert error is None
        return
    assert isinstance(error, kind)
    assert text in str(error)
    assert "SECRET" not in str(error)  # query strings (API keys) never in messages
    if isinstance(error, RetryableError):
        assert error.retry_after == retry_after


def test_retries_5xx_with_exponential_backoff_then_succeeds() -> None:
    answers = iter([500, 502, 201])
    sleeps = Sleeps()
    up = client(lambda r: httpx.Response(next(answers)), sleeps=sleeps)
    response = run(up.send(httpx.Request("GET", "https://api.github.com/x")))
    assert response.status_code == 201
    assert sleeps.delays == [1.0, 2.0]  # jitter fixed at the middle (rng=0.5)


def test_retry_after_is_honoured() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "9"}), httpx.Response(200)])
    sleeps = Sleeps()
    up = client(lambda r: next(answers), sleeps=sleeps)
    run(up.send(httpx.Request("GET", "https://api.github.com/x")))
    assert sleeps.delays == [9.0]


def test_long_rate_limit_waits_give_up_for_this_pass() -> None:
    sleeps = Sleeps()
    up = client(lambda r: httpx.Response(429, headers={"Retry-After": "3600"}), sleeps=sleeps)
    with pytest.raises(RetryableError, match="next pass"):
        run(up.send(httpx.Request("GET", "https://api.github.com/x")))
    assert sleeps.delays == []


def test_retries_are_bounded() -> None:
    calls: list[int] = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=r)

    with pytest.raises(RetryableError, match="connection failed"):
        run(client(handler, retries=2).send(httpx.Request("GET", "https://api.github.com/x")))
    assert len(calls) == 3


def test_timeouts_are_retryable() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=r)

    with pytest.raises(RetryableError, match="timed out"):
        run(client(handler, retries=0).send(httpx.Request("GET", "https://api.github.com/x")))


def test_permanent_errors_are_not_retried() -> None:
    calls: list[int] = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(401, json={"message": "Bad credentials"})

    with pytest.raises(PermanentError):
        run(client(handler).send(httpx.Request("GET", "https://api.github.com/x")))
    assert calls == [1]


def test_list_follows_every_next_link_and_keeps_credentials_on_origin() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append((str(r.url), r.headers.get("authorization")))
        page = int(r.url.params.get("page", "1"))
        links = {1: '<https://api.github.com/repos/o/r/hooks?page=2>; rel="next"',
                 2: '</repos/o/r/hooks?page=3>; rel="next", <x>; rel="last"',
                 3: '<https://elsewhere.example/hooks?page=4>; rel="next"'}
        headers = {"Link": links[page]} if page in links else {}
        return httpx.Response(200, json=[{"id": page}], headers=headers)

    items = run(client(handler).list_all(GH, "list-hooks", CONN, {"owner": "o", "repo": "r"}))
    assert [i["id"] for i in items] == [1, 2, 3, 4]
    assert [a for _, a in seen] == ["Bearer ghp_secret_value"] * 3 + [None]

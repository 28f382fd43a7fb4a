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
    req = run(up.build_request(GH, "webhook-trigger", CONN, {"owner": "o w", "repo": "r"}, body))
    assert (req.method, str(req.url)) == ("POST", "https://api.github.com/repos/o%20w/r/hooks")
    assert req.headers["authorization"] == "Bearer ghp_secret_value"
    assert json.loads(req.content) == body


def test_connection_base_url_overrides_the_spec() -> None:
    up = client(lambda r: httpx.Response(200))
    conn = Connection("ghe", "github", {"token": "t"}, base_url="https://ghe.corp/api/v3/")
    req = run(up.build_request(GH, "list-hooks", conn, {"owner": "o", "repo": "r"}))
    assert str(req.url) == "https://ghe.corp/api/v3/repos/o/r/hooks"


def _keyed(location: str) -> Connector:
    op = Operation("sub", "POST", "/subs", parameters=(Parameter("cb", "query"),
                                                        Parameter("X-Tenant", "header")))
    return Connector("k", host="api.k.example", operations={"sub": op},
                     auth=Auth("apikey", "api-key", location))  # type: ignore[arg-type]


@pytest.mark.parametrize("location", ["header", "query"])
def test_api_key_in_header_or_query(location: str) -> None:
    up = client(lambda r: httpx.Response(200))
    req = run(up.build_request(_keyed(location), "sub", Connection("k", "k", {"api_key": "K123"}),
                           {"cb": "https://h/x", "X-Tenant": "t1"}))
    assert req.url.params["cb"] == "https://h/x" and req.headers["x-tenant"] == "t1"
    if location == "header":
        assert req.headers["api-key"] == "K123"
    else:
        assert req.url.params["api-key"] == "K123"


def test_basic_auth() -> None:
    conn = Connection("b", "b", {"username": "u", "password": "p"})
    c = Connector("b", host="h", operations={"x": Operation("x", "GET", "/")}, auth=Auth("basic"))
    req = run(client(lambda r: httpx.Response(200)).build_request(c, "x", conn, {}))
    assert req.headers["authorization"] == "Basic dTpw"


def test_missing_secret_is_permanent_and_names_the_reference_only() -> None:
    up = Upstream(httpx.MockTransport(lambda r: httpx.Response(200)), env={})
    with pytest.raises(PermanentError, match=r"\$\{env:GH_TOKEN\}"):
        run(up.build_request(GH, "list-hooks", CONN, {"owner": "o", "repo": "r"}))


def _resp(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    req = httpx.Request("POST", "https://api.github.com/repos/o/r/hooks?api_key=SECRET")
    return httpx.Response(status, json=body, headers=headers, request=req)


@pytest.mark.parametrize(
    "status, body, headers, kind, text, retry_after",
    [
        (201, {}, None, None, "", None),
        (401, {"message": "Bad credentials"}, None, PermanentError, "bad credentials", None),
        (403, {"message": "Forbidden"}, None, PermanentError, "admin:repo_hook", None),
        (403, {"message": "Request forbidden by administrative rules. Please make sure your "
                          "request has a User-Agent header"}, None, PermanentError,
         "refused the request: Request forbidden by administrative rules", None),
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


# ----------------------------------------------------------------------------- what every request carries


def _policy_connector(tmp_path: Any) -> Connector:
    """A Power Platform connector with a tenant host, a wrapped key and a routed path."""
    from hookd.connectors.loader import load_connector

    d = tmp_path / "Tenant"
    d.mkdir()
    (d / "apiDefinition.swagger.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "T", "version": "1"}, "host": "placeholder.example",
        "basePath": "/api", "produces": ["application/vnd.t+json"],
        "securityDefinitions": {"k": {"type": "apiKey", "in": "header", "name": "Authorization"}},
        "paths": {"/hooks/form": {"post": {"operationId": "Sub", "parameters": [
            {"name": "Content-Type", "in": "header", "required": True, "type": "string",
             "default": "application/vnd.api+json"},
            {"name": "b", "in": "body", "schema": {"type": "object", "properties": {
                "url": {"type": "string", "x-ms-notification-url": True}}}}],
            "x-ms-trigger": "single", "responses": {"201": {"description": "ok"}}}}}}))
    (d / "apiProperties.json").write_text(json.dumps({"properties": {
        "connectionParameters": {"api_key": {"type": "securestring"},
                                 "instance": {"type": "string"}},
        "policyTemplateInstances": [
            {"templateId": "dynamicHostUrl", "parameters": {
                "x-ms-apimTemplateParameter.urlTemplate":
                    "https://@connectionParameters('instance').t.example/api"}},
            {"templateId": "setheader", "parameters": {
                "x-ms-apimTemplateParameter.name": "Authorization",
                "x-ms-apimTemplateParameter.value": "Bearer @connectionParameters('api_key')",
                "x-ms-apimTemplateParameter.existsAction": "override",
                "x-ms-apimTemplate-policySection": "Request"}},
            {"templateId": "routerequesttoendpoint", "parameters": {
                "x-ms-apimTemplateParameter.newPath": "/hooks",
                "x-ms-apimTemplateParameter.httpMethod": "@Request.OriginalHTTPMethod",
                "x-ms-apimTemplate-operationName": ["Sub"]}}]}}))
    connector, diags = load_connector(d)
    assert connector is not None and not [x for x in diags if x.is_error]
    return connector


def test_every_request_carries_user_agent_and_the_connectors_accept(tmp_path: Any) -> None:
    seen: list[httpx.Request] = []
    up = client(lambda r: seen.append(r) or httpx.Response(200, json=[]))
    run(up.list_all(GH, "list-hooks", CONN, {"owner": "o", "repo": "r"}))
    req = run(up.build_request(_policy_connector(tmp_path), "Sub",
                               Connection("t", "t", {"api_key": "K", "instance": "acme"}), {}, {}))
    for r in [*seen, req]:
        assert r.headers["user-agent"].startswith("hookd/")
    assert seen[0].headers["accept"] == "application/json"
    assert req.headers["accept"] == "application/vnd.t+json"


def test_policies_and_header_defaults_on_the_request(tmp_path: Any) -> None:
    connector = _policy_connector(tmp_path)
    conn = Connection("t", "t", {"api_key": SecretRef("env", "T_KEY"), "instance": "acme"})
    up = Upstream(httpx.MockTransport(lambda r: httpx.Response(200)), env={"T_KEY": "k-123"})
    req = run(up.build_request(connector, "Sub", conn, {}, {"url": "https://h/x"}))
    assert (req.method, str(req.url)) == ("POST", "https://acme.t.example/api/hooks")
    assert req.headers["authorization"] == "Bearer k-123"
    assert req.headers["content-type"] == "application/vnd.api+json"  # the required default
    shown = up.preview(connector, "Sub", conn, {}, {"url": "https://h/x"})
    assert shown["url"] == "https://acme.t.example/api/hooks"
    assert shown["headers"]["Authorization"] == "Bearer ***"
    assert "k-123" not in json.dumps(shown)
    assert [p.split()[0] for p in shown["policies"]] == [
        "dynamichosturl", "setheader", "routerequesttoendpoint"]
    # A Location on the tenant's host gets the credentials; one elsewhere does not.
    own = run(up.request_for_url("DELETE", "https://acme.t.example/api/hooks/1", connector, conn))
    other = run(up.request_for_url("DELETE", "https://evil.example/hooks/1", connector, conn))
    assert own.headers["authorization"] == "Bearer k-123"
    assert "authorization" not in other.headers


def test_oauth2_token_comes_from_the_token_source_else_the_static_token() -> None:
    class Tokens:
        def __init__(self) -> None:
            self.asked: list[str] = []

        async def access_token(self, connection: str) -> str | None:
            self.asked.append(connection)
            return "fresh-token" if connection == "gh" else None

        async def invalidate(self, connection: str) -> None:
            return None

    tokens = Tokens()
    up = Upstream(httpx.MockTransport(lambda r: httpx.Response(200)), env=ENV, tokens=tokens)
    req = run(up.build_request(GH, "list-hooks", CONN, {"owner": "o", "repo": "r"}))
    assert req.headers["authorization"] == "Bearer fresh-token"
    other = Connection("other", "github", {"token": "static"})
    req = run(up.build_request(GH, "list-hooks", other, {"owner": "o", "repo": "r"}))
    assert req.headers["authorization"] == "Bearer static"
    assert tokens.asked == ["gh", "other"]


def test_parameter_set_chooses_the_credentials(tmp_path: Any) -> None:
    from hookd.connectors.loader import load_connector

    d = tmp_path / "Multi"
    d.mkdir()
    (d / "apiDefinition.swagger.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "M", "version": "1"}, "host": "m.example",
        "securityDefinitions": {"Basic": {"type": "basic"}},
        "paths": {"/x": {"get": {"operationId": "x", "responses": {"200": {"description": "ok"}}}}}}))
    (d / "apiProperties.json").write_text(json.dumps({"properties": {"connectionParameterSets": {
        "values": [{"name": "oauth", "parameters": {"token": {"type": "oauthSetting"}}},
                   {"name": "basic", "parameters": {"username": {"type": "securestring"},
                                                    "password": {"type": "securestring"}}}]}}}))
    connector, _ = load_connector(d)
    assert connector is not None
    up = client(lambda r: httpx.Response(200))
    first = run(up.build_request(connector, "x", Connection("a", "m", {"token": "t1"}), {}))
    assert first.headers["authorization"] == "Bearer t1"
    basic = Connection("b", "m", {"username": "u", "password": "p"}, parameter_set="basic")
    assert run(up.build_request(connector, "x", basic, {})).headers["authorization"] == "Basic dTpw"
    # Nothing given: no "Basic Og==" made of empty strings.
    empty = Connection("c", "m", {}, parameter_set="basic")
    assert "authorization" not in run(up.build_request(connector, "x", empty, {})).headers
    with pytest.raises(PermanentError, match="no parameter set 'nope'.*oauth, basic"):
        run(up.build_request(connector, "x", Connection("d", "m", {}, parameter_set="nope"), {}))


def test_a_401_on_a_token_source_token_invalidates_it_and_retries_once() -> None:
    class Rotating:
        def __init__(self) -> None:
            self.tokens = ["old", "new"]
            self.invalidated: list[str] = []

        async def access_token(self, connection: str) -> str | None:
            return self.tokens[0]

        async def invalidate(self, connection: str) -> None:
            self.invalidated.append(connection)
            self.tokens.pop(0)

    source = Rotating()
    seen: list[str] = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(r.headers["authorization"])
        return httpx.Response(200 if r.headers["authorization"] == "Bearer new" else 401)

    up = Upstream(httpx.MockTransport(handler), env=ENV, tokens=source)
    response = run(up.call(GH, "list-hooks", CONN, {"owner": "o", "repo": "r"}))
    assert response.status_code == 200
    assert seen == ["Bearer old", "Bearer new"] and source.invalidated == ["gh"]
    # A static token (no token source) is not retried: the 401 is the answer.
    static = client(lambda r: httpx.Response(401, json={"message": "Bad credentials"}))
    with pytest.raises(PermanentError, match="bad credentials"):
        run(static.call(GH, "list-hooks", CONN, {"owner": "o", "repo": "r"}))

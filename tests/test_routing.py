"""Routing decisions, as a table: which subscription ids and tokens reach which flow."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hookd.callbacks import routing
from hookd.config.model import Config, SecretRef
from hookd.config.secrets import SecretError
from hookd.connectors.model import Schema, Verification
from hookd.store.sqlite.subscriptions import SubscriptionRow
from hookd.subscriptions import tokens
from tests.ingest_launcher import make_config

SECRET = bytes(range(32))
CONFIG = make_config(Path("/nonexistent/state"))


def _row(sub_id: str, flow: str, status: str = "active", connector: str = "github") -> SubscriptionRow:
    return SubscriptionRow(
        id=sub_id, flow=flow, fingerprint="f", connector=connector, operation="webhook-trigger",
        connection=None, scope=None, parameters={}, location=None, upstream_id="7",
        secret="row-secret", status=status,  # type: ignore[arg-type]
    )


ROWS = {
    r.id: r
    for r in (
        _row("push-old0000001", "push"),
        _row("push-dying00001", "push", status="deleting"),
        _row("removed-0000001", "no-such-flow"),
        _row("paused-old00001", "paused"),
    )
}


def _table(rows: dict[str, SubscriptionRow] | None = None) -> routing.RouteTable:
    return routing.build(CONFIG, SECRET, rows=rows or {}, resolve=lambda v: str(v))


def _sub_of(table: routing.RouteTable, flow: str) -> str:
    return next(r.subscription_id for r in table.routes.values() if r.flow == flow)


def _lookup(table: routing.RouteTable, sub_id: str, token: str | None = None) -> routing.Route:
    token = tokens.callback_token(SECRET, sub_id) if token is None else token
    return routing.lookup(table, sub_id, token, ROWS.get)


def test_every_flow_has_a_route_disabled_ones_too() -> None:
    table = _table()
    assert sorted(r.flow for r in table.routes.values()) == sorted(CONFIG.flows)
    paused = table.routes[_sub_of(table, "paused")]
    assert paused.state == "disabled"
    assert paused.validator is None  # answers 503 before reading a payload: nothing compiled


@pytest.mark.parametrize(
    ("case", "sub", "token", "outcome"),
    [
        ("current subscription", "flow:push", None, "push"),
        ("wrong token", "flow:push", "hkd1_" + "A" * 43, routing.NotFound),
        ("empty token", "flow:push", "", routing.NotFound),
        ("token of another subscription", "flow:push", "token-of:gitea", routing.NotFound),
        # Minted by this server, in neither the config nor the store: its flow was removed
        # and the upstream delete finished. Still 410, not 404 (issue 16 item 18).
        ("unknown id, correctly minted token", "nobody-00000001", None, routing.Gone),
        ("disabled flow", "flow:paused", None, routing.Unavailable),
        ("superseded hook of a live flow", "push-old0000001", None, "push"),
        ("superseded hook, wrong token", "push-old0000001", "hkd1_x", routing.NotFound),
        ("being deleted", "push-dying00001", None, routing.Gone),
        ("flow removed from the config", "removed-0000001", None, routing.Gone),
        ("old hook of a disabled flow", "paused-old00001", None, routing.Unavailable),
    ],
)
def test_lookup(case: str, sub: str, token: str | None, outcome: object) -> None:
    table = _table()
    if sub.startswith("flow:"):
        sub = _sub_of(table, sub[5:])
    if token is not None and token.startswith("token-of:"):
        token = tokens.callback_token(SECRET, _sub_of(table, token[9:]))
    if isinstance(outcome, str):
        route = _lookup(table, sub, token)
        assert route.flow == outcome and route.subscription_id == sub
    else:
        with pytest.raises(outcome):  # type: ignore[call-overload]
            _lookup(table, sub, token)


def test_unknown_ids_with_bad_tokens_never_reach_the_store() -> None:
    asked: list[str] = []

    def find(sub_id: str) -> SubscriptionRow | None:
        asked.append(sub_id)
        return ROWS.get(sub_id)

    with pytest.raises(routing.NotFound):
        routing.lookup(_table(), "push-old0000001", "hkd1_guess", find)
    assert asked == []


def test_route_carries_what_the_request_needs() -> None:
    table = _table()
    push = table.routes[_sub_of(table, "push")]
    assert push.verification.kind == "hmac-sha256" and push.verification.prefix == "sha256="
    assert push.delivery_id_header == "x-github-delivery" and push.event_header == "x-github-event"
    assert push.ping_event == "ping" and push.validation == "warn" and push.validator is not None
    assert push.secret == tokens.signing_secret(SECRET, push.subscription_id)
    assert "secret" not in repr(push) or push.secret not in repr(push)
    gitlab = table.routes[_sub_of(table, "gitlab")]
    assert "x-gitlab-token" in gitlab.drop_headers  # the token header is the secret itself
    items = table.routes[_sub_of(table, "items")]
    assert items.batch and items.validation == "reject"
    gitea = table.routes[_sub_of(table, "gitea")]
    assert gitea.validation == "off" and gitea.validator is None  # no schema: nothing to check


def test_store_secret_wins_and_deleting_row_is_gone() -> None:
    table = _table()
    sub = _sub_of(table, "push")
    with_rows = _table({sub: replace(_row(sub, "push"), secret="recorded")})
    assert with_rows.routes[sub].secret == "recorded"
    dying = _table({sub: _row(sub, "push", status="deleting")})
    with pytest.raises(routing.Gone):
        _lookup(dying, sub)


def test_flow_verify_secret_on_an_unsigned_connector_means_standard_webhooks() -> None:
    table = _table()
    signed = table.routes[_sub_of(table, "signed")]
    assert signed.verification == Verification("standard-webhooks")
    assert signed.secret == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert table.routes[_sub_of(table, "open")].verification.kind == "none"


def test_unresolvable_verify_secret_disables_the_route_instead_of_accepting_anything() -> None:
    flows = dict(CONFIG.flows)
    flows["signed"] = replace(flows["signed"], verify_secret=SecretRef("env", "MISSING"))

    def resolve(value: object) -> str:
        raise SecretError(str(value), "not set")

    table = routing.build(replace(CONFIG, flows=flows), SECRET, resolve=resolve)
    with pytest.raises(routing.Unavailable):
        _lookup(table, _sub_of(table, "signed"))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"ref": "refs/heads/main", "after": "abc", "repository": {"full_name": "o/r"}}, []),
        ({"ref": "r", "after": "a", "repository": {"full_name": "o/r"}, "extra": 1}, []),
        ({"after": "a", "repository": {"full_name": "o/r"}}, ["(root): 'ref' is a required property"]),
        ({"ref": 5, "after": "a", "repository": {}}, ["ref: 5 is not of type 'string'",
                                                      "repository: 'full_name' is a required property"]),
        ([1, 2], ["(root): [1, 2] is not of type 'object'"]),
    ],
)
def test_violations(payload: object, expected: list[str]) -> None:
    table = _table()
    assert sorted(routing.violations(table.routes[_sub_of(table, "push")], payload)) == sorted(expected)


def _flows_sharing_a_schema(count: int, schema: Schema) -> Config:
    """`count` enabled flows on one webhook connector whose notification schema is `schema`."""
    github = CONFIG.connectors["github"]
    (op_id, webhook), = github.webhooks.items()
    connector = replace(github, webhooks={op_id: replace(webhook, notification_schema=schema)})
    push = CONFIG.flows["push"]
    flows = {
        f"f{i}": replace(push, name=f"f{i}",
                         trigger=replace(push.trigger, parameters={"owner": "o", "repo": f"r{i}"}))
        for i in range(count)
    }
    return replace(CONFIG, connectors={**CONFIG.connectors, "github": connector}, flows=flows)


def test_a_thousand_flows_sharing_a_schema_compile_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Compiling per flow made 1,000 GitHub flows cost seconds at every start and reload.
    compiled: list[object] = []

    class Counting(routing.SchemaCheck):
        def __init__(self, schema: Schema) -> None:
            compiled.append(schema)
            super().__init__(schema)

    monkeypatch.setattr(routing, "SchemaCheck", Counting)
    # A schema no other test uses, so the process-wide cache cannot already hold it.
    schema: dict[str, Any] = {"type": "object", "required": ["ref"], "properties": {"ref": {"type": "string"}},
              "description": f"unique {id(compiled)}"}
    config = _flows_sharing_a_schema(1000, schema)
    table = routing.build(config, SECRET)
    assert len(table.routes) == 1000 and len(compiled) == 1
    checks = {id(r.validator) for r in table.routes.values()}
    assert len(checks) == 1 and None not in {r.validator for r in table.routes.values()}

    # A reload builds a new config (new, equal schema objects): nothing is compiled again.
    reloaded = _flows_sharing_a_schema(1000, json.loads(json.dumps(schema)))
    again = routing.build(reloaded, SECRET)
    assert len(compiled) == 1
    assert next(iter(again.routes.values())).validator is next(iter(table.routes.values())).validator
    # The shared check still judges each payload on its own.
    route = next(iter(again.routes.values()))
    assert routing.violations(route, {"ref": "main"}) == []
    assert routing.violations(route, {"ref": 1}) == ["ref: 1 is not of type 'string'"]

    # A changed schema is compiled (once), and the cache stays bounded.
    monkeypatch.setattr(routing, "SCHEMA_CACHE_SIZE", 2)
    for n in range(3):
        routing.build(_flows_sharing_a_schema(3, {**schema, "title": f"v{n}"}), SECRET)
    assert len(compiled) == 4 and len(routing._cache) <= 2


NULLABLE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "base_ref": {"type": "string", "x-nullable": True},
        "state": {"type": "string", "enum": ["open", "closed"], "x-nullable": True},
        "repository": {
            "type": "object",
            "properties": {"description": {"type": "string", "x-nullable": True},
                           "name": {"type": "string"}},
        },
        "milestone": {"allOf": [{"type": "object", "required": ["id"]}], "x-nullable": True},
        "labels": {"type": "array", "items": {"type": "integer", "x-nullable": True}},
        "strict": {"type": "string", "x-nullable": False},
    },
}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"base_ref": None, "state": None, "repository": {"description": None},
          "milestone": None, "labels": [1, None]}, []),
        ({"base_ref": "main", "state": "open", "milestone": {"id": 3}}, []),
        ({"base_ref": 5}, ["base_ref: 5 is not of type 'string', 'null'"]),
        ({"state": "merged"}, ["state: 'merged' is not one of ['open', 'closed', None]"]),
        ({"repository": {"name": None}}, ["repository/name: None is not of type 'string'"]),
        ({"strict": None}, ["strict: None is not of type 'string'"]),
        ({"labels": ["x"]}, ["labels/0: 'x' is not of type 'integer', 'null'"]),
    ],
)
def test_x_nullable_allows_null_and_nothing_else(payload: object, expected: list[str]) -> None:
    table = routing.build(_flows_sharing_a_schema(1, NULLABLE), SECRET)
    route = next(iter(table.routes.values()))
    assert route.validator is not None
    got = routing.violations(route, payload)
    assert got == expected
    assert route.validator.is_valid(payload) is (not expected)  # the fast path agrees


def test_milestone_must_still_match_its_schema_when_not_null() -> None:
    table = routing.build(_flows_sharing_a_schema(1, NULLABLE), SECRET)
    route = next(iter(table.routes.values()))
    assert routing.violations(route, {"milestone": {"title": "v1"}}) != []
    assert NULLABLE["properties"]["base_ref"] == {"type": "string", "x-nullable": True}


def test_shared_sub_schemas_are_checked_everywhere_and_compiled_once() -> None:
    # The loader inlines a $ref as one shared object; the check references it instead of
    # copying it (so fastjsonschema generates it once), and it applies at every place.
    user = {"type": "object", "properties": {"login": {"type": "string"},
                                             "email": {"type": "string", "x-nullable": True}}}
    nullable_user = {"allOf": [user], "x-nullable": True}
    schema = {"type": "object", "properties": {
        "sender": user, "owner": user, "assignee": nullable_user,
        "assignees": {"type": "array", "items": user}}}
    translated = routing.json_schema(schema)
    assert len(translated["definitions"]) == 1
    assert translated["properties"]["sender"] == translated["properties"]["owner"]
    assert "$ref" in translated["properties"]["sender"]
    table = routing.build(_flows_sharing_a_schema(1, schema), SECRET)
    route = next(iter(table.routes.values()))
    ok = {"sender": {"login": "a", "email": None}, "owner": {"login": "b"}, "assignee": None,
          "assignees": [{"login": "c"}]}
    assert routing.violations(route, ok) == [] and route.validator.is_valid(ok)
    for bad, where in [({"owner": {"login": 1}}, "owner/login"),
                       ({"assignee": {"login": 2}}, "assignee"),
                       ({"assignees": [{"login": 3}]}, "assignees/0/login")]:
        assert [p.split(":")[0] for p in routing.violations(route, bad)] == [where], bad
        assert not route.validator.is_valid(bad)


def test_fast_and_full_checks_agree_that_format_is_not_asserted() -> None:
    # jsonschema without a format checker ignores `format`; the fast path must as well, or
    # it says "invalid" while no violation can be named.
    schema = {"type": "object", "properties": {"at": {"type": "string", "format": "date-time"}}}
    table = routing.build(_flows_sharing_a_schema(1, schema), SECRET)
    route = next(iter(table.routes.values()))
    assert route.validator is not None and route.validator.is_valid({"at": "yesterday"})
    assert routing.violations(route, {"at": "yesterday"}) == []

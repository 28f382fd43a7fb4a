"""Desired subscriptions: stable ids, fingerprints that change exactly when a new hook is needed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hookd.config.model import Config, Connection, Flow, SecretRef, Settings, Trigger
from hookd.connectors.model import Connector, Operation
from hookd.subscriptions import tokens
from hookd.subscriptions.desired import DesiredSubscription, desired_subscriptions
from tests.fakes.github import github_connector

SECRET = b"k" * 32
PUBLIC = "https://hooks.example.net"


def http_connector() -> Connector:
    return Connector(
        name="http", request_trigger=True,
        operations={"request": Operation("request", "POST", "/", trigger="single")},
    )


def flow(name: str = "ci", *, body: dict[str, Any] | None = None, enabled: bool = True,
         connection: str = "gh", **params: Any) -> Flow:
    return Flow(
        name=name, enabled=enabled,
        trigger=Trigger("github", "webhook-trigger", connection,
                        parameters={"owner": "o", "repo": "r", **params}, body=body or {}),
    )


def config(*flows: Flow, public_url: str = PUBLIC) -> Config:
    return Config(
        directory=Path("."), settings=Settings(public_url=public_url),
        connectors={"github": github_connector(), "http": http_connector()},
        connections={"gh": Connection("gh", "github", {"token": SecretRef("env", "GH")})},
        flows={f.name: f for f in flows},
    )


def one(cfg: Config) -> DesiredSubscription:
    (sub,) = desired_subscriptions(cfg, SECRET)
    return sub


def test_github_body_has_schema_defaults_flow_values_callback_url_and_secret() -> None:
    sub = one(config(flow(body={"events": ["push", "release"]})))
    assert sub.upstream and sub.flow == "ci" and sub.connection == "gh"
    assert sub.body == {
        "name": "web", "active": True, "events": ["push", "release"],
        "config": {"content_type": "json", "insecure_ssl": "0",
                   "url": sub.callback_url, "secret": sub.secret},
    }
    assert sub.parameters == {"owner": "o", "repo": "r"}
    assert sub.callback_url == tokens.callback_url(
        PUBLIC, sub.id, tokens.callback_token(SECRET, sub.id))
    assert sub.id.startswith("ci-")


def test_secrets_are_not_in_repr() -> None:
    sub = one(config(flow()))
    assert sub.secret not in repr(sub) and "hkd1_" not in repr(sub)


def test_id_is_stable_across_runs() -> None:
    assert one(config(flow())).id == one(config(flow())).id


@pytest.mark.parametrize(
    "change",
    [
        lambda f: replace(f, trigger=replace(f.trigger, body={"events": ["issues"]})),
        lambda f: replace(f, trigger=replace(f.trigger, parameters={"owner": "o", "repo": "x"})),
        lambda f: replace(f, trigger=replace(f.trigger, connection="other")),
    ],
    ids=["events", "repo", "connection"],
)
def test_changes_needing_a_new_hook_change_fingerprint_and_id(change: Any) -> None:
    before = one(config(flow()))
    after = one(config(change(flow())))
    assert before.fingerprint != after.fingerprint
    assert before.id != after.id and before.callback_url != after.callback_url


def test_public_url_change_needs_new_hooks() -> None:
    assert one(config(flow())).id != one(config(flow(), public_url="https://new.example")).id


def test_steps_and_secret_values_do_not_change_the_fingerprint(monkeypatch: Any) -> None:
    a = one(config(flow(body={"x": SecretRef("env", "A")})))
    monkeypatch.setenv("A", "changed")
    b = one(config(replace(flow(body={"x": SecretRef("env", "A")}), description="new text")))
    assert a.fingerprint == b.fingerprint
    assert b.body["x"] == SecretRef("env", "A")  # resolved only when sent


def test_disabled_flows_want_nothing_and_request_triggers_want_a_route_only() -> None:
    web = Flow("inbound", Trigger("http", "request"))
    subs = desired_subscriptions(config(flow(enabled=False), web), SECRET)
    assert [(s.flow, s.upstream) for s in subs] == [("inbound", False)]
    assert subs[0].callback_url.startswith(PUBLIC + "/hooks/inbound-")


def test_same_trigger_in_two_flows_gets_two_ids() -> None:
    subs = desired_subscriptions(config(flow("a"), flow("b")), SECRET)
    assert len({s.id for s in subs}) == 2


def test_scope_groups_by_repository() -> None:
    subs = desired_subscriptions(
        config(flow("a"), flow("b", body={"events": ["issues"]}), flow("c", repo="other")),
        SECRET)
    scopes = {s.flow: s.scope for s in subs}
    assert scopes["a"] == scopes["b"] != scopes["c"]

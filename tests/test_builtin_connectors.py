"""The built-in connectors say what a production integration with each upstream needs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hookd import openapi
from hookd.connector import Connector, DeleteStrategy, ListStrategy, Verification


@pytest.fixture(scope="module")
def builtins() -> dict[str, Connector]:
    connectors, diags = openapi.load_connector_dir(openapi.builtin_dir(), builtin=True)
    assert diags == [], [d.format() for d in diags]
    return connectors


def has_path(schema: Mapping[str, Any] | None, dotted: str) -> bool:
    """Does a template path like ``pusher.name`` or ``commits.0.id`` exist in the schema?"""
    node: Any = schema
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return False
        if node.get("type") == "array" and part.isdigit():
            node = node.get("items")
            continue
        node = (node.get("properties") or {}).get(part)
    return node is not None


def paths_of(value: Any, prefix: str = "", depth: int = 3) -> list[str]:
    """Dotted paths of a real payload, down to `depth` (array items as index 0)."""
    out = []
    if depth == 0:
        return out
    if isinstance(value, dict):
        for key, sub in value.items():
            here = f"{prefix}{key}"
            out.append(here)
            out.extend(paths_of(sub, here + ".", depth - 1))
    elif isinstance(value, list) and value:
        out.extend(paths_of(value[0], prefix + "0.", depth))
    return out


def test_the_four_builtins_load_cleanly(builtins: dict[str, Connector]) -> None:
    assert sorted(builtins) == ["gitea", "github", "gitlab", "http"]
    assert all(c.builtin for c in builtins.values())


def test_github_follows_the_flow_docs_sample(builtins: dict[str, Connector]) -> None:
    github = builtins["github"]
    assert github.base_url == "https://api.github.com"
    op = github.operations["webhook-trigger"]
    assert (op.method, op.path, op.trigger) == ("POST", "/repos/{owner}/{repo}/hooks", "single")
    assert op.location_header
    body = op.body_schema
    assert body is not None
    assert body["properties"]["active"]["default"] is True
    assert body["properties"]["name"]["default"] == "web"
    assert body["properties"]["events"]["default"] == ["push"]
    assert body["properties"]["config"]["properties"]["content_type"]["default"] == "json"
    assert body["properties"]["config"]["properties"]["insecure_ssl"]["default"] == "0"
    webhook = github.webhooks["webhook-trigger"]
    assert webhook.notification_url == ("body", "config", "url")
    assert webhook.secret_path == ("body", "config", "secret")
    assert webhook.delete == DeleteStrategy("operation", "deleteHook", "hook_id", "id", "x-hookd-delete")
    assert webhook.list == ListStrategy("listHooks", "config.url", "id", "")
    assert github.operations["deleteHook"].path == "/repos/{owner}/{repo}/hooks/{hook_id}"
    assert github.verification == Verification("hmac-sha256", "X-Hub-Signature-256", "sha256=", "hex")
    assert (github.delivery_id_header, github.event_header, github.ping_event) == (
        "X-GitHub-Delivery", "X-GitHub-Event", "ping")
    assert github.auth.kind == "oauth2" and github.auth.parameter == "token"
    assert github.connection_parameters["token"].secret
    assert github.operations["createIssueComment"].path == (
        "/repos/{owner}/{repo}/issues/{issue_number}/comments")


@pytest.mark.parametrize(
    "template_path",
    ["ref", "after", "before", "pusher.name", "pusher.email", "repository.name",
     "repository.full_name", "repository.owner.login", "sender.login", "commits.0.message",
     "commits.0.author.name", "head_commit.id", "head_commit.message", "compare"],
)
def test_github_notification_schema_covers_push_templates(builtins: dict[str, Connector],
                                                          template_path: str) -> None:
    assert has_path(builtins["github"].webhooks["webhook-trigger"].notification_schema, template_path)


def test_github_schema_declares_only_fields_real_push_payloads_have(
    builtins: dict[str, Connector], shared_dir: Path
) -> None:
    fixtures = shared_dir / "fixtures" / "github-webhooks"
    real = set()
    for name in ("push.0.json", "push.1.json", "push.2.json"):
        real.update(paths_of(json.loads((fixtures / name).read_text())))
    schema = builtins["github"].webhooks["webhook-trigger"].notification_schema
    assert schema is not None
    push_fields = ["ref", "before", "after", "created", "deleted", "forced", "base_ref", "compare",
                   "commits", "head_commit", "repository", "pusher", "sender"]
    for field in push_fields:
        assert field in real
        assert has_path(schema, field)
    for sub in ("pusher", "head_commit"):
        for name in schema["properties"][sub]["properties"]:
            assert f"{sub}.{name}" in real, f"{sub}.{name} is not in real push payloads"


def test_gitlab_project_hooks(builtins: dict[str, Connector]) -> None:
    gitlab = builtins["gitlab"]
    assert gitlab.base_url == "https://gitlab.com/api/v4"
    webhook = gitlab.webhooks["webhook-trigger"]
    assert gitlab.operations["webhook-trigger"].path == "/projects/{id}/hooks"
    assert webhook.notification_url == ("body", "url")
    assert webhook.secret_path == ("body", "token")
    assert webhook.delete == DeleteStrategy("operation", "deleteHook", "hook_id", "id", "x-hookd-delete")
    assert webhook.list == ListStrategy("listHooks", "url", "id", "")
    assert gitlab.verification == Verification("token", "X-Gitlab-Token")
    assert (gitlab.delivery_id_header, gitlab.event_header) == ("X-Gitlab-Event-UUID", "X-Gitlab-Event")
    assert (gitlab.auth.kind, gitlab.auth.location, gitlab.auth.name) == ("apikey", "header", "PRIVATE-TOKEN")
    assert gitlab.auth.parameter == "token"
    body = gitlab.operations["webhook-trigger"].body_schema
    assert body is not None and body["properties"]["push_events"]["default"] is True
    assert has_path(webhook.notification_schema, "project.path_with_namespace")


def test_gitea_repo_hooks(builtins: dict[str, Connector]) -> None:
    gitea = builtins["gitea"]
    webhook = gitea.webhooks["webhook-trigger"]
    body = gitea.operations["webhook-trigger"].body_schema
    assert body is not None and body["properties"]["type"]["default"] == "gitea"
    assert webhook.notification_url == ("body", "config", "url")
    assert webhook.secret_path == ("body", "config", "secret")
    assert gitea.verification == Verification("hmac-sha256", "X-Gitea-Signature", "", "hex")
    assert (gitea.delivery_id_header, gitea.event_header) == ("X-Gitea-Delivery", "X-Gitea-Event")
    assert (gitea.auth.kind, gitea.auth.name) == ("apikey", "Authorization")
    assert webhook.delete.operation_id == "deleteHook"
    assert has_path(webhook.notification_schema, "pusher.login")


def test_http_is_a_request_trigger(builtins: dict[str, Connector]) -> None:
    http = builtins["http"]
    assert http.request_trigger
    assert http.trigger_kind("request") == "request"
    assert http.webhooks == {} and http.polling == ()
    assert http.verification.kind == "none"
    schema_param = http.operations["request"].parameter("schema")
    assert schema_param is not None and not schema_param.required


def test_builtins_are_package_data() -> None:
    """`pip install .` copies hookd/builtin_connectors (a symlink to ../connectors)."""
    root = Path(openapi.__file__).resolve().parent.parent
    pyproject = (root / "pyproject.toml").read_text()
    assert '"builtin_connectors/**/*"' in pyproject
    link = Path(openapi.__file__).parent / "builtin_connectors"
    assert (link / "github" / openapi.SPEC_FILE).is_file()

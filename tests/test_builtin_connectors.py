"""The built-in connectors say what a production integration with each upstream needs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hookd.callbacks import routing
from hookd.connectors import loader as openapi
from hookd.connectors.model import Connector, DeleteStrategy, ListStrategy, Verification
from hookd.templating.analysis import flatten_schema

DATA = Path(__file__).parent / "data"


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
        node = flatten_schema(node)  # a nullable $ref is {"allOf": [<ref>], "x-nullable": true}
        if node.get("type") == "array" and part.isdigit():
            node = node.get("items")
            continue
        node = (node.get("properties") or {}).get(part)
    return node is not None


def paths_of(value: Any, prefix: str = "", depth: int = 3) -> list[str]:
    """Dotted paths of a real payload, down to `depth` (array items as index 0)."""
    out: list[str] = []
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
        for name in flatten_schema(schema["properties"][sub])["properties"]:
            assert f"{sub}.{name}" in real, f"{sub}.{name} is not in real push payloads"


def _check(connector: Connector) -> routing.Route:
    """The route a flow on `connector` gets under the default policy (warn)."""
    schema = connector.webhooks["webhook-trigger"].notification_schema
    assert schema is not None
    return routing.Route("sub", "flow", "active", schema=schema, validation="warn",
                         validator=routing.compile_schema(schema))


def _github_payloads(shared: Path | None) -> list[Path]:
    here = sorted((DATA / "github").glob("*.json"))
    assert {p.name.split(".")[0] for p in here} >= {"push", "issues", "ping"}
    return here + (sorted((shared / "fixtures" / "github-webhooks").glob("*.json")) if shared else [])


def test_real_github_payloads_of_every_event_match_the_builtin_schema(
    builtins: dict[str, Connector], request: pytest.FixtureRequest
) -> None:
    # Under the default policy (warn) a violation flags every delivery: real payloads must
    # pass. They carry nulls (base_ref, repository.description, head_commit of a deleted
    # branch, merged_at…), integer timestamps (repository.created_at in push events) and
    # the fields of issues, pull_request, release, workflow_run and ping events.
    try:
        shared: Path | None = request.getfixturevalue("shared_dir")
    except pytest.skip.Exception:
        shared = None  # the copies in tests/data still run
    route = _check(builtins["github"])
    assert route.validator is not None
    files = _github_payloads(shared)
    for path in files:
        payload = json.loads(path.read_text())
        assert routing.violations(route, payload) == [], path.name
        assert route.validator.is_valid(payload), path.name  # the fast path agrees
    if shared is not None:
        events = {p.name.split(".")[0] for p in files}
        assert events >= {"push", "issues", "pull_request", "release", "workflow_run", "ping"}


@pytest.mark.parametrize(
    ("change", "violation"),
    [
        (("ref",), 5),
        (("repository", "full_name"), ["o/r"]),
        (("repository", "created_at"), {"at": 1}),
        (("repository", "owner", "login"), None),
        (("base_ref",), False),
        (("head_commit",), "abc"),
        (("commits",), {"id": "abc"}),
        (("pusher", "name"), 7),
    ],
)
def test_a_wrong_type_in_a_github_payload_is_still_a_violation(
    builtins: dict[str, Connector], change: tuple[str, ...], violation: object
) -> None:
    payload = json.loads((DATA / "github" / "push.0.json").read_text())
    node = payload
    for key in change[:-1]:
        node = node[key]
    node[change[-1]] = violation
    problems = routing.violations(_check(builtins["github"]), payload)
    assert len(problems) == 1 and problems[0].startswith("/".join(change) + ": "), problems


def test_github_schema_stays_swagger_shaped(builtins: dict[str, Connector]) -> None:
    """No `required` (each event sends a different set); nulls said with x-nullable."""
    schema = builtins["github"].webhooks["webhook-trigger"].notification_schema

    def walk(node: Any, where: str) -> None:
        if isinstance(node, Mapping):
            assert "required" not in node or where.endswith(".properties"), where
            for key, sub in node.items():
                walk(sub, f"{where}.{key}")
        elif isinstance(node, list):
            for sub in node:
                walk(sub, where)

    walk(schema, "body")


GITLAB_PUSH_DELETING_A_BRANCH: dict[str, Any] = {
    "object_kind": "push", "event_name": "push", "before": "95790bf8", "after": "0000000000",
    "ref": "refs/heads/old", "ref_protected": False, "checkout_sha": None, "message": None,
    "user_id": 4, "user_name": "John Smith", "user_username": "jsmith", "user_email": None,
    "user_avatar": None, "project_id": 15,
    "project": {"id": 15, "name": "Diaspora", "description": None, "web_url": "http://example.com/mike/diaspora",
                "namespace": "Mike", "path_with_namespace": "mike/diaspora", "default_branch": "master",
                "visibility_level": 0},
    "commits": [], "total_commits_count": 0,
    "repository": {"name": "Diaspora", "url": "git@example.com:mike/diaspora.git", "description": None,
                   "homepage": "http://example.com/mike/diaspora"},
}
GITLAB_ISSUE: dict[str, Any] = {
    "object_kind": "issue", "event_type": "issue",
    "user": {"id": 1, "name": "Administrator", "username": "root", "avatar_url": None, "email": "admin@example.com"},
    "project": {"id": 1, "name": "Gitlab Test", "description": "Aut reprehenderit", "web_url": "http://example.com/g/t",
                "path_with_namespace": "g/t", "default_branch": "master", "visibility_level": 20},
    "object_attributes": {"id": 301, "iid": 23, "title": "New API: create/update/delete file",
                          "description": None, "state": "opened", "action": "open",
                          "url": "http://example.com/g/t/issues/23", "milestone_id": None},
    "labels": [{"id": 206, "title": "API", "color": "#ffffff", "description": None}],
}
GITEA_PUSH_OF_A_TAG: dict[str, Any] = {
    "ref": "refs/tags/v1.0", "before": "0000000000", "after": "28e1879d", "compare_url": "",
    "commits": None, "total_commits": 0, "head_commit": None,
    "repository": {"id": 1, "name": "webhooks", "full_name": "gitea/webhooks", "private": False,
                   "description": "", "owner": {"id": 1, "login": "gitea", "full_name": "Gitea",
                                                "email": "someone@example.com", "username": "gitea"}},
    "pusher": {"id": 1, "login": "gitea", "full_name": "Gitea", "email": "someone@example.com"},
    "sender": {"id": 1, "login": "gitea", "full_name": "Gitea", "email": "someone@example.com"},
}
GITEA_PUSH: dict[str, Any] = {
    **GITEA_PUSH_OF_A_TAG, "ref": "refs/heads/main",
    "commits": [{"id": "28e1879d", "message": "fix\n", "url": "http://g/c/28e1879d",
                 "author": {"name": "Gitea", "email": "someone@example.com", "username": "gitea"},
                 "committer": {"name": "Gitea", "email": "someone@example.com", "username": "gitea"},
                 "timestamp": "2017-03-13T13:52:11-04:00", "added": None, "removed": None,
                 "modified": ["README.md"]}],
}


@pytest.mark.parametrize(
    ("connector", "payload"),
    [("gitlab", GITLAB_PUSH_DELETING_A_BRANCH), ("gitlab", GITLAB_ISSUE),
     ("gitea", GITEA_PUSH_OF_A_TAG), ("gitea", GITEA_PUSH)],
    ids=["gitlab-push-branch-deleted", "gitlab-issue", "gitea-tag-push", "gitea-push"],
)
def test_gitlab_and_gitea_payloads_with_nulls_match_their_schemas(
    builtins: dict[str, Connector], connector: str, payload: dict[str, Any]
) -> None:
    # Hand-written after the upstreams' documented examples (no real fixtures in the repo):
    # GitLab sends null checkout_sha and descriptions; Gitea (Go) sends null for nil
    # slices and pointers. A wrong type is still reported.
    route = _check(builtins[connector])
    assert routing.violations(route, payload) == []
    wrong = {**payload, "ref": 1}
    assert routing.violations(route, wrong) == ["ref: 1 is not of type 'string'"]


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
    """`pip install .` copies hookd/connectors/builtin (a symlink to ../connectors)."""
    root = Path(openapi.__file__).resolve().parent.parent.parent
    pyproject = (root / "pyproject.toml").read_text()
    assert '"hookd.connectors" = ["builtin/**/*"]' in pyproject
    link = Path(openapi.__file__).parent / "builtin"
    assert (link / "github" / openapi.SPEC_FILE).is_file()

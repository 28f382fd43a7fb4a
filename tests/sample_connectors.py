"""Small connectors built from `hookd.connectors.model` dataclasses for config and check tests.

They mirror the shapes of the built-in `github` and `http` connectors (see
hookd/connectors/model.py), so the config tests do not depend on the OpenAPI loader.
"""

from __future__ import annotations

from hookd.connectors.model import (
    Auth,
    ConnectionParameter,
    Connector,
    Operation,
    Parameter,
    WebhookTrigger,
)

PUSH_SCHEMA = {
    "type": "object",
    "properties": {
        "ref": {"type": "string"},
        "after": {"type": "string"},
        "repository": {"type": "object", "properties": {"name": {"type": "string"}, "full_name": {"type": "string"}}},
        "pusher": {"type": "object", "properties": {"name": {"type": "string"}, "email": {"type": "string"}}},
        "commits": {"type": "array", "items": {"type": "object", "properties": {"id": {}, "message": {}}}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "extra": {"type": "object", "properties": {"a": {}}, "additionalProperties": True},
    },
}

HOOK_BODY = {
    "type": "object",
    "required": ["name", "config"],
    "properties": {
        "name": {"type": "string", "default": "web"},
        "active": {"type": "boolean", "default": True},
        "events": {"type": "array", "items": {"type": "string"}, "default": ["push"]},
        "config": {
            "type": "object",
            "required": ["url", "content_type"],
            "properties": {
                "url": {"type": "string", "x-ms-notification-url": True},
                "content_type": {"type": "string", "default": "json"},
                "secret": {"type": "string"},
            },
        },
    },
}


def github() -> Connector:
    trigger = Operation(
        "webhook-trigger", "POST", "/repos/{owner}/{repo}/hooks",
        parameters=(
            Parameter("owner", "path", required=True, type="string"),
            Parameter("repo", "path", required=True, type="string"),
            Parameter("body", "body", required=True, schema=HOOK_BODY),
        ),
        body_schema=HOOK_BODY, trigger="single",
    )
    comment = Operation(
        "create-issue-comment", "POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments",
        parameters=(
            Parameter("owner", "path", required=True, type="string"),
            Parameter("repo", "path", required=True, type="string"),
            Parameter("issue_number", "path", required=True, type="integer"),
        ),
    )
    poll = Operation("poll-stars", "GET", "/repos/{owner}/{repo}/stargazers", trigger="single")
    return Connector(
        name="github", host="api.github.com",
        operations={op.operation_id: op for op in (trigger, comment, poll)},
        webhooks={"webhook-trigger": WebhookTrigger(
            "webhook-trigger", ("body", "config", "url"), PUSH_SCHEMA,
            secret_path=("body", "config", "secret"))},
        polling=("poll-stars",),
        auth=Auth("oauth2"),
        connection_parameters={"token": ConnectionParameter("token", "securestring", required=True)},
    )


def http() -> Connector:
    op = Operation("request", "POST", "/", trigger="single",
                   parameters=(Parameter("schema", "query", type="object"),))
    return Connector(name="http", operations={"request": op}, request_trigger=True, builtin=True)


def connectors() -> dict[str, Connector]:
    return {"github": github(), "http": http()}

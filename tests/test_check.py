"""Semantic checks: references, trigger parameters, templates against the payload schema.

Each case is a small config directory loaded with the sample connectors of
tests/sample_connectors.py (shaped like the built-in github and http ones); the test
asserts the diagnostic a user would read: where (line:col, key path), what and the hint.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hookd.config.check import type_problem
from hookd.config.loader import load_config
from hookd.diagnostics import Diagnostic
from tests.configdir import write_config
from tests.sample_connectors import connectors

ENV = {"GITHUB_TOKEN": "t"}

GITHUB_TRIGGER = """\
name: f
trigger:
  connector: github
  operation: webhook-trigger
  connection: github
  parameters: {owner: o, repo: r}
"""


def problems(tmp_path: Path, flow: str, **kw: object) -> list[Diagnostic]:
    write_config(tmp_path, flows={"f": flow}, **kw)  # type: ignore[arg-type]
    config, diagnostics = load_config(tmp_path, connectors=connectors(), env=ENV)
    assert (config is None) == any(d.is_error for d in diagnostics)
    return diagnostics


def only(diagnostics: list[Diagnostic]) -> Diagnostic:
    assert len(diagnostics) == 1, [d.format() for d in diagnostics]
    return diagnostics[0]


def test_a_clean_github_flow_has_no_diagnostics(tmp_path: Path) -> None:
    flow = GITHUB_TRIGGER + "steps:\n  - log: \"{{ trigger.body.pusher.name }} {{ trigger.body.commits | length }}\"\n"
    assert problems(tmp_path, flow) == []


@pytest.mark.parametrize(
    ("flow", "line", "key", "message", "hint"),
    [
        ("trigger: {connector: gihub}\n", 1, "trigger.connector", "unknown connector 'gihub'", "did you mean 'github'?"),
        (GITHUB_TRIGGER.replace("webhook-trigger", "webhook-triger"), 4, "trigger.operation",
         "connector 'github' has no operation 'webhook-triger'", "did you mean 'webhook-trigger'?"),
        (GITHUB_TRIGGER.replace("webhook-trigger", "create-issue-comment"), 4, "trigger.operation",
         "operation 'create-issue-comment' of 'github' is not a trigger", "triggers: poll-stars, webhook-trigger"),
        (GITHUB_TRIGGER.replace("webhook-trigger", "poll-stars"), 4, "trigger.operation",
         "polling triggers are not yet supported", "webhook trigger"),
        (GITHUB_TRIGGER.replace("connection: github", "connection: gihub"), 5, "trigger.connection",
         "unknown connection 'gihub'", "did you mean 'github'?"),
        (GITHUB_TRIGGER.replace("  connection: github\n", ""), 2, "trigger",
         "trigger on 'github' needs a connection", "connections for it: github"),
        (GITHUB_TRIGGER.replace("repo: r", "rpo: r"), 6, "trigger.parameters",
         "missing required path parameter 'repo' of github/webhook-trigger",
         "set trigger.parameters.repo in the flow"),
        (GITHUB_TRIGGER.replace("repo: r", "repo: [r]"), 6, "trigger.parameters.repo",
         "parameter 'repo' should be a string, not a list", ""),
        (GITHUB_TRIGGER + "  body: {config: {content_type: 3}}\n", 7, "trigger.body.config.content_type",
         "body property 'config.content_type' should be a string, not the number 3", ""),
        (GITHUB_TRIGGER + "  body: {name: null, active: maybe}\n", 7, "trigger.body.active",
         "body property 'active' should be a boolean, not the string 'maybe'", ""),
    ],
)
def test_trigger_errors(
    tmp_path: Path, flow: str, line: int, key: str, message: str, hint: str
) -> None:
    errors = [d for d in problems(tmp_path, flow) if d.is_error]
    d = only(errors)
    assert (d.file.name, d.line, d.key) == ("f.yaml", line, key)
    assert message in d.message
    assert hint in d.hint


def test_unknown_trigger_parameter_is_a_warning_with_a_suggestion(tmp_path: Path) -> None:
    d = only(problems(tmp_path, GITHUB_TRIGGER.replace("repo: r", "repo: r, ownr: x")))
    assert d.severity == "warning" and d.key == "trigger.parameters.ownr"
    assert d.hint == "did you mean 'owner'?"


def test_connection_of_another_connector_is_an_error(tmp_path: Path) -> None:
    d = only(problems(tmp_path, GITHUB_TRIGGER.replace("connection: github", "connection: hooks"),
                      connections={"github": "connector: github\nparameters: {token: '${env:T}'}\n",
                                   "hooks": "connector: http\n"}))
    assert d.message == "connection 'hooks' is for connector 'http', not 'github'"
    assert d.hint == "connections for it: github"


def test_connection_checks(tmp_path: Path) -> None:
    diags = problems(tmp_path, "trigger: {connector: http}\n", connections={
        "a": "connector: gitlub\n",
        "b": "connector: github\nparameters: {token: literal, tokn: x}\n",
        "c": "connector: github\n",
        "d": "name: a\nconnector: http\n",
        "e": "connector: github\nparameters: {token: 'Bearer ${env:X}'}\n",
    })
    text = [(d.file.name, d.line, d.severity, d.message) for d in diags]
    assert text == [
        ("a.yaml", 1, "error", "unknown connector 'gitlub'"),
        ("b.yaml", 2, "warning", "'token' is a secret but is written in the file"),
        ("b.yaml", 2, "warning", "connector 'github' has no connection parameter 'tokn'"),
        ("c.yaml", 1, "error", "missing connection parameter 'token' of connector 'github'"),
        ("d.yaml", 1, "error", "duplicate connection name 'a'"),
        ("e.yaml", 2, "error", "${env:X} must be the whole value, not part of a string"),
    ]


def test_duplicate_flow_names_and_step_ids(tmp_path: Path) -> None:
    write_config(tmp_path, flows={
        "a": "name: same\ntrigger: {connector: http}\n",
        "b": "name: same\ntrigger: {connector: http}\nsteps:\n  - {id: x, log: a}\n  - {id: x, log: b}\n",
    })
    _, diags = load_config(tmp_path, connectors=connectors(), env=ENV)
    assert [(d.file.name, d.line, d.message) for d in diags] == [
        ("b.yaml", 1, "duplicate flow name 'same'"),
        ("b.yaml", 5, "duplicate step id 'x'"),
    ]
    assert diags[0].hint == "also defined at flows/a.yaml:1"


def test_templates_must_parse_in_steps_and_trigger(tmp_path: Path) -> None:
    flow = GITHUB_TRIGGER.replace("repo: r", "repo: '{{ env.REPO'") + (
        "steps:\n  - if: \"trigger.body.ref ==\"\n    log: ok\n"
        "  - http: {url: 'http://x/{% if %}'}\n"
    )
    diags = problems(tmp_path, flow)
    assert [(d.line, d.key) for d in diags] == [
        (6, "trigger.parameters.repo"), (8, "steps[0].if"), (10, "steps[1].http.url")]
    assert all(d.message.startswith("bad template: syntax error") for d in diags)


@pytest.mark.parametrize(
    ("template", "warning", "hint"),
    [
        ("{{ trigger.body.pusher.name }}", "", ""),
        ("{{ trigger.body.commits | length }}", "", ""),
        ("{{ trigger.body.commits[0].message }}", "", ""),
        ("{% for c in trigger.body.commits %}{{ c.id }}{% endfor %}", "", ""),
        ("{{ trigger.body.labels.anything }}", "", ""),  # additionalProperties: schema
        ("{{ trigger.body.extra.whatever.deep }}", "", ""),  # additionalProperties: true
        ("{{ trigger.headers.x }} {{ trigger.event }}", "", ""),
        ("{{ trigger.body.pusher.nmae }}", "trigger.body.pusher.nmae", "did you mean 'name'?"),
        ("{{ trigger.body.comits | length }}", "trigger.body.comits", "did you mean 'commits'?"),
        ("{{ trigger.body.commits.message }}", "trigger.body.commits.message", "'commits' is a list"),
        ("{{ trigger.body.zzz }}", "trigger.body.zzz", "keys here: after, commits"),
    ],
)
def test_body_paths_are_checked_against_the_notification_schema(
    tmp_path: Path, template: str, warning: str, hint: str
) -> None:
    diags = problems(tmp_path, GITHUB_TRIGGER + f"steps:\n  - log: '{template}'\n")
    if not warning:
        assert diags == []
        return
    d = only(diags)
    assert d.severity == "warning" and (d.line, d.key) == (8, "steps[0].log")
    assert d.message == f"{warning} is not in the notification schema of github/webhook-trigger"
    assert d.hint.startswith(hint)


def test_if_conditions_without_braces_are_checked_too(tmp_path: Path) -> None:
    d = only(problems(tmp_path, GITHUB_TRIGGER + "steps:\n  - if: trigger.body.reff == 'x'\n    log: a\n"))
    assert d.key == "steps[0].if" and d.hint == "did you mean 'ref'?"


def test_a_disabled_flow_is_still_validated(tmp_path: Path) -> None:
    d = only(problems(tmp_path, "enabled: false\ntrigger: {connector: gihub}\n"))
    assert d.message == "unknown connector 'gihub'"


def test_call_steps_refer_to_existing_operations_and_connections(tmp_path: Path) -> None:
    flow = "trigger: {connector: http}\nsteps:\n" + "\n".join([
        "  - call: {connector: github, operation: create-issue-coment, connection: github}",
        "  - call: {connector: github, operation: create-issue-comment, connection: nope,"
        " parameters: {owner: o, repo: r, issue_number: '{{ trigger.body.n }}'}}",
        "  - call: {connector: github, operation: create-issue-comment,"
        " parameters: {owner: o, repo: r, issue_number: seven}}",
    ]) + "\n"
    diags = problems(tmp_path, flow)
    assert [(d.line, d.key, d.message) for d in diags] == [
        (3, "steps[0].call.operation", "connector 'github' has no operation 'create-issue-coment'"),
        (4, "steps[1].call.connection", "unknown connection 'nope'"),
        (5, "steps[2].call.parameters.issue_number", "parameter 'issue_number' should be an integer, not the string 'seven'"),
    ]


@pytest.mark.parametrize(
    ("value", "schema", "problem"),
    [
        ("x", {"type": "string"}, ""),
        (1, {"type": "string"}, "should be a string, not the number 1"),
        (True, {"type": "integer"}, "should be an integer, not the boolean true"),
        (1.5, {"type": "number"}, ""),
        ("{{ x }}", {"type": "integer"}, ""),
        ("push", {"type": "string", "enum": ["pull"]}, "should be one of pull, not 'push'"),
        ({}, {}, ""),
    ],
)
def test_type_problem(value: object, schema: dict[str, object], problem: str) -> None:
    assert type_problem(value, schema) == problem


def test_templates_may_read_only_allow_listed_env_and_earlier_steps(tmp_path: Path) -> None:
    flow = GITHUB_TRIGGER.replace("repo: r", "repo: '{{ env.REPO }}'") + "\n".join([
        "steps:",
        "  - {id: first, log: \"{{ env.TOPIC }} {{ env['HOME'] }}\"}",
        "  - {id: second, log: \"{{ steps.first.output }} {{ steps.third.output }}\"}",
        "  - {id: third, log: \"{{ steps.frist.output }}\"}",
    ]) + "\n"
    diags = problems(tmp_path, flow, settings="public_url: https://x\nenv: [TOPIC, REPO]\n")
    assert [(d.line, d.severity, d.message, d.hint) for d in diags] == [
        (8, "warning", "env.HOME is not in the env allow-list of hookd.yaml: templates cannot read it",
         "add it to hookd.yaml: env: [HOME]"),
        (9, "warning", "steps.third is read before step 'third' has run",
         "a step can only read the output of the steps before it"),
        (10, "warning", "no step 'frist' in this flow (steps.frist)", "did you mean 'first'?"),
    ]


def test_an_enabled_webhook_flow_with_a_local_public_url_is_warned(tmp_path: Path) -> None:
    d = only(problems(tmp_path, GITHUB_TRIGGER, settings="public_url: http://127.0.0.1:8080\n"))
    assert (d.severity, d.line, d.key) == ("warning", 2, "trigger")
    assert d.message == "public_url http://127.0.0.1:8080 is a local address: api.github.com cannot deliver to it"
    assert problems(tmp_path, "enabled: false\n" + GITHUB_TRIGGER, settings="public_url: http://localhost\n") == []
    assert problems(tmp_path, "trigger: {connector: http}\n", settings="public_url: http://[::1]:80\n") == []


def test_a_local_public_url_is_fine_when_the_upstream_is_local_too(tmp_path: Path) -> None:
    """A local Gitea or a test fake reaches a loopback public_url: no warning, so
    `hookd check --strict` passes for a local setup."""
    local = "connector: github\nbase_url: http://127.0.0.1:3000/api\nparameters:\n  token: ${env:GITHUB_TOKEN}\n"
    assert problems(tmp_path, GITHUB_TRIGGER, settings="public_url: http://127.0.0.1:8080\n",
                    connections={"github": local}) == []


def test_parameter_sets_and_parameters_policies_read(tmp_path: Path) -> None:
    """The connection's set decides which parameters are required; a parameter a policy
    reads must be given."""
    import json

    from hookd.connectors.loader import load_connector

    d = tmp_path / "lib" / "Multi"
    d.mkdir(parents=True)
    (d / "apiDefinition.swagger.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "M", "version": "1"}, "host": "m.example",
        "paths": {"/x": {"get": {"operationId": "x", "responses": {"200": {"description": "ok"}}}}}}))
    (d / "apiProperties.json").write_text(json.dumps({"properties": {
        "connectionParameterSets": {"values": [
            {"name": "oauth", "parameters": {"token": {"type": "oauthSetting"}}},
            {"name": "basic", "parameters": {
                "username": {"type": "string", "uiDefinition": {"constraints": {"required": "true"}}},
                "password": {"type": "securestring"}}}]},
        "policyTemplateInstances": [{"templateId": "dynamichosturl", "parameters": {
            "x-ms-apimTemplateParameter.urlTemplate": "https://@connectionParameters('tenant').m.example"}}]}}))
    multi, _ = load_connector(d)
    assert multi is not None
    write_config(tmp_path / "cfg", flows={}, connections={
        "a": "connector: multi\nparameter_set: basic\nparameters: {password: '${env:P}', tenant: t}\n",
        "b": "connector: multi\nparameter_set: oath\n",
        "c": "connector: multi\nparameters: {token: '${env:P}'}\n",
    })
    _, diags = load_config(tmp_path / "cfg", connectors={**connectors(), "multi": multi},
                           env={**ENV, "P": "x"})
    text = [(d.file.name, d.severity, d.message, d.hint) for d in diags]
    assert text == [
        ("a.yaml", "error", "missing connection parameter 'username' of connector 'multi'", ""),
        ("b.yaml", "error", "connector 'multi' has no parameter set 'oath'", "did you mean 'oauth'?"),
        ("c.yaml", "error", "missing connection parameter 'tenant': connector 'multi' uses it in "
                            "its dynamichosturl policy", "add parameters: {tenant: …}"),
    ]

"""`hookd connectors`: text and stable JSON, diagnostics on stderr, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hookd.cli.main import main

DATA = Path(__file__).parent / "data" / "connectors"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["connectors", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_of_the_builtins_is_stable_and_documented(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not a config directory: the built-ins alone
    monkeypatch.delenv("HOOKD_CONFIG", raising=False)
    code, out, err = run(capsys, "--format", "json")
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert out == json.dumps(document, indent=2, sort_keys=True) + "\n"
    assert document["version"] == 1 and document["diagnostics"] == []
    assert [c["name"] for c in document["connectors"]] == ["gitea", "github", "gitlab", "http"]
    github = document["connectors"][1]
    assert set(github) == {
        "actions", "auth", "base_url", "connection_parameters", "delivery_id_header",
        "event_header", "name", "origin", "parameter_sets", "ping_event", "policies", "source",
        "title", "triggers", "verification"}
    assert (github["origin"], github["source"]) == ("builtin", "<builtin>/github")
    [trigger] = github["triggers"]
    assert trigger == {
        "batch": False,
        "delete": {"id_field": "id", "id_param": "hook_id", "kind": "operation",
                   "operation_id": "deleteHook", "source": "x-hookd-delete"},
        "kind": "webhook",
        "list": {"id_field": "id", "items_field": "", "operation_id": "listHooks",
                 "url_field": "config.url"},
        "location_header": True,
        "method": "POST",
        "notification_schema": True,
        "notification_url": "body.config.url",
        "operation_id": "webhook-trigger",
        "path": "/repos/{owner}/{repo}/hooks",
        "policies": [],
        "policies_not_applied": [],
        "secret": "body.config.secret",
        "summary": "When something happens in a repository (push by default)",
        "supported": True,
        "update": {"id_param": "hook_id", "operation_id": "updateHook"},
    }
    http = document["connectors"][3]
    assert [(t["kind"], t["supported"]) for t in http["triggers"]] == [("request", True)]


def test_directory_of_connectors_with_a_broken_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(DATA))
    assert code == 1
    assert "XSOAR/apiDefinition.swagger.json:10:7: error: invalid JSON: Expecting ',' delimiter" in err
    assert "_flow-docs-github-sample  [config]  GitHub" in out
    assert "    callback URL: body.config.url" in out
    assert "    delete: Location header, else DeleteTrigger (child-path) with hook_Id = response.id" in out
    assert "gitlab" not in out  # a plain directory of connectors: no built-ins added


def test_json_carries_diagnostics_and_polling_triggers(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    (tmp_path / "hookd.yaml").write_text("public_url: https://hooks.example.net\n")
    (tmp_path / "connectors").mkdir()
    (tmp_path / "connectors" / "poller.yaml").write_text(
        "swagger: '2.0'\ninfo: {title: Poller, version: '1'}\npaths:\n"
        "  /items:\n    get: {operationId: poll, x-ms-trigger: batch, responses: {}}\n"
        "x-hookd-delivery-id: 'Bad Header'\n")
    code, out, err = run(capsys, str(tmp_path), "--format", "json")
    assert code == 1
    assert "connectors/poller.yaml:6:1: error: must be an HTTP header name" in err
    document = json.loads(out)
    names = [c["name"] for c in document["connectors"]]
    assert names == ["gitea", "github", "gitlab", "http", "poller"]
    poller = document["connectors"][-1]
    assert (poller["origin"], poller["source"]) == ("config", "poller.yaml")
    assert [(t["kind"], t["supported"], t["batch"]) for t in poller["triggers"]] == [
        ("polling", False, True)]
    [diag] = document["diagnostics"]
    assert (diag["line"], diag["col"], diag["severity"], diag["key"]) == (6, 1, "error", "x-hookd-delivery-id")


def test_config_connector_overrides_a_builtin(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "connectors").mkdir()
    shutil.copytree(DATA / "_flow-docs-github-sample", tmp_path / "connectors" / "github")
    code, out, _ = run(capsys, str(tmp_path))
    assert code == 0
    assert "github  [config]  GitHub  (github)" in out
    assert "DeleteTrigger (child-path)" in out


def test_missing_directory_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, str(tmp_path / "nope"))
    assert (code, out) == (2, "")
    assert "does not exist" in err


def test_every_json_key_and_extension_is_documented(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hookd.connectors import extensions as connector_extensions

    docs = (Path(__file__).resolve().parent.parent / "docs" / "connectors.md").read_text()
    reference = docs[docs.index("### JSON output"):]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOOKD_CONFIG", raising=False)
    _, out, _ = run(capsys, "--format", "json")
    document = json.loads(out)
    github = document["connectors"][1]
    keys = {f"`{k}`" for k in document}
    keys |= {f"`connectors[].{k}" for k in github if k not in ("triggers", "actions")}
    keys |= {f"connectors[].triggers[].{k}" for k in github["triggers"][0]}
    for key in sorted(keys):
        bare = key.strip("`").rsplit(".", 1)[-1]
        documented = (key in reference or f".{bare}`" in reference
                      or f"{key.rstrip('`')}[]" in reference)
        assert documented, f"{key} is not documented"
    for extension in connector_extensions.KNOWN:
        assert f"### `{extension}`" in docs, f"{extension} has no section in docs/connectors.md"


def test_an_oauth_connection_parameter_is_the_connectors_auth(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """No securityDefinitions, OAuth declared in apiProperties.json (as DocuSign does)."""
    one = tmp_path / "Signer"
    one.mkdir()
    (one / "apiDefinition.swagger.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "Signer", "version": "1"},
        "host": "api.signer.example", "basePath": "/", "paths": {}}))
    (one / "apiProperties.json").write_text(json.dumps({"properties": {"connectionParameters": {
        "token": {"type": "oauthSetting", "oAuthSettings": {"identityProvider": "Signer"}}}}}))
    for where in (tmp_path, one):  # a directory of connectors, or one connector's own
        code, out, _ = run(capsys, str(where))
        assert code == 0 and "Signer  [config]" in out
        assert "auth: oauth2, credential from 'token'" in out


def test_docusign_shows_its_oauth(capsys: pytest.CaptureFixture[str], shared_dir: Path) -> None:
    code, out, err = run(capsys, str(shared_dir / "corpus" / "powerplatform" / "DocuSign"))
    assert code == 0, err
    assert "auth: oauth2, credential from 'token'" in out and "auth: none" not in out


def _policy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "lib" / "Tenant"
    d.mkdir(parents=True)
    (d / "apiDefinition.swagger.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "T", "version": "1"}, "host": "t.example",
        "securityDefinitions": {"k": {"type": "apiKey", "in": "header", "name": "X-Key"}},
        "paths": {"/hooks": {"post": {"operationId": "Sub", "x-ms-trigger": "single",
                                      "parameters": [{"name": "b", "in": "body", "schema": {
                                          "type": "object", "properties": {"url": {
                                              "type": "string", "x-ms-notification-url": True}}}}],
                                      "responses": {"201": {"description": "ok"}}}},
                  "/items": {"get": {"operationId": "List", "responses": {"200": {"description": "ok"}}}}}}))
    (d / "apiProperties.json").write_text(json.dumps({"properties": {
        "connectionParameters": {"api_key": {"type": "securestring"}},
        "policyTemplateInstances": [
            {"templateId": "SetHeader", "parameters": {
                "x-ms-apimTemplateParameter.name": "X-App", "x-ms-apimTemplateParameter.value": "hookd",
                "x-ms-apimTemplate-policySection": "Request",
                "x-ms-apimTemplate-operationName": ["Sub"]}},
            {"templateId": "updatenextlink", "parameters": {
                "x-ms-apimTemplateParameter.nextLinkPropertyName": "next",
                "x-ms-apimTemplate-operationName": ["List"]}}]}}))
    return tmp_path / "lib"


def test_one_connector_with_its_policies_per_operation(capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    lib = _policy_dir(tmp_path)
    code, out, err = run(capsys, str(lib), "Tenant")
    assert code == 0
    assert "  trigger Sub: webhook  POST /hooks\n" in out
    assert "    policy: setheader X-App = hookd\n" in out
    assert ("  action List: GET /items\n    policy: updatenextlink 'updatenextlink'"
            not in out)  # no title given: the id alone
    assert "    policy: updatenextlink  [not applied: hookd does not implement this template]" in out
    assert "parameters: api_key — apiKey in header X-Key from 'api_key'" in out
    # The unapplied template is also a warning naming the operations it changes.
    assert "policy template 'updatenextlink' is not applied by hookd" in err and "changes List" in err
    code, out, _ = run(capsys, str(lib), "Tenant", "--format", "json")
    (doc,) = json.loads(out)["connectors"]
    assert doc["triggers"][0]["policies"] == ["setheader X-App = hookd"]
    assert doc["actions"][0]["policies_not_applied"] == [
        "updatenextlink: hookd does not implement this template"]
    assert doc["parameter_sets"] == [{"name": "", "title": "", "parameters": ["api_key"],
                                      "credentials": ["apiKey in header X-Key from 'api_key'"]}]
    code, _, err = run(capsys, str(lib), "Tenent")
    assert code == 2 and "no connector 'Tenent'; did you mean 'Tenant'?" in err

"""The connector loader on real corpus files (tests/data/connectors) and small specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hookd.connectors import loader as openapi
from hookd.connectors import refs as swagger
from hookd.connectors.model import Connector, DeleteStrategy
from hookd.diagnostics import Diagnostic

DATA = Path(__file__).parent / "data" / "connectors"


def write_spec(tmp_path: Path, spec: dict[str, Any] | str, name: str = "demo.json") -> Path:
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec, indent=2))
    return path


def load(path: Path) -> tuple[Connector, list[Diagnostic]]:
    connector, diags = openapi.load_connector(path)
    assert connector is not None, [d.format() for d in diags]
    return connector, diags


def spec_with(paths: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"swagger": "2.0", "info": {"title": "Demo", "version": "1"}, "host": "api.example.net",
            "basePath": "/v1", "paths": paths, **top}


def hook_post(body_schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"operationId": "onEvent", "x-ms-trigger": "single",
            "parameters": [{"name": "body", "in": "body", "schema": body_schema}],
            "responses": {"201": {"description": "ok"}}, **extra}


# --------------------------------------------------------------------------- real files


def test_github_sample_from_the_flow_docs() -> None:
    github, diags = load(DATA / "_flow-docs-github-sample")
    assert [d.message for d in diags] == [
        "no apiProperties.json: connection parameters are derived from securityDefinitions"]
    assert github.name == "_flow-docs-github-sample"
    assert github.base_url == "https://api.github.com"
    webhook = github.webhooks["webhook-trigger"]
    # Reached through $ref #/definitions/WebhookRequestBody, nested in config.
    assert webhook.notification_url == ("body", "config", "url")
    # x-ms-notification-content sits on the path item, next to "post".
    schema = webhook.notification_schema
    assert schema is not None
    assert schema["properties"]["pusher"]["properties"]["name"]["type"] == "string"
    # No Location header declared: the DELETE next to it is the fallback.
    assert webhook.delete == DeleteStrategy("operation", "DeleteTrigger", "hook_Id", "id", "child-path")
    op = github.operations["webhook-trigger"]
    assert op.method == "POST" and op.path == "/repos/{owner}/{repo}/hooks"
    assert op.body_schema is not None and "$ref" not in json.dumps(op.body_schema)
    assert op.body_schema["properties"]["events"]["default"] == ["push"]
    assert [p.name for p in op.parameters if p.required] == ["owner", "repo"]
    assert not op.location_header
    assert github.trigger_kind("userRepos") is None
    assert github.auth.kind == "oauth2"
    assert set(github.connection_parameters) == {"token"}


def test_dirty_file_with_bom_and_nested_ref() -> None:
    bookings, diags = load(DATA / "Microsoft Bookings")
    assert [d.format() for d in diags] == [
        f"{DATA}/Microsoft Bookings/apiDefinition.swagger.json:1:1: warning: UTF-8 byte-order "
        "mark at the start of the file; hint: save the file as UTF-8 without BOM"]
    assert sorted(bookings.webhooks) == ["CancelAppointment", "CreateAppointment", "UpdateAppointment"]
    for webhook in bookings.webhooks.values():
        assert webhook.notification_url == ("body", "webhook", "notification_url")
        assert webhook.delete.operation_id == "DeleteWebhook"
        assert webhook.delete.source == "sibling"
        assert webhook.delete.id_param == "WebhookId"


def test_unparseable_file_reports_line_and_column_and_others_still_load() -> None:
    connectors, diags = openapi.load_connector_dir(DATA)
    assert "XSOAR" not in connectors
    assert {"_flow-docs-github-sample", "Microsoft Bookings"} <= set(connectors)
    errors = [d.format() for d in diags if d.is_error]
    assert errors == [f"{DATA}/XSOAR/apiDefinition.swagger.json:10:7: error: invalid JSON: "
                      "Expecting ',' delimiter"]


# --------------------------------------------------------------------------- notification URL


def test_notification_url_is_found_through_refs_allof_and_nesting(tmp_path: Path) -> None:
    spec = spec_with(
        {"/subscriptions": {"post": hook_post({"$ref": "#/definitions/Sub"})}},
        definitions={
            "Sub": {"allOf": [{"$ref": "#/definitions/Base"},
                              {"properties": {"properties": {"$ref": "#/definitions/Dest"}}}]},
            "Base": {"properties": {"name": {"type": "string"}}},
            "Dest": {"properties": {"destination": {"properties": {
                "endpointUrl": {"type": "string", "x-ms-notification-url": True}}}}},
            # Unused: a flagged property no operation reaches must not count.
            "Unused": {"properties": {"callbackUrl": {"type": "string", "x-ms-notification-url": True}}},
        },
    )
    demo, diags = load(write_spec(tmp_path, spec))
    assert diags == []
    assert demo.webhooks["onEvent"].notification_url == (
        "body", "properties", "destination", "endpointUrl")


def test_notification_url_on_a_query_parameter(tmp_path: Path) -> None:
    post = {"operationId": "sub", "x-ms-trigger": "single", "parameters": [
        {"name": "callback", "in": "query", "type": "string", "x-ms-notification-url": True}],
        "responses": {}}
    demo, _ = load(write_spec(tmp_path, spec_with({"/sub": {"post": post}})))
    assert demo.webhooks["sub"].notification_url == ("query", "callback")


def test_notification_url_by_name_alone_is_not_a_webhook(tmp_path: Path) -> None:
    post = hook_post({"properties": {"notificationUrl": {"type": "string"}}})
    demo, _ = load(write_spec(tmp_path, spec_with({"/sub": {"post": post}})))
    assert demo.webhooks == {}
    assert demo.polling == ("onEvent",)
    assert demo.trigger_kind("onEvent") == "polling"


def test_polling_triggers_are_recognised(tmp_path: Path) -> None:
    get = {"operationId": "poll", "x-ms-trigger": "batch",
           "x-ms-trigger-metadata": {"mode": "polling"}, "responses": {"200": {"description": "ok"}}}
    demo, _ = load(write_spec(tmp_path, spec_with({"/items": {"get": get}})))
    assert demo.polling == ("poll",)
    assert demo.operations["poll"].trigger == "batch"


def test_notification_content_on_the_operation_wins_over_the_path_item(tmp_path: Path) -> None:
    post = hook_post({"properties": {"url": {"type": "string", "x-ms-notification-url": True}}})
    post["x-ms-notification-content"] = {"schema": {"properties": {"from_op": {"type": "string"}}}}
    item = {"post": post,
            "x-ms-notification-content": {"schema": {"properties": {"from_item": {"type": "string"}}}}}
    demo, _ = load(write_spec(tmp_path, spec_with({"/sub": item})))
    schema = demo.webhooks["onEvent"].notification_schema
    assert schema is not None and list(schema["properties"]) == ["from_op"]


def test_recursive_schemas_terminate(tmp_path: Path) -> None:
    spec = spec_with(
        {"/sub": {"post": hook_post({"$ref": "#/definitions/Node"})}},
        definitions={"Node": {"type": "object", "properties": {
            "url": {"type": "string", "x-ms-notification-url": True},
            "children": {"type": "array", "items": {"$ref": "#/definitions/Node"}}}}},
    )
    demo, diags = load(write_spec(tmp_path, spec))
    assert diags == []
    body = demo.operations["onEvent"].body_schema
    assert body is not None
    assert body["properties"]["children"]["items"] == {"x-hookd-recursive": "#/definitions/Node"}
    json.dumps(body)  # finite
    assert demo.webhooks["onEvent"].notification_url == ("body", "url")


def test_unresolved_ref_is_reported_with_position_and_loading_goes_on(tmp_path: Path) -> None:
    spec = spec_with(
        {"/sub": {"post": hook_post({"$ref": "#/definitions/Subscripton"})}},
        definitions={"Subscription": {"properties": {}}},
    )
    path = write_spec(tmp_path, spec)
    demo, diags = load(path)
    [diag] = diags
    assert diag.format() == (f"{path}:19:23: warning: unresolved $ref '#/definitions/Subscripton'; "
                             "treated as {}; hint: did you mean 'Subscription'?")
    assert demo.polling == ("onEvent",)


def test_parameter_refs_and_path_item_parameters(tmp_path: Path) -> None:
    item = {"parameters": [{"$ref": "#/parameters/Tenant"}],
            "get": {"operationId": "list", "parameters": [
                {"name": "top", "in": "query", "type": "integer", "default": 10}], "responses": {}}}
    spec = spec_with({"/t/{tenant}/items": item},
                     parameters={"Tenant": {"name": "tenant", "in": "path", "type": "string"}})
    demo, _ = load(write_spec(tmp_path, spec))
    params = demo.operations["list"].parameters
    assert [(p.name, p.location, p.required, p.default) for p in params] == [
        ("tenant", "path", True, None), ("top", "query", False, 10)]


# --------------------------------------------------------------------------- delete matching


D = swagger.DeleteCandidate


@pytest.mark.parametrize(
    ("trigger", "deletes", "expected"),
    [
        ("/hooks", [D("d", "/hooks/{id}")], ("d", "child-path", "id")),
        ("/api/v2/webhooks/", [D("d", "/api/v2/webhooks/{webhook_uuid}/")], ("d", "child-path", "webhook_uuid")),
        ("/smartDialogs", [D("d", "/smartDialogs/{tenantId}/{id}")], ("d", "child-path", "id")),
        ("/account/{AccountId}/callback", [D("d", "/account/{accountId}/callback/{callbackId}")],
         ("d", "child-path", "callbackId")),
        ("/webhooks/objectcreated", [D("d", "/webhooks/{webhookId}")], ("d", "sibling", "webhookId")),
        ("/v1/subscriptions/event/dataobject",
         [D("DeleteSubscription", "/v1/subscriptions/{subscriptionId}/event/{type}")],
         ("DeleteSubscription", "shared-prefix", "type")),
        ("/api/manageIntegrations", [D("d", "/api/manageIntegrations", ("integrationId",))],
         ("d", "same-path", "integrationId")),
        ("/api/manageIntegrations", [D("d", "/api/manageIntegrations")], None),  # no id to send
        # child beats sibling beats shared prefix, whatever the order
        ("/x/hooks", [D("p", "/x/{a}/other/{b}"), D("s", "/x/{id}"), D("c", "/x/hooks/{id}")],
         ("c", "child-path", "id")),
        # never a business object: ForceManager's POST /accounts/hooks/insert
        ("/accounts/hooks/insert", [D("DeleteWebhook", "/hooks/{id}"), D("DeleteAccount", "/accounts/{id}")],
         ("DeleteWebhook", "hook-like", "id")),
        ("/contacts/subscribe", [D("DeleteContact", "/contacts/{id}")], None),
        # AtBot: the admin item shares /api/triggers, the hook registration is the one to call
        ("/api/triggers/webhooks/registerAdmin_SkillModified",
         [D("WebHookRegistrations_Delete", "/api/triggers/webhooks/delete_Admin", ("id",)),
          D("DeleteAdminItem", "/api/triggers/admin/AdminItems/{type}/{id}")],
         ("WebHookRegistrations_Delete", "shared-prefix", "id")),
        # generic prefixes relate nothing; two hook-like deletes are ambiguous
        ("/api/v1/hooks", [D("u", "/api/v1/users/{id}")], None),
        ("/SubscribeToFilings", [D("UnsubscribeA", "/UnsubscribeA/{id}"), D("UnsubscribeB", "/UnsubscribeB/{id}")],
         None),
        ("/hooks", [], None),
    ],
)
def test_match_delete(trigger: str, deletes: list[swagger.DeleteCandidate],
                      expected: tuple[str, str, str] | None) -> None:
    assert swagger.match_delete(trigger, deletes) == expected


def test_no_matching_delete_means_location_only(tmp_path: Path) -> None:
    post = hook_post({"properties": {"url": {"type": "string", "x-ms-notification-url": True}}})
    demo, _ = load(write_spec(tmp_path, spec_with({"/subscribe": {"post": post}})))
    assert demo.webhooks["onEvent"].delete == DeleteStrategy("location")


# --------------------------------------------------------------------------- x-hookd-*


def hookd_spec(**trigger_ext: Any) -> dict[str, Any]:
    post = hook_post({"properties": {
        "url": {"type": "string", "x-ms-notification-url": True},
        "secret": {"type": "string", "x-hookd-secret": True}}}, **trigger_ext)
    delete = {"operationId": "remove", "parameters": [
        {"name": "hookId", "in": "path", "type": "string", "required": True}], "responses": {}}
    listing = {"operationId": "listHooks", "responses": {}}
    return spec_with({"/hooks": {"post": post, "get": listing}, "/hooks/{hookId}": {"delete": delete}})


def test_hookd_extensions_on_top_level_and_operation(tmp_path: Path) -> None:
    spec = hookd_spec(**{"x-hookd-verify": {"kind": "token", "header": "X-Token"},
                         "x-hookd-delete": {"operation": "remove", "id_field": "hook.id"}})
    spec["x-hookd-verify"] = {"kind": "hmac-sha256", "header": "X-Sig", "prefix": "sha256="}
    spec["x-hookd-delivery-id"] = "X-Delivery"
    spec["x-hookd-event"] = {"header": "X-Event", "ping": "ping"}
    spec["x-hookd-list"] = {"operation": "listHooks", "url_field": "target", "items_field": "hooks"}
    demo, diags = load(write_spec(tmp_path, spec))
    assert diags == []
    assert demo.verification.kind == "hmac-sha256" and demo.verification.prefix == "sha256="
    assert (demo.delivery_id_header, demo.event_header, demo.ping_event) == ("X-Delivery", "X-Event", "ping")
    webhook = demo.webhooks["onEvent"]
    assert webhook.verification.kind == "token"  # the operation's own wins
    assert webhook.delivery_id_header == "X-Delivery"  # the top level fills in
    assert webhook.secret_path == ("body", "secret")
    assert webhook.delete == DeleteStrategy("operation", "remove", "hookId", "hook.id", "x-hookd-delete")
    assert webhook.list is not None
    assert (webhook.list.operation_id, webhook.list.url_field, webhook.list.items_field) == (
        "listHooks", "target", "hooks")


def test_hookd_extension_mistakes_are_errors_with_positions(tmp_path: Path) -> None:
    spec = hookd_spec(**{"x-hookd-verify": {"kind": "hmac-sha265", "header": "X-Sig"},
                         "x-hookd-delete": "remvoe",
                         "x-hookd-lsit": {"operation": "listHooks"}})
    spec["x-hookd-event"] = {"header": "X Event", "pnig": "ping"}
    path = write_spec(tmp_path, spec)
    _, diags = load(path)
    text = [d.format(relative_to=tmp_path) for d in sorted(diags)]
    assert text == [
        "demo.json:38:11: error: unknown verification kind 'hmac-sha265' (one of hmac-sha256, "
        'token, standard-webhooks, none) (paths["/hooks"].post.x-hookd-verify.kind); '
        "hint: did you mean 'hmac-sha256'?",
        "demo.json:41:9: error: x-hookd-delete: no operation 'remvoe' "
        '(paths["/hooks"].post.x-hookd-delete); hint: did you mean \'remove\'?',
        "demo.json:42:9: error: unknown extension 'x-hookd-lsit' "
        '(paths["/hooks"].post.x-hookd-lsit); hint: did you mean \'x-hookd-list\'?',
        "demo.json:67:5: error: must be an HTTP header name, e.g. 'X-Delivery-Id' (x-hookd-event.header)",
        "demo.json:68:5: error: unknown key 'pnig' (x-hookd-event.pnig); hint: did you mean 'ping'?",
    ]


def test_request_trigger_marker(tmp_path: Path) -> None:
    post = {"operationId": "manual", "x-ms-trigger": "single", "x-hookd-request-trigger": True,
            "responses": {}}
    demo, diags = load(write_spec(tmp_path, spec_with({"/": {"post": post}})))
    assert diags == []
    assert demo.request_trigger and demo.trigger_kind("manual") == "request"
    assert demo.webhooks == {} and demo.polling == ()


# --------------------------------------------------------------------------- auth, files


@pytest.mark.parametrize(
    ("definitions", "kind", "name", "location", "params"),
    [
        ({}, "none", "", "", set()),
        ({"b": {"type": "basic"}}, "basic", "", "", {"username", "password"}),
        ({"k": {"type": "apiKey", "in": "header", "name": "X-Key"}}, "apikey", "X-Key", "header", {"api_key"}),
        ({"k": {"type": "apiKey", "in": "query", "name": "code"}}, "apikey", "code", "query", {"api_key"}),
        ({"o": {"type": "oauth2", "flow": "accessCode"}}, "oauth2", "", "", {"token"}),
    ],
)
def test_auth_from_security_definitions(tmp_path: Path, definitions: dict[str, Any], kind: str,
                                        name: str, location: str, params: set[str]) -> None:
    demo, _ = load(write_spec(tmp_path, spec_with({}, securityDefinitions=definitions)))
    assert (demo.auth.kind, demo.auth.name, demo.auth.location) == (kind, name, location)
    assert set(demo.connection_parameters) == params


def test_connection_parameters_from_api_properties(tmp_path: Path) -> None:
    directory = tmp_path / "Demo"
    directory.mkdir()
    write_spec(directory, spec_with({}, securityDefinitions={
        "k": {"type": "apiKey", "in": "header", "name": "Authorization"}}), "apiDefinition.swagger.json")
    (directory / "apiProperties.json").write_text(json.dumps({"properties": {"connectionParameters": {
        "api_key": {"type": "securestring", "uiDefinition": {
            "description": "The key", "constraints": {"required": "true"}}},
        "region": {"type": "string", "uiDefinition": {"constraints": {"required": "false"}}}}}}))
    demo, diags = load(directory)
    # `region` reaches no request: no credential and no policy uses it.
    assert [(d.severity, d.key, d.line) for d in diags] == [
        ("warning", "properties.connectionParameters.region", 1)]
    assert "used by no credential or policy" in diags[0].message
    key = demo.connection_parameters["api_key"]
    assert (key.type, key.required, key.secret, key.description) == ("securestring", True, True, "The key")
    assert not demo.connection_parameters["region"].required
    assert demo.auth.parameter == "api_key"


def test_truncated_api_properties_is_a_warning(tmp_path: Path) -> None:
    directory = tmp_path / "Demo"
    directory.mkdir()
    write_spec(directory, spec_with({}, securityDefinitions={"b": {"type": "basic"}}),
               "apiDefinition.swagger.json")
    (directory / "apiProperties.json").write_text('{"properties": {"connectionParameters": {"user')
    demo, diags = load(directory)
    assert [d.severity for d in diags] == ["warning"]
    assert diags[0].line == 1 and "connection parameters are derived" in diags[0].message
    assert set(demo.connection_parameters) == {"username", "password"}


def test_yaml_single_file_connector_with_positions(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(
        "swagger: '2.0'\n"
        "info: {title: Demo, version: '1'}\n"
        "host: api.example.net\n"
        "x-hookd-verify:\n"
        "  kind: nope\n"
        "paths:\n"
        "  /hooks:\n"
        "    post:\n"
        "      operationId: sub\n"
        "      x-ms-trigger: single\n"
        "      parameters:\n"
        "        - {name: body, in: body, schema: {properties: {cb: {type: string, x-ms-notification-url: true}}}}\n"
    )
    demo, diags = load(path)
    assert demo.name == "demo"
    assert demo.webhooks["sub"].notification_url == ("body", "cb")
    assert [d.format(relative_to=tmp_path) for d in diags] == [
        "demo.yaml:5:3: error: unknown verification kind 'nope' (one of hmac-sha256, token, "
        "standard-webhooks, none) (x-hookd-verify.kind); hint: did you mean 'none'?"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("swagger: '2.0'\npaths: [\n", "demo.yaml:3:1: error: invalid YAML:"),
        ('{"openapi": "3.0.1", "paths": {}}', "demo.yaml:1:2: error: OpenAPI 3.0.1 is not supported"),
        ("[1, 2]", "demo.yaml: error: not an OpenAPI document"),
        ("info: {}", "demo.yaml: error: not a Swagger 2.0 document (no 'swagger' key)"),
    ],
)
def test_not_a_connector_is_an_error_not_an_exception(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    connector, diags = openapi.load_connector(path)
    assert connector is None
    assert diags[0].format(relative_to=tmp_path).startswith(expected)


def test_config_connectors_override_builtins_in_both_layouts(tmp_path: Path) -> None:
    connectors_dir = tmp_path / "connectors"
    connectors_dir.mkdir()
    write_spec(connectors_dir, spec_with({}, info={"title": "My GitHub", "version": "1"}), "github.json")
    (connectors_dir / "acme").mkdir()
    write_spec(connectors_dir / "acme", spec_with({}), "apiDefinition.swagger.json")
    (connectors_dir / "notes.txt").write_text("ignored")
    connectors, diags = openapi.load_connectors(tmp_path)
    assert {"github", "gitlab", "gitea", "http", "acme"} <= set(connectors)
    assert connectors["github"].title == "My GitHub" and not connectors["github"].builtin
    assert connectors["gitlab"].builtin
    assert [d.message for d in diags] == [
        "no apiProperties.json: connection parameters are derived from securityDefinitions"]


def test_builtin_dir_holds_the_builtins() -> None:
    assert sorted(p.name for p in openapi.builtin_dir().iterdir() if p.is_dir()) == [
        "gitea", "github", "gitlab", "http"]


def test_hookd_extensions_where_they_have_no_effect_are_flagged(tmp_path: Path) -> None:
    spec = spec_with({
        "/items": {"get": {"operationId": "list", "x-hookd-verify": "none",
                           "x-hookd-request-trigger": True, "responses": {}}},
        "/poll": {"get": {"operationId": "poll", "x-ms-trigger": "batch",
                          "x-hookd-delete": "none", "responses": {}}},
    })
    _, diags = load(write_spec(tmp_path, spec))
    assert sorted((d.severity, d.message, d.key) for d in diags) == [
        ("error", "x-hookd-request-trigger on an operation without x-ms-trigger",
         'paths["/items"].get.x-hookd-request-trigger'),
        ("warning", "x-hookd-delete has no effect on this operation: it is a polling trigger",
         'paths["/poll"].get.x-hookd-delete'),
        ("warning", "x-hookd-verify has no effect on this operation: it is not a trigger",
         'paths["/items"].get.x-hookd-verify'),
    ]


def test_docstring_examples() -> None:
    import doctest

    from hookd.connectors import extensions as connector_extensions
    from hookd.connectors import lenientjson

    for module in (swagger, connector_extensions, lenientjson):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_a_directory_and_a_file_with_the_same_name(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    write_spec(tmp_path / "demo", spec_with({}), "apiDefinition.swagger.json")
    (tmp_path / "demo" / "apiProperties.json").write_text('{"properties": {}}')
    write_spec(tmp_path, spec_with({}), "demo.yaml")
    connectors, diags = openapi.load_connector_dir(tmp_path)
    assert connectors["demo"].source == tmp_path / "demo"
    [diag] = diags
    assert diag.is_error and diag.file == tmp_path / "demo.yaml"
    assert "a second connector named 'demo'" in diag.message


def test_connection_parameter_sets_use_the_first_set(tmp_path: Path) -> None:
    directory = tmp_path / "Multi"
    directory.mkdir()
    write_spec(directory, spec_with({}, securityDefinitions={"o": {"type": "oauth2"}}),
               "apiDefinition.swagger.json")
    (directory / "apiProperties.json").write_text(json.dumps({"properties": {"connectionParameterSets": {
        "values": [{"name": "oauth", "parameters": {"token": {"type": "oAuthSetting"}}},
                   {"name": "key", "parameters": {"api_key": {"type": "securestring"}}}]}}}))
    demo, diags = load(directory)
    # The second set's key goes nowhere: no apiKey definition, no policy.
    assert [d.key for d in diags] == ["properties.connectionParameterSets.values[1].parameters.api_key"]
    assert list(demo.connection_parameters) == ["token"]
    assert demo.connection_parameters["token"].type == "oauthSetting"
    assert demo.connection_parameters["token"].secret
    assert [(s.name, [c.kind for c in s.credentials]) for s in demo.parameter_sets] == [
        ("oauth", ["oauth2"]), ("key", [])]


def test_unresolved_ref_in_yaml_has_a_position(tmp_path: Path) -> None:
    path = tmp_path / "demo.yml"
    path.write_text("swagger: '2.0'\ninfo: {title: Demo, version: '1'}\npaths:\n  /a:\n    get:\n"
                    "      operationId: a\n      parameters:\n        - $ref: '#/parameters/Nope'\n")
    _, diags = load(path)
    assert [d.format(relative_to=tmp_path) for d in diags] == [
        "demo.yml:8:18: warning: unresolved $ref '#/parameters/Nope'; treated as {}"]

"""Policy templates compile from apiProperties.json and change requests as Power Platform does."""

from __future__ import annotations

from typing import Any

import pytest

from hookd.connectors import policies as pol
from hookd.connectors.policies import Draft


def compiled(*entries: dict[str, Any]) -> tuple[pol.Policy, ...]:
    out, problems = pol.compile_policies(list(entries))
    assert problems == []
    return out


def header(name: str, value: str, **more: Any) -> dict[str, Any]:
    params = {"x-ms-apimTemplateParameter.name": name, "x-ms-apimTemplateParameter.value": value,
              "x-ms-apimTemplate-policySection": "Request", **more}
    return {"templateId": "setheader", "parameters": params}


def draft(**kw: Any) -> Draft:
    base: dict[str, Any] = {"method": "POST", "base_url": "https://api.example.com/v1",
                            "path": "/hooks"}
    return Draft(**{**base, **kw})


@pytest.mark.parametrize(("template", "conn", "query", "expected"), [
    ("@connectionParameters('instanceUrl')", {"instanceUrl": "https://t1.alemba.cloud/api"}, {},
     "https://t1.alemba.cloud/api"),
    ("@connectionParameters('HostUrl')/", {"hostUrl": "https://abc.mpxapi.com"}, {},  # Impexium
     "https://abc.mpxapi.com"),
    ("https://@connectionParameters('token:TenantId').example.com/rest/",
     {"token:TenantId": "abc"}, {}, "https://abc.example.com/rest"),
    ("@connectionParameters('instance_url', 'https://api.oneflow.com/v1')", {}, {},
     "https://api.oneflow.com/v1"),
    ("https://@queryParameters('domain').example.com", {}, {"domain": "eu"},
     "https://eu.example.com"),
    ("@connectionParameters('host')", {"host": "contoso.onalvao.com/AlvaoRestApi"}, {},
     "https://contoso.onalvao.com/AlvaoRestApi"),
    ("https://@connectionParameters('domain')", {"domain": "https://x.example"}, {},
     "https://x.example"),
    ("@connectionParameters('url')/api", {"url": "https://x.example/"}, {}, "https://x.example/api"),
])
def test_dynamic_host_replaces_the_backend_url(template: str, conn: dict[str, str],
                                               query: dict[str, str], expected: str) -> None:
    policies = compiled({"templateId": "dynamicHostUrl",
                         "parameters": {"x-ms-apimTemplateParameter.urlTemplate": template}})
    d = pol.apply(policies, "Create", draft(query=list(query.items())), conn)
    assert d.url() == expected + "/hooks"
    assert d.applied == [f"dynamichosturl {template}"]


def test_headers_override_skip_append_and_expressions() -> None:
    policies = compiled(
        header("Authorization", "Bearer @connectionParameters('api_key')",
               **{"x-ms-apimTemplateParameter.existsAction": "override"}),
        header("X-App", "ms_power_automate"),
        header("X-Skip", "new", **{"x-ms-apimTemplateParameter.existsAction": "skip"}),
        header("X-Append", "b", **{"x-ms-apimTemplateParameter.existsAction": "append"}),
        header("X-Copy", "@headers('X-App')!"),
        header("X-Default", "@connectionParameters('unset', 'dflt')"),
    )
    d = pol.apply(policies, "Create",
                  draft(headers=[("authorization", "k"), ("X-Skip", "old"), ("X-Append", "a")]),
                  {"api_key": "k"})
    assert dict(d.headers) == {"Authorization": "Bearer k", "X-App": "ms_power_automate",
                               "X-Skip": "old", "X-Append": "a,b", "X-Copy": "ms_power_automate!",
                               "X-Default": "dflt"}


def test_operation_filter_is_case_insensitive_and_empty_means_all() -> None:
    policies = compiled(
        header("X-All", "1", **{"x-ms-apimTemplate-operationName": []}),
        header("X-Only", "1", **{"x-ms-apimTemplate-operationName": ["CreateHook"]}),
    )
    assert dict(pol.apply(policies, "createhook", draft(), {}).headers) == {"X-All": "1", "X-Only": "1"}
    assert dict(pol.apply(policies, "DeleteHook", draft(), {}).headers) == {"X-All": "1"}
    # A URL the upstream handed out (Location): only every-operation header/query policies.
    located = pol.apply(policies, None, draft(path="https://api.example.com/v1/hooks/1",
                                              absolute=True), {})
    assert dict(located.headers) == {"X-All": "1"}
    assert located.url() == "https://api.example.com/v1/hooks/1"


def test_query_parameters() -> None:
    policies = compiled(*[
        {"templateId": "SetQueryParameter", "parameters": {
            "x-ms-apimTemplateParameter.name": name, "x-ms-apimTemplateParameter.value": value,
            "x-ms-apimTemplateParameter.existsAction": action}}
        for name, value, action in [("format", "json", "override"), ("page", "9", "skip"),
                                    ("tag", "b", "append"),
                                    ("inst", "@connectionParameters('token:3eInstanceId')", "override")]
    ])
    d = pol.apply(policies, "X", draft(query=[("format", "xml"), ("page", "1"), ("tag", "a")]),
                  {"token:3eInstanceId": "89"})
    assert d.query == [("page", "1"), ("tag", "a"), ("format", "json"), ("tag", "b"), ("inst", "89")]


def test_route_request_to_endpoint_changes_path_and_method() -> None:
    policies = compiled(
        {"templateId": "routerequesttoendpoint", "parameters": {
            "x-ms-apimTemplateParameter.newPath": "/webhook_subscriptions",
            "x-ms-apimTemplateParameter.httpMethod": "@Request.OriginalHTTPMethod",
            "x-ms-apimTemplate-operationName": ["CreateRoutingForm"]}},
        {"templateId": "routerequesttoendpoint", "parameters": {
            "x-ms-apimTemplateParameter.newPath":
                "/e/@connectionParameters('token:tenantId')/{service}/@queryParameters('cuid')",
            "x-ms-apimTemplateParameter.httpMethod": "DELETE",
            "x-ms-apimTemplate-operationName": ["Remove"]}},
    )
    routed = pol.apply(policies, "CreateRoutingForm", draft(path="/webhook_subscriptions/form"), {})
    assert (routed.method, routed.url()) == ("POST", "https://api.example.com/v1/webhook_subscriptions")
    removed = pol.apply(policies, "Remove",
                        draft(method="HEAD", path="/x/{service}", path_params={"service": "a b"},
                              query=[("cuid", "c1")]), {"token:tenantId": "t9"})
    assert (removed.method, removed.url()) == ("DELETE", "https://api.example.com/v1/e/t9/a%20b/c1")


def test_unfilled_path_placeholder_is_an_error() -> None:
    with pytest.raises(pol.PolicyError, match=r"\{id\}"):
        draft(path="/hooks/{id}").url()


def test_set_property_in_request_body() -> None:
    policies = compiled(
        {"templateId": "SetProperty", "parameters": {
            "x-ms-apimTemplateParameter.newPropertyParentPathTemplate": "@body()",
            "x-ms-apimTemplateParameter.newPropertySubPathTemplate": "topics",
            "x-ms-apimTemplateParameter.propertyValuePathTemplate": '["matter.created"]',
            "x-ms-apimTemplate-policySection": "Request"}},
        {"templateId": "setproperty", "parameters": {
            "x-ms-apimTemplateParameter.newPropertyParentPathTemplate": "@body().people",
            "x-ms-apimTemplateParameter.newPropertySubPathTemplate": "age",
            "x-ms-apimTemplateParameter.propertyValuePathTemplate": "30",
            "x-ms-apimTemplate-policySection": "Request"}},
        {"templateId": "setproperty", "parameters": {
            "x-ms-apimTemplateParameter.newPropertyParentPathTemplate": "@body()",
            "x-ms-apimTemplateParameter.newPropertySubPathTemplate": "filter",
            "x-ms-apimTemplateParameter.propertyValuePathTemplate": "eq(state, '{@body().state}')",
            "x-ms-apimTemplate-policySection": "Request"}},
    )
    d = pol.apply(policies, "Sub", draft(body={"state": "on", "people": [{"n": 1}, {"n": 2}]}), {})
    assert d.body == {"state": "on", "people": [{"n": 1, "age": "30"}, {"n": 2, "age": "30"}],
                      "topics": ["matter.created"], "filter": "eq(state, 'on')"}


def test_what_hookd_does_not_apply_is_compiled_with_a_reason() -> None:
    policies, problems = pol.compile_policies([
        {"templateId": "pollingtrigger", "parameters": {"x-ms-apimTemplate-operationName": ["Poll"]}},
        {"templateId": "setheader", "parameters": {
            "x-ms-apimTemplateParameter.name": "X", "x-ms-apimTemplateParameter.value": "1",
            "x-ms-apimTemplate-policySection": "Response"}},
        {"templateId": "dynamichosturl", "parameters": {}},
        {"title": "no id"},
        header("[[Dummy]]", "[[Dummy]]"),  # Assently E-Sign's
    ])
    assert [(p.template, p.applied, p.operations) for p in policies] == [
        ("pollingtrigger", False, ("Poll",)), ("setheader", False, ()), ("dynamichosturl", False, ()),
        ("setheader", False, ())]
    assert "does not implement" in policies[0].reason
    assert "response" in policies[1].reason
    assert [p[0] for p in problems] == [(2, "parameters", "x-ms-apimTemplateParameter.urlTemplate"),
                                        (3,), (4, "parameters", "x-ms-apimTemplateParameter.name")]
    d = pol.apply(policies, "Poll", draft(headers=[]), {})
    assert d.headers == [] and d.applied == []


def test_connection_parameters_a_policy_reads() -> None:
    (policy,) = compiled(header("A", "@connectionParameters('k') @connectionParameters('d', 'x')"))
    assert policy.connection_parameters() == {"k": False, "d": True}
    assert pol.references("@queryParameters('q')@header('h')") == [("queryparameters", "q", None),
                                                                   ("header", "h", None)]

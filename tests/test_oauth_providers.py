"""Which endpoints, scopes and client authentication each identity provider gets
(`hookd.oauth.providers`, `hookd.oauth.authorization`), over the real corpus and per kind;
and what `hookd check` says about an ``oauth:`` block."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from hookd.config.loader import load_config
from hookd.config.model import OAuthConfig
from hookd.connectors.lenientjson import load as load_json
from hookd.connectors.oauth import OAuthSettings, oauth_settings
from hookd.oauth import authorization as authz
from hookd.oauth.providers import GENERIC, PROVIDERS, OAuthError, endpoints, render
from tests.configdir import write_config

CLIENT = authz.Client("my-app", "my-secret", "http://127.0.0.1:5000/callback")


def test_every_oauth_setting_of_the_corpus_gets_endpoints(shared_dir: Path) -> None:
    """Placeholders of ``oauth2generic`` templates filled as a connection would; every
    provider the corpus names is one hookd knows."""
    found: Counter[str] = Counter()
    for path in sorted((shared_dir / "corpus" / "powerplatform").glob("*/apiProperties.json")):
        for settings in oauth_settings(load_json(path).value):
            found[settings.provider] += 1
            values: dict[str, str] = {}
            for _ in range(10):
                try:
                    ep = endpoints(settings, OAuthConfig("id"), values)
                    url = authz.authorization_url(ep, CLIENT, state="s1", verifier="v" * 43,
                                                  parameters=values)
                    break
                except OAuthError as exc:  # "needs 'customHost': set parameters.customHost"
                    assert exc.missing, (path, str(exc))
                    values[exc.missing] = "https://x.example.net" if exc.missing.endswith("Url") \
                        else "x.example.net"
            for url_ in (ep.authorization_url, ep.token_url, ep.refresh_url):
                # a placeholder may be the whole host part ("{BigEvalUrl}/connect/token")
                assert url_.startswith(("https://", "http://", "x.example.net")), (path, url_)
            query = parse_qs(url.split("?", 1)[1])  # also "https://go.lawvu.com/#/authorize?…"
            assert query["state"] == ["s1"] and query["code_challenge_method"] == ["S256"], path
    assert set(found) <= set(GENERIC) | set(PROVIDERS)
    assert found["oauth2"] >= 50 and found["aad"] >= 20 and found["oauth2generic"] >= 10


def settings(provider: str, scopes: tuple[str, ...] = (), **custom: str) -> OAuthSettings:
    return OAuthSettings(provider, scopes=scopes, custom={k.lower(): v for k, v in custom.items()})


def test_aad_uses_the_v2_endpoints_of_the_tenant_and_the_resource_as_scopes() -> None:
    s = settings("aad", ("User.Read",), loginUri="https://login.windows.net", tenantId="common",
                 resourceUri="https://graph.microsoft.com")
    ep = endpoints(s, OAuthConfig("id"), {})
    assert ep.authorization_url == "https://login.windows.net/common/oauth2/v2.0/authorize"
    assert ep.token_url == "https://login.windows.net/common/oauth2/v2.0/token"
    assert ep.scopes == ("https://graph.microsoft.com/User.Read", "offline_access")
    mine = endpoints(s, OAuthConfig("id", tenant="contoso.onmicrosoft.com", scopes=()), {})
    assert "/contoso.onmicrosoft.com/oauth2/v2.0/" in mine.token_url
    assert mine.scopes == ("https://graph.microsoft.com/.default", "offline_access")
    placeholder = settings("aad", tenantId="<<Please add your tenantId here>>")
    assert "/common/" in endpoints(placeholder, OAuthConfig("id"), {}).token_url


def test_docusign_authenticates_the_client_in_a_basic_header() -> None:
    ep = endpoints(settings("docusign", ("signature",), LoginUri="https://account-d.docusign.com"),
                   OAuthConfig("id"), {})
    assert ep.authorization_url == "https://account-d.docusign.com/oauth/auth"
    request = authz.refresh_request(ep, CLIENT, "rt-1")
    assert parse_qs(request.body) == {"grant_type": ["refresh_token"], "refresh_token": ["rt-1"]}
    assert base64.b64decode(request.headers["Authorization"][6:]) == b"my-app:my-secret"


def test_facebook_joins_scopes_with_commas() -> None:
    ep = endpoints(settings("facebook", ("pages_show_list", "user_posts")), OAuthConfig("id"), {})
    assert ep.scope == "pages_show_list,user_posts"
    assert ep.token_url.startswith("https://graph.facebook.com/")


def test_oauth2generic_templates_are_filled_from_the_connection_and_the_request() -> None:
    s = settings("oauth2generic", ("api",),
                 authorizationUrlTemplate="{BigEvalUrl}/connect/authorize",
                 authorizationUrlQueryStringTemplate="?response_type=code&client_id={ClientId}"
                                                     "&redirect_uri={RedirectUrl}&scope={Scopes}&state={State}",
                 tokenUrlTemplate="{BigEvalUrl}/connect/token",
                 tokenBodyTemplate="grant_type=authorization_code&code={Code}&client_id={ClientId}"
                                   "&client_secret={ClientSecret}&redirect_uri={RedirectUrl}")
    with pytest.raises(OAuthError, match="set parameters.BigEvalUrl"):
        endpoints(s, OAuthConfig("id"), {})
    ep = endpoints(s, OAuthConfig("id"), {"bigEvalUrl": "https://eval.example.net"})
    assert ep.token_url == "https://eval.example.net/connect/token"
    url = authz.authorization_url(ep, CLIENT, state="st", verifier="v" * 43)
    query = parse_qs(urlsplit(url).query)
    assert query["redirect_uri"] == [CLIENT.redirect_uri] and query["state"] == ["st"]
    assert query["code_challenge"] == [authz.challenge("v" * 43)]
    body = parse_qs(authz.code_request(ep, CLIENT, "c/1", "v" * 43).body)
    assert body["code"] == ["c/1"] and body["client_secret"] == ["my-secret"]
    assert body["code_verifier"] == ["v" * 43]


def test_an_unknown_provider_needs_explicit_endpoints() -> None:
    with pytest.raises(OAuthError, match="oauth.authorization_url and oauth.token_url"):
        endpoints(settings("salesforce"), OAuthConfig("id"), {})
    ep = endpoints(settings("salesforce"), OAuthConfig(
        "id", authorization_url="https://sf/authorize", token_url="https://sf/token"), {})
    assert (ep.authorization_url, ep.refresh_url) == ("https://sf/authorize", "https://sf/token")


def test_render_encodes_values_only_where_asked() -> None:
    assert render("{a}", {"a": "x y"}, encode=True) == "x%20y"
    assert render("{a}", {"a": "x y"}, encode=False) == "x y"


def test_check_reports_an_oauth_block_on_a_connector_without_oauth(tmp_path: Path) -> None:
    root = write_config(tmp_path, connections={
        "gh": "connector: github\noauth: {client_id: app, client_secret: written-in-the-file}\n",
        "lab": "connector: gitlab\noauth: {client_id: app}\n",
    })
    _, problems = load_config(root, resolve_secrets=False)
    found = {(d.file.name, d.severity, d.key, d.message) for d in problems}
    assert ("gh.yaml", "warning", "oauth.client_secret",
            "oauth.client_secret is a secret but is written in the file") in found
    assert ("lab.yaml", "error", "oauth", "connector 'gitlab' does not use OAuth 2.0") in found
    assert not any(f[0] == "gh.yaml" and f[1] == "error" for f in found)  # github is oauth2


def test_an_unknown_oauth_key_is_a_schema_error(tmp_path: Path) -> None:
    root = write_config(tmp_path, connections={"gh": """\
        connector: github
        oauth: {client_id: app, clientsecret: x}
    """})
    config, problems = load_config(root, resolve_secrets=False)
    assert config is None
    assert any("clientsecret" in d.message for d in problems), [d.format() for d in problems]

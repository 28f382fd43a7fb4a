"""Credentials per connector: securityDefinitions + apiProperties connection parameters."""

from __future__ import annotations

from hookd.connectors.auth import Credential, credentials, derived_parameters

ANNATURE = {"api_client_id": {"in": "header", "name": "X-Annature-Id", "type": "apiKey"},
            "api_key": {"in": "header", "name": "X-Annature-Key", "type": "apiKey"}}


def test_every_api_key_definition_goes_in_its_own_header() -> None:
    got = credentials(ANNATURE, {"api_client_id": "string", "api_key": "securestring"})
    assert got.credentials == (
        Credential("apikey", "X-Annature-Id", "header", "api_client_id", "api_client_id"),
        Credential("apikey", "X-Annature-Key", "header", "api_key", "api_key"))


def test_api_key_by_header_name_or_the_only_secret() -> None:
    defs = {"k": {"in": "header", "name": "X-Secret-Key", "type": "apiKey"}}
    assert credentials(defs, {"X-Secret-Key": "securestring"}).credentials[0].parameter == "X-Secret-Key"
    assert credentials(defs, {"key": "securestring", "site": "string"}).credentials[0].parameter == "key"
    query = credentials({"q": {"in": "query", "name": "apikey", "type": "apiKey"}}, {})
    assert query.credentials == (Credential("apikey", "apikey", "query", "api_key", "q"),)


def test_oauth_parameter_wins_over_the_security_definitions() -> None:
    got = credentials({"Basic": {"type": "basic"}}, {"token": "oauthSetting"}, "oauth")
    assert got.credentials == (Credential("oauth2", parameter="token"),)
    assert credentials({"o": {"type": "oauth2"}}, {"username": "securestring",
                                                   "password": "securestring"}).credentials \
        == (Credential("basic"),)


def test_without_api_properties_the_definitions_decide() -> None:
    basic = credentials({"b": {"type": "basic"}}, {})
    assert basic.credentials == (Credential("basic"),)
    assert set(derived_parameters(basic.credentials)) == {"username", "password"}
    assert credentials({"o": {"type": "oauth2"}}, {}).credentials == (Credential("oauth2", parameter="token"),)


def test_a_key_nothing_holds_is_reported() -> None:
    got = credentials({"k": {"in": "header", "name": "X-K", "type": "apiKey"}}, {"site": "string"})
    assert got.credentials == () and "no connection parameter" in got.problems[0]
    bad = credentials({"k": {"type": "apiKey"}}, {"api_key": "securestring"})
    assert "needs 'name' and 'in'" in bad.problems[0]

"""Where a connection's OAuth 2.0 endpoints are: the identity providers hookd knows.

Counted over the connectors' apiProperties.json ``identityProvider``
(``/work/shared/corpus/powerplatform``, 184 files, 97 OAuth settings: ``oauth2`` 54,
``aad`` 24, ``oauth2generic`` 14, ``aadcertificate`` 2, ``DocuSign`` 2, ``facebook`` 1;
the whole microsoft/PowerPlatformConnectors repository, 1,035 files, has the same six:
157 / 60 / 31 / 9 / 2 / 2). No named provider reaches 3 in either; the two named ones that
occur are in `PROVIDERS` anyway, so that every connector of the corpus can connect.

- ``oauth2``: the URLs are the connector's ``customParameters`` (``authorizationUrl``,
  ``tokenUrl``, ``refreshUrl``);
- ``oauth2generic``: the same from ``…UrlTemplate``, whose ``{placeholders}`` are filled
  from the connection's parameters (``{customHost}``, ``{region}``) and the request
  (``{clientId}``, ``{scopes}``, ``{redirectUrl}``, ``{state}``, ``{code}``,
  ``{refreshToken}``; names case-insensitive), with the connector's query-string and body
  templates where it gives them;
- ``aad`` / ``aadcertificate``: the Microsoft identity platform v2.0 endpoints under the
  connector's ``loginUri`` and tenant, the resource turned into scopes
  (``{resource}/.default``); a certificate credential is not supported, the operator's
  own app registration authenticates with its client secret;
- the named providers: well-known endpoints from the providers' public documentation.

A connection's ``oauth.authorization_url`` / ``oauth.token_url`` override any of them.
Pure code: `endpoints` decides, `render` fills a template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from hookd.config.model import OAuthConfig
from hookd.connectors.oauth import OAuthSettings

ClientAuth = Literal["post", "basic"]


class OAuthError(Exception):
    """The connection cannot do OAuth as configured; the message says what to change
    (`missing`: the template placeholder no parameter fills, if that is why)."""

    def __init__(self, message: str, *, missing: str = "") -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class Provider:
    """One row of `PROVIDERS`. ``{login}`` and ``{tenant}`` in the URLs are filled from
    the connector's ``customParameters`` (`login_keys`, ``tenantId``)."""

    authorization_url: str
    token_url: str
    docs: str  # where the endpoints are documented
    login_default: str = ""
    login_keys: tuple[str, ...] = ()
    client_auth: ClientAuth = "post"  # how the client authenticates at the token endpoint
    scope_delimiter: str = " "
    aad: bool = False  # resource → scopes, offline_access, tenant


_AAD = Provider(
    "{login}/{tenant}/oauth2/v2.0/authorize", "{login}/{tenant}/oauth2/v2.0/token",
    "https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow",
    login_default="https://login.microsoftonline.com", login_keys=("loginUri", "loginUriAAD"),
    aad=True,
)

# identityProvider (lower case) → endpoints. The generic kinds take theirs from the connector.
PROVIDERS: Mapping[str, Provider] = {
    "aad": _AAD,
    "aadcertificate": _AAD,
    # Confidential Authorization Code Grant: the integration key and secret key go in a
    # Basic Authorization header (account-d.docusign.com is the developer environment).
    "docusign": Provider(
        "{login}/oauth/auth", "{login}/oauth/token",
        "https://developers.docusign.com/platform/auth/reference",
        login_default="https://account.docusign.com", login_keys=("LoginUri",),
        client_auth="basic",
    ),
    # "Manually Build a Login Flow"; permissions are comma-separated, and Facebook issues
    # no refresh tokens (a long-lived user token lasts about 60 days: connect again).
    "facebook": Provider(
        "https://www.facebook.com/v21.0/dialog/oauth",
        "https://graph.facebook.com/v21.0/oauth/access_token",
        "https://developers.facebook.com/docs/facebook-login/guides/advanced/manual-flow",
        scope_delimiter=",",
    ),
}
GENERIC = ("oauth2", "oauth2generic")
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})


@dataclass(frozen=True)
class Endpoints:
    """Everything needed to ask a provider for tokens, decided for one connection."""

    provider: str
    authorization_url: str
    token_url: str
    refresh_url: str
    scopes: tuple[str, ...]
    scope_delimiter: str = " "
    client_auth: ClientAuth = "post"
    # oauth2generic: the connector's own templates (placeholders left for `render`).
    authorization_query: str = ""
    token_body: str = ""
    refresh_body: str = ""

    @property
    def scope(self) -> str:
        return self.scope_delimiter.join(self.scopes)


_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_:.-]+)\}")


def render(template: str, values: Mapping[str, str], *, encode: bool) -> str:
    """`template` with each ``{name}`` (any case) replaced from `values` (lower-case keys),
    URL-encoded when `encode` (query strings, form bodies). Raises `OAuthError` naming an
    unknown placeholder.

    >>> render("{Host}/token?x={code}", {"host": "https://h", "code": "a b"}, encode=True)
    'https%3A%2F%2Fh/token?x=a%20b'
    >>> render("{host}/t", {"host": "https://h"}, encode=False)
    'https://h/t'
    """
    def fill(match: re.Match[str]) -> str:
        name = match.group(1).lower().removeprefix("token:")
        if name not in values:
            raise OAuthError(f"the connector's OAuth template needs '{match.group(1)}': "
                             f"set parameters.{match.group(1)} on the connection",
                             missing=match.group(1))
        value = values[name]
        return quote(value, safe="") if encode else value
    return _PLACEHOLDER.sub(fill, template)


def _placeholder(value: str) -> bool:
    """Published connectors leave "<<Please add your tenantId here>>", "[[DUMMY]]"."""
    return not value or value[0] in "<[{" or " " in value


def _scopes(settings: OAuthSettings, conf: OAuthConfig) -> tuple[str, ...]:
    scopes = conf.scopes if conf.scopes is not None else settings.scopes
    # "DOCUMENT_READ DOCUMENT_WRITE" as one list item (Asite): several scopes.
    return tuple(s for item in scopes for s in item.split())


def _aad_scopes(scopes: tuple[str, ...], resource: str) -> tuple[str, ...]:
    """v2.0 scopes: a bare scope of a resource is qualified with it, the resource's
    ``.default`` when none names it, and ``offline_access`` for a refresh token."""
    resource = resource.rstrip("/")
    out = [s if s in OIDC_SCOPES or "://" in s or not resource or s.startswith("api://")
           else f"{resource}/{s}" for s in scopes]
    if resource and not any(s.startswith(resource) for s in out):
        out.append(f"{resource}/.default")
    if "offline_access" not in out:
        out.append("offline_access")
    return tuple(dict.fromkeys(out))


def endpoints(settings: OAuthSettings, conf: OAuthConfig, parameters: Mapping[str, str]) -> Endpoints:
    """The endpoints of a connection with the connector's `settings`, its ``oauth:`` block
    `conf` and its (resolved) connection `parameters`. Raises `OAuthError`."""
    values = {k.lower(): v for k, v in parameters.items()}
    if conf.tenant:
        values.setdefault("tenantid", conf.tenant)
    scopes = _scopes(settings, conf)
    name = settings.provider
    # Power Platform's per-connection OAuth parameters: "token:tokenUrl", "token:TenantId".
    own = {k.removeprefix(settings.parameter.lower() + ":"): v for k, v in values.items()
           if k.startswith(settings.parameter.lower() + ":")}
    if name in GENERIC:
        suffix = "UrlTemplate" if name == "oauth2generic" else "Url"
        urls = {k: own.get(k + "url") or settings.custom_value(k + suffix, k + "Url",
                                                                k + "UrlTemplate")
                for k in ("authorization", "token", "refresh")}
        auth = conf.authorization_url or render(urls["authorization"], values, encode=False)
        token = conf.token_url or render(urls["token"], values, encode=False)
        refresh = conf.token_url or (render(urls["refresh"], values, encode=False)
                                     if urls["refresh"] else token)
        for key, url in (("authorization", auth), ("token", token)):
            if not url or url.startswith("/"):
                raise OAuthError(f"the connector's {name} settings give no absolute {key} URL"
                                 f"{f' ({url})' if url else ''}: set oauth.{key}_url",
                                 missing=f"{settings.parameter}:{key}Url")
        if refresh.startswith("/"):
            refresh = token
        delimiter = settings.custom_value("scopeListDelimiter") or " "
        return Endpoints(name, auth, token, refresh, scopes, delimiter,
                         authorization_query=settings.custom_value(
                             "authorizationUrlQueryStringTemplate"),
                         token_body=settings.custom_value("tokenBodyTemplate"),
                         refresh_body=settings.custom_value("refreshBodyTemplate"))
    provider = PROVIDERS.get(name)
    if provider is None:
        if conf.authorization_url and conf.token_url:
            return Endpoints(name, conf.authorization_url, conf.token_url, conf.token_url, scopes)
        raise OAuthError(f"identity provider '{settings.provider}' is not known to hookd "
                         f"(known: {', '.join(sorted((*GENERIC, *PROVIDERS)))}): set "
                         "oauth.authorization_url and oauth.token_url")
    login = next((v for k in provider.login_keys if not _placeholder(v := settings.custom_value(k))),
                 provider.login_default).rstrip("/")
    tenant = conf.tenant or own.get("tenantid") or next(
        (v for v in (settings.custom_value("tenantId"),) if not _placeholder(v)), "common")
    fill = {"login": login, "tenant": tenant}
    if provider.aad:
        resource = conf.resource or own.get("resourceuri") or settings.custom_value("resourceUri")
        scopes = _aad_scopes(scopes, "" if _placeholder(resource) else resource)
    token = conf.token_url or render(provider.token_url, fill, encode=False)
    return Endpoints(name, conf.authorization_url or render(provider.authorization_url, fill,
                                                            encode=False),
                     token, token, scopes, provider.scope_delimiter, provider.client_auth)

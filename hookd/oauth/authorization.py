"""The authorization-code grant with PKCE (RFC 6749 §4.1, RFC 7636): the request a browser
opens, the redirect it comes back with, and the token requests that follow.

``hookd connect`` makes a fresh `state` and PKCE verifier per attempt; a redirect whose
``state`` differs is refused before its code is used (a forged or stale redirect), and
the code is only ever exchanged together with the verifier (S256), so a code that leaks
from a browser history is useless. Servers that do not know PKCE ignore the extra
parameters (RFC 6749 §3.1: unknown request parameters are ignored).

Token requests authenticate the client in the form body (``client_secret_post``) or in a
Basic header where the provider requires it (`hookd.oauth.providers.Provider.client_auth`).
An ``oauth2generic`` connector's own query-string and body templates are honoured, with
the PKCE parameters added. Pure code: randomness comes from the caller.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from hookd.oauth.providers import Endpoints, render


class AuthorizationError(Exception):
    """The redirect did not bring a usable code; the message says why (never a code)."""


@dataclass(frozen=True)
class Client:
    """The operator's app registration, secrets resolved."""

    client_id: str
    client_secret: str | None
    redirect_uri: str


@dataclass(frozen=True)
class TokenRequest:
    """A POST to the token endpoint (form-encoded)."""

    url: str
    body: str = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


def challenge(verifier: str) -> str:
    """The S256 code challenge of `verifier` (RFC 7636 §4.2; its appendix B example).

    >>> challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
    'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM'
    """
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _values(ep: Endpoints, client: Client, extra: Mapping[str, str]) -> dict[str, str]:
    values = {k.lower(): v for k, v in extra.items()}
    values.update({"clientid": client.client_id, "clientsecret": client.client_secret or "",
                   "redirecturl": client.redirect_uri, "redirecturi": client.redirect_uri,
                   "scopes": ep.scope, "scope": ep.scope})
    return values


def authorization_url(ep: Endpoints, client: Client, *, state: str, verifier: str,
                      parameters: Mapping[str, str] | None = None) -> str:
    """The URL the user opens to grant access.

    >>> from hookd.oauth.providers import Endpoints
    >>> ep = Endpoints("oauth2", "https://as/authorize", "https://as/token", "https://as/token", ("a", "b"))
    >>> authorization_url(ep, Client("id", None, "http://127.0.0.1:1/cb"), state="s",
    ...                   verifier="v" * 43)  # doctest: +ELLIPSIS
    'https://as/authorize?response_type=code&client_id=id&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb&scope=a+b&state=s&code_challenge=...&code_challenge_method=S256'
    """
    pkce = {"code_challenge": challenge(verifier), "code_challenge_method": "S256"}
    base = ep.authorization_url
    if ep.authorization_query:
        values = _values(ep, client, parameters or {})
        values["state"] = state
        query = render(ep.authorization_query.lstrip("?"), values, encode=True)
        if "state" not in parse_qs(query):  # hookd's check needs it, whatever the template
            pkce = {"state": state, **pkce}
        return f"{base}{'&' if '?' in base else '?'}{query}&{urlencode(pkce)}"
    params = {"response_type": "code", "client_id": client.client_id,
              "redirect_uri": client.redirect_uri}
    if ep.scopes:
        params["scope"] = ep.scope
    params["state"] = state
    params.update(pkce)
    return f"{base}{'&' if '?' in base else '?'}{urlencode(params)}"


def code_from_redirect(url: str, state: str) -> str:
    """The authorization code of the redirect `url`, after checking its `state`.

    >>> code_from_redirect("http://127.0.0.1:8/cb?code=c1&state=s", "s")
    'c1'
    >>> code_from_redirect("http://127.0.0.1:8/cb?error=access_denied&state=s", "s")
    Traceback (most recent call last):
      ...
    hookd.oauth.authorization.AuthorizationError: the provider refused: access_denied
    """
    query = parse_qs(urlsplit(url.strip()).query)
    if not query and "?" not in url:
        raise AuthorizationError("that is not a redirect URL (it has no query string); paste "
                                 "the whole address the browser was sent to")
    got = query.get("state", [""])[0]
    if got != state:
        raise AuthorizationError("the redirect's state does not match this attempt (a stale or "
                                 "forged redirect); run hookd connect again")
    if "error" in query:
        description = query.get("error_description", [""])[0][:200]
        raise AuthorizationError(f"the provider refused: {query['error'][0]}"
                                 f"{f' ({description})' if description else ''}")
    code = query.get("code", [""])[0]
    if not code:
        raise AuthorizationError("the redirect carries no code")
    return code


def _client_auth(ep: Endpoints, client: Client, form: dict[str, str]) -> dict[str, str]:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if ep.client_auth == "basic" and client.client_secret is not None:
        pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        form["client_id"] = client.client_id
        if client.client_secret is not None:
            form["client_secret"] = client.client_secret
    return headers


def code_request(ep: Endpoints, client: Client, code: str, verifier: str,
                 parameters: Mapping[str, str] | None = None) -> TokenRequest:
    """Exchange `code` (with the PKCE `verifier`) for tokens."""
    if ep.token_body:
        values = _values(ep, client, parameters or {})
        values.update({"code": code, "refreshtoken": "", "state": ""})
        body = render(ep.token_body, values, encode=True)
        return TokenRequest(ep.token_url, f"{body}&{urlencode({'code_verifier': verifier})}",
                            {"Content-Type": "application/x-www-form-urlencoded",
                             "Accept": "application/json"})
    form = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": client.redirect_uri, "code_verifier": verifier}
    headers = _client_auth(ep, client, form)
    return TokenRequest(ep.token_url, urlencode(form), headers)


def refresh_request(ep: Endpoints, client: Client, refresh_token: str,
                    parameters: Mapping[str, str] | None = None) -> TokenRequest:
    """Trade `refresh_token` for a new access token (RFC 6749 §6)."""
    if ep.refresh_body:
        values = _values(ep, client, parameters or {})
        values.update({"refreshtoken": refresh_token, "code": "", "state": ""})
        return TokenRequest(ep.refresh_url, render(ep.refresh_body, values, encode=True),
                            {"Content-Type": "application/x-www-form-urlencoded",
                             "Accept": "application/json"})
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    headers = _client_auth(ep, client, form)
    return TokenRequest(ep.refresh_url, urlencode(form), headers)

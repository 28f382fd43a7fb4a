"""Which credentials a connection sends, from ``securityDefinitions`` and apiProperties.json.

Power Platform decides a connection's authentication by its connection parameters, and
the spec's ``securityDefinitions`` say where a key goes:

- a parameter of type ``oauthSetting`` (usually ``token``) makes it OAuth 2.0: a bearer
  token in ``Authorization`` (hookd asks a `TokenSource`; a static ``token`` parameter
  serves until ``hookd connect`` exists), whatever ``securityDefinitions`` says;
- ``username`` and ``password`` parameters make it HTTP basic;
- every ``apiKey`` definition is placed in its header or query parameter, its value from
  the connection parameter named like the definition, else like its header, else
  ``api_key``, else the set's only secret parameter;
- a connector with ``connectionParameterSets`` (multi-auth) has one `ParameterSet` per
  entry; a connection names its set (``parameter_set:``), the first is the default.

Without apiProperties.json the parameters are derived from ``securityDefinitions``.
Pure code: the loader builds these, the HTTP boundary applies them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

CredentialKind = Literal["basic", "apikey", "oauth2"]


@dataclass(frozen=True)
class Credential:
    """One credential a request carries."""

    kind: CredentialKind
    name: str = ""  # apikey: the header or query parameter name
    location: Literal["header", "query", ""] = ""
    parameter: str = ""  # the connection parameter holding it (apikey key, oauth2 token)
    definition: str = ""  # the securityDefinitions entry it comes from, if any

    def describe(self) -> str:
        if self.kind == "basic":
            return "basic (username, password)"
        if self.kind == "apikey":
            return f"apiKey in {self.location} {self.name} from '{self.parameter}'"
        return f"oauth2 bearer token (connection parameter '{self.parameter}')"


@dataclass(frozen=True)
class ParameterSetAuth:
    """The credentials of one parameter set (``""`` names plain ``connectionParameters``)."""

    name: str
    credentials: tuple[Credential, ...] = ()
    problems: tuple[str, ...] = ()  # what could not be placed, for `hookd check`


def credentials(definitions: Any, parameters: Mapping[str, str], name: str = "") -> ParameterSetAuth:
    """The credentials for a parameter set whose parameters are `parameters`
    (name → apiProperties type, e.g. ``securestring``, ``oauthSetting``)."""
    defs = {k: v for k, v in definitions.items() if isinstance(v, dict)} \
        if isinstance(definitions, dict) else {}
    types = {n: t.lower() for n, t in parameters.items()}
    problems: list[str] = []
    oauth = [n for n, t in types.items() if t == "oauthsetting"]
    if oauth:
        return ParameterSetAuth(name, (Credential("oauth2", parameter=oauth[0]),))
    out: list[Credential] = []
    has_basic = "username" in types and "password" in types
    if has_basic:
        out.append(Credential("basic", definition=next(
            (k for k, v in defs.items() if v.get("type") == "basic"), "")))
    api_keys = [(k, v) for k, v in defs.items() if v.get("type") == "apiKey"]
    secrets = [n for n, t in types.items() if t == "securestring" and n not in ("password",)]
    for key, definition in api_keys:
        location, header = definition.get("in"), definition.get("name")
        if location not in ("header", "query") or not isinstance(header, str) or not header:
            problems.append(f"securityDefinitions.{key}: apiKey needs 'name' and 'in' "
                            "(header or query); it is not sent")
            continue
        param = next((c for c in (key, header, "api_key") if c in types), None)
        if param is None and len(api_keys) == 1 and len(secrets) == 1:
            param = secrets[0]
        if param is None and not types:
            param = "api_key" if len(api_keys) == 1 else key
        if param is None:
            problems.append(f"securityDefinitions.{key}: no connection parameter holds this "
                            f"API key ({location} {header}); it is not sent")
            continue
        out.append(Credential("apikey", header, location, param, key))
    if not out and not types:
        # No apiProperties.json: what the definitions alone imply.
        if any(v.get("type") == "basic" for v in defs.values()):
            out.append(Credential("basic"))
        elif any(v.get("type") == "oauth2" for v in defs.values()):
            out.append(Credential("oauth2", parameter="token"))
    elif not out and not has_basic and any(v.get("type") == "oauth2" for v in defs.values()) \
            and "token" in types:
        out.append(Credential("oauth2", parameter="token"))
    return ParameterSetAuth(name, tuple(out), tuple(problems))


def derived_parameters(creds: tuple[Credential, ...]) -> dict[str, tuple[str, str]]:
    """Connection parameters implied by `creds` when apiProperties.json names none:
    name → (type, description)."""
    out: dict[str, tuple[str, str]] = {}
    for c in creds:
        if c.kind == "basic":
            out["username"] = ("string", "User name")
            out["password"] = ("securestring", "Password")
        elif c.kind == "apikey":
            out[c.parameter] = ("securestring", f"API key, sent in {c.location} {c.name}")
        else:
            out[c.parameter] = ("securestring", "Access token, sent as a bearer token")
    return out

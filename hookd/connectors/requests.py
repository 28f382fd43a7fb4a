"""The exact request one connector operation sends: parameters, credentials, policies.

`compose` is the one place a request for an operation is made, for what `hookd plan`
shows and for what `hookd.upstream` sends (subscribe, list, delete, ``call`` steps):

1. the backend URL: the connection's ``base_url``, else the spec's scheme, host and
   basePath; path, query, header and form parameters by name, required ones missing
   filled from their declared defaults (a required ``Content-Type`` header keeps its
   ``application/vnd.api+json``); a JSON body gets ``Content-Type: application/json``
   only when no header parameter set one;
2. ``Accept`` from the operation's (else the spec's) ``produces``, ``User-Agent``;
3. the credentials of the connection's parameter set (`hookd.connectors.auth`);
4. the connector's policy templates for this operation, in order
   (`hookd.connectors.policies`) — last, so a ``setheader Authorization`` wins.

Inputs are already resolved text (secrets included): the caller resolves references and
keeps the secret values to mask (`masked`). Pure code.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from hookd.connectors.auth import Credential
from hookd.connectors.model import Connector, Operation, ParameterSet
from hookd.connectors.policies import (
    DYNAMIC_HOST,
    Draft,
    Policy,
    PolicyError,
    apply,
    path_segment,
)

MASK = "***"
__all__ = ["Draft", "Inputs", "PolicyError", "compose", "compose_url", "backend_url",
           "parameter_set", "masked", "MASK"]


@dataclass(frozen=True)
class Inputs:
    """What a connection contributes to a request, resolved to text."""

    connection: Mapping[str, str] = field(default_factory=dict)  # parameter → value
    parameter_set: str | None = None  # None = the connector's first
    base_url: str | None = None  # the connection's override of scheme/host/basePath
    token: str | None = None  # an OAuth2 access token from the token source
    user_agent: str = "hookd"


def parameter_set(connector: Connector, name: str | None) -> ParameterSet:
    """The named parameter set (the first when `name` is None); KeyError when unknown.
    A connector model built without sets has one, from its `Auth`."""
    sets = connector.parameter_sets
    if not sets:
        a = connector.auth
        default = {"oauth2": "token", "apikey": "api_key"}.get(a.kind, "")
        creds = () if a.kind == "none" else (
            Credential(a.kind, a.name, a.location, a.parameter or default),)
        return ParameterSet("", connector.connection_parameters, creds)
    if name is None:
        return sets[0]
    for s in sets:
        if s.name == name:
            return s
    raise KeyError(name)


def backend_url(connector: Connector, inputs: Inputs, operation_id: str | None = None) -> str:
    """The URL the operation's path is appended to, after any ``dynamichosturl``; ``""``
    when neither the spec, the connection nor a policy gives a host."""
    draft = Draft("GET", _static_base(connector, inputs), "/")
    apply(_host_policies(connector, inputs), operation_id if operation_id is not None else "\0",
          draft, inputs.connection)
    return draft.base_url


def compose(connector: Connector, operation: Operation, inputs: Inputs,
            parameters: Mapping[str, str], body: Any = None) -> Draft:
    """The request for `operation` (see the module docstring). `parameters` are the
    operation's non-body parameters as text, by name; `body` the JSON body or None."""
    draft = Draft(operation.method, _static_base(connector, inputs), operation.path)
    for p in operation.parameters:
        if p.location == "body":
            continue
        value = parameters.get(p.name)
        if value is None and p.required and p.default is not None:
            value = _text(p.default)
        if value is None:
            continue
        if p.location == "path":
            draft.path_params[p.name] = path_segment(value, f"path parameter '{p.name}'")
        elif p.location == "query":
            draft.query.append((p.name, value))
        elif p.location == "header":
            draft.set_header(p.name, value)
        elif p.location == "formData":
            draft.form.append((p.name, value))
    if body is not None:
        draft.body = body
        draft.set_header("Content-Type", "application/json", "skip")
    elif draft.form:
        draft.set_header("Content-Type", "application/x-www-form-urlencoded", "skip")
    _common_headers(draft, operation.produces or connector.produces, inputs)
    authenticate(draft, parameter_set(connector, inputs.parameter_set), inputs)
    chosen = [p for p in connector.policies if p.template != DYNAMIC_HOST or not inputs.base_url]
    apply(chosen, operation.operation_id, draft, inputs.connection)
    if not draft.base_url:
        raise PolicyError(f"connector '{connector.name}' has no host; set base_url on the "
                          "connection")
    return draft


def compose_url(connector: Connector, method: str, url: str, inputs: Inputs, *,
                credentials: bool) -> Draft:
    """A request to an absolute URL the upstream gave (Location, ``Link: rel=next``):
    credentials and every-operation header/query policies only when `credentials` (the
    URL is on the connector's own origin)."""
    draft = Draft(method, "", url, absolute=True)
    _common_headers(draft, connector.produces, inputs)
    if credentials:
        authenticate(draft, parameter_set(connector, inputs.parameter_set), inputs)
        apply(connector.policies, None, draft, inputs.connection)
    return draft


def authenticate(draft: Draft, auth: ParameterSet, inputs: Inputs) -> None:
    """Place the parameter set's credentials; one whose value is empty is not sent."""
    conn = inputs.connection
    for c in auth.credentials:
        if c.kind == "basic":
            user, password = conn.get("username", ""), conn.get("password", "")
            if user or password:
                raw = base64.b64encode(f"{user}:{password}".encode()).decode()
                draft.set_header("Authorization", f"Basic {raw}")
        elif c.kind == "apikey":
            value = conn.get(c.parameter, "")
            if not value:
                continue
            if c.location == "query":
                draft.set_query(c.name, value)
            else:
                draft.set_header(c.name, value)
        else:
            token = (inputs.token or conn.get(c.parameter) or conn.get("token")
                     or conn.get("access_token"))
            if token:
                draft.set_header("Authorization", f"Bearer {token}")
    if not auth.credentials and conn.get("token"):
        # No declared scheme, but the connection gives a token: a bearer token.
        draft.set_header("Authorization", f"Bearer {conn['token']}")


def masked(draft: Draft, secrets: Iterable[str]) -> dict[str, Any]:
    """What `hookd plan` shows: method, URL with query, headers, body, policies applied —
    every secret value (and credential header) as ``***``."""
    hidden = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def hide(text: str) -> str:
        for s in hidden:
            text = text.replace(s, MASK)
        return text

    def hide_value(value: Any) -> Any:
        if isinstance(value, str):
            return hide(value)
        if isinstance(value, dict):
            return {k: hide_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [hide_value(v) for v in value]
        return value

    url = draft.url()
    if draft.query:
        url += "?" + urlencode(draft.query)
    headers = {}
    for name, value in draft.headers:
        if name.lower() in ("authorization", "proxy-authorization", "cookie"):
            scheme, _, rest = value.partition(" ")
            value = f"{scheme} {MASK}" if rest else MASK
        headers[name] = hide(value)
    out: dict[str, Any] = {"method": draft.method, "url": hide(url), "headers": headers}
    if draft.body is not None:
        out["body"] = hide_value(draft.body)
    elif draft.form:
        out["form"] = {k: hide(v) for k, v in draft.form}
    out["policies"] = list(draft.applied)
    return out


def _common_headers(draft: Draft, produces: tuple[str, ...], inputs: Inputs) -> None:
    accept = next((p for p in produces if p and "*" not in p), "") or "application/json"
    draft.set_header("Accept", accept, "skip")
    draft.set_header("User-Agent", inputs.user_agent, "skip")


def _static_base(connector: Connector, inputs: Inputs) -> str:
    return (inputs.base_url or connector.base_url).rstrip("/")


def _host_policies(connector: Connector, inputs: Inputs) -> list[Policy]:
    """The connector's dynamichosturl policies, none when the connection sets base_url
    (the operator's explicit choice wins over the connector's template)."""
    if inputs.base_url:
        return []
    return [p for p in connector.policies if p.template == DYNAMIC_HOST]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    return "" if value is None else str(value)

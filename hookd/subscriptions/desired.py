"""Desired state: the subscriptions the config asks for, computed purely from a loaded Config.

One `DesiredSubscription` per enabled flow whose trigger is a webhook trigger (registered
upstream) or a request trigger such as the ``http`` connector (``upstream=False``: no
registration, but it still gets a callback route).

Identity. A subscription id is ``<flow-slug>-<10 hex>`` where the hex part hashes the flow
name and the *fingerprint*. The fingerprint covers everything that, when it changes, needs
a new upstream hook: connector, operation, connection name, the rendered parameters and
body (schema defaults merged with the flow's values) and the public URL — never secret
values (a `SecretRef` is fingerprinted by its reference text). Putting the fingerprint in
the id means a changed flow gets a new id and therefore a new callback URL, so a replace
can create the new hook *before* deleting the old one even on upstreams that refuse a
second hook with the same URL (GitHub answers 422). The id is stable across restarts.

Scope. Subscriptions whose connector can list its hooks (`ListStrategy`) carry a *scope*:
the connector, connection and the list operation's parameters (GitHub: owner and repo).
The reconciler lists each scope once per pass, so drift detection costs one list call per
repository, not one per hook.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hookd.config.model import Config, Flow, SecretRef, Value
from hookd.connectors.model import Connector, RequestPath, Schema
from hookd.subscriptions import tokens

_SLUG_RE = re.compile(r"[^a-z0-9]+")
_SLUG_MAX = 40


@dataclass(frozen=True)
class DesiredSubscription:
    id: str
    flow: str
    connector: str
    operation: str
    connection: str | None
    upstream: bool  # False for request triggers: nothing to register upstream
    fingerprint: str
    callback_url: str = field(repr=False)  # carries the token: a credential
    # The rendered subscribe request: path/query/header values by parameter name, and the
    # body. Both include the callback URL and the signing secret where the connector puts
    # them; `SecretRef` values stay references until `hookd.upstream.client` sends the request.
    parameters: Mapping[str, Value] = field(default_factory=dict, repr=False)
    body: Value = field(default=None, repr=False)
    secret: str = field(default="", repr=False)  # per-subscription signing secret
    scope: str | None = None  # list scope (see module docstring); None = cannot list

    @property
    def public_parameters(self) -> dict[str, Value]:
        """Parameters without the callback URL or secret (safe to store and show)."""
        return {
            k: v for k, v in self.parameters.items() if v not in (self.callback_url, self.secret)
        }


def desired_subscriptions(config: Config, server_secret: bytes) -> list[DesiredSubscription]:
    """The subscriptions `config` asks for, sorted by id.

    Flows that are disabled, or whose trigger is neither a webhook nor a request trigger
    (polling triggers are not supported yet), get none. The config is assumed valid
    (`hookd.config.loader.load_config` returned it); unknown connectors are skipped, not raised.
    """
    out: list[DesiredSubscription] = []
    for flow in config.flows.values():
        if not flow.enabled:
            continue
        connector = config.connectors.get(flow.trigger.connector)
        if connector is None:
            continue
        sub = desired_for_flow(flow, connector, config.settings.public_url, server_secret)
        if sub is not None:
            out.append(sub)
    return sorted(out, key=lambda s: s.id)


def desired_for_flow(
    flow: Flow, connector: Connector, public_url: str, server_secret: bytes
) -> DesiredSubscription | None:
    trigger = flow.trigger
    kind = connector.trigger_kind(trigger.operation)
    if kind == "request":
        fingerprint = _hash({"connector": connector.name, "operation": trigger.operation,
                             "public_url": public_url})
        sub_id = subscription_id(flow.name, fingerprint)
        url = tokens.callback_url(public_url, sub_id, tokens.callback_token(server_secret, sub_id))
        return DesiredSubscription(
            id=sub_id, flow=flow.name, connector=connector.name, operation=trigger.operation,
            connection=trigger.connection, upstream=False, fingerprint=fingerprint,
            callback_url=url, secret=tokens.signing_secret(server_secret, sub_id),
        )
    if kind != "webhook":
        return None
    webhook = connector.webhooks[trigger.operation]
    operation = connector.operations.get(trigger.operation)

    # Parameters: declared defaults first, then the flow's values.
    parameters: dict[str, Value] = {}
    if operation is not None:
        for p in operation.parameters:
            if p.location in ("path", "query", "header") and p.default is not None:
                parameters[p.name] = p.default
    parameters.update(trigger.parameters)

    body: Value = None
    if operation is not None and operation.body_schema is not None:
        body = schema_defaults(operation.body_schema)
    if trigger.body:
        body = deep_merge(body if isinstance(body, dict) else {}, trigger.body)
    if webhook.notification_url and webhook.notification_url[0] == "body" and body is None:
        body = {}

    fingerprint = _hash({
        "connector": connector.name,
        "operation": trigger.operation,
        "connection": trigger.connection,
        "parameters": parameters,
        "body": body,
        "public_url": public_url,
    })  # _hash canonicalises (secret references become their text)
    sub_id = subscription_id(flow.name, fingerprint)
    url = tokens.callback_url(public_url, sub_id, tokens.callback_token(server_secret, sub_id))
    secret = tokens.signing_secret(server_secret, sub_id)

    # `body` is already a fresh copy (schema_defaults and deep_merge copy what they take).
    body = set_at(parameters, body, webhook.notification_url, url)
    if webhook.secret_path:
        body = set_at(parameters, body, webhook.secret_path, secret)

    scope = None
    if webhook.list is not None:
        list_op = connector.operations.get(webhook.list.operation_id)
        if list_op is not None:
            scope = scope_key(connector.name, trigger.connection, {
                p.name: parameters[p.name]
                for p in list_op.parameters
                if p.location in ("path", "query") and p.name in parameters
            })
    return DesiredSubscription(
        id=sub_id, flow=flow.name, connector=connector.name, operation=trigger.operation,
        connection=trigger.connection, upstream=True, fingerprint=fingerprint,
        callback_url=url, parameters=parameters, body=body, secret=secret, scope=scope,
    )


def subscription_id(flow_name: str, fingerprint: str) -> str:
    """``<slug>-<10 hex>``, URL-safe and stable.

    >>> subscription_id("VS Code: push!", "0" * 64)[:13]
    'vs-code-push-'
    """
    slug = _SLUG_RE.sub("-", flow_name.lower()).strip("-")[:_SLUG_MAX].strip("-") or "flow"
    digest = hashlib.sha256(f"{flow_name}\0{fingerprint}".encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


def scope_key(connector: str, connection: str | None, list_params: Mapping[str, Value]) -> str:
    """A stable text key naming one listable collection of hooks (e.g. one repository)."""
    return json.dumps(
        [connector, connection, _canonical(dict(list_params))], sort_keys=True,
        separators=(",", ":"),
    )


def schema_defaults(schema: Schema) -> Value:
    """The value a schema's defaults describe, or None when it declares none.

    >>> schema_defaults({"type": "object", "properties": {
    ...     "active": {"type": "boolean", "default": True},
    ...     "config": {"type": "object", "properties": {"content_type": {"default": "json"}}},
    ...     "name": {"type": "string"}}})
    {'active': True, 'config': {'content_type': 'json'}}
    """
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    props = schema.get("properties")
    if isinstance(props, Mapping):
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if isinstance(sub, Mapping):
                value = schema_defaults(sub)
                if value is not None:
                    out[name] = value
        return out or None
    return None


def deep_merge(base: Mapping[str, Value], over: Mapping[str, Value]) -> dict[str, Value]:
    """`over` merged into `base`: mappings merge recursively; anything else replaces.

    >>> deep_merge({"events": ["push"], "config": {"a": 1}}, {"events": ["issues"], "config": {"b": 2}})
    {'events': ['issues'], 'config': {'a': 1, 'b': 2}}
    """
    out = dict(copy.deepcopy(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_at(parameters: dict[str, Value], body: Value, path: RequestPath, value: Value) -> Value:
    """Put `value` at request `path`; returns the (possibly new) body.

    ``("body", "config", "url")`` sets ``body["config"]["url"]``; ``("query", "cb")``,
    ``("header", "X-Cb")`` and ``("path", "p")`` set ``parameters[name]``. ``("body",)``
    alone makes the value the whole body.
    """
    where, rest = path[0], path[1:]
    if where != "body":
        if rest:
            parameters[rest[0]] = value
        return body
    if not rest:
        return value
    if not isinstance(body, dict):
        body = {}
    node = body
    for key in rest[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[rest[-1]] = value
    return body


def _canonical(value: Value) -> Value:
    """JSON-ready value with secret references as their (safe) reference text."""
    if isinstance(value, SecretRef):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _hash(data: Value) -> str:
    text = json.dumps(_canonical(data), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()

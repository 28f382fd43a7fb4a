"""Which flow does ``POST /hooks/{subscription_id}/{token}`` belong to, and how is it checked?

The callback server answers within milliseconds, so everything a request needs —
flow, verification, signing secret, schema validator, dedup and event headers — is
computed once per config into a `RouteTable` (pure: from the loaded `Config`, the desired
subscriptions and the server secret) and swapped atomically on reload.

Subscriptions that are not desired any more but still exist upstream (a flow changed, so
its subscription id changed; or a flow was removed) are found in the store on a miss and
turned into a `Route` by `route_for_row`, so the old hook keeps delivering until the
reconciler has replaced it.

Outcomes (`lookup`):

- unknown subscription id, or a token that is not the id's → `NotFound` (404). Both look
  the same, and the token is always checked (constant time) so timing tells nothing.
- a subscription being deleted, or whose flow is gone → `Gone` (410: "stop sending", in
  the Standard Webhooks sense).
- a flow that is disabled (or whose secret cannot be resolved) → `Unavailable` (503).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hookd import tokens
from hookd.connector import Connector, Schema, Verification
from hookd.desired import DesiredSubscription, desired_for_flow
from hookd.model import Config, Flow, MaybeSecret
from hookd.store.subscriptions import SubscriptionRow

RouteState = Literal["active", "gone", "disabled"]
Policy = Literal["reject", "warn", "off"]

# Verification used when a flow sets `verify_secret` on a connector that declares none
# (the `http` request trigger): the one standard way of signing webhooks.
DEFAULT_SIGNED = Verification("standard-webhooks")


class RouteError(Exception):
    """A request that does not reach a flow; the subclass says which HTTP answer it gets."""


class NotFound(RouteError):
    pass


class Gone(RouteError):
    pass


class Unavailable(RouteError):
    pass


@dataclass(frozen=True)
class Route:
    subscription_id: str
    flow: str
    state: RouteState
    connector: str = ""
    verification: Verification = Verification()
    secret: str = field(default="", repr=False)
    delivery_id_header: str | None = None  # lower-case
    event_header: str | None = None  # lower-case
    ping_event: str | None = None
    schema: Schema | None = None
    validation: Policy = "off"
    batch: bool = False
    # Headers not recorded with the delivery because they carry a credential.
    drop_headers: frozenset[str] = frozenset()
    reason: str = ""  # why disabled/gone, for logs
    # jsonschema validator for `schema`, compiled once per config (None: nothing to check).
    validator: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RouteTable:
    """The routes of one config: by subscription id, plus what is needed for misses."""

    routes: Mapping[str, Route]
    server_secret: bytes = field(repr=False)
    config: Config | None = None
    resolve: Callable[[MaybeSecret], str] | None = field(default=None, repr=False)


def build(
    config: Config,
    server_secret: bytes,
    *,
    rows: Mapping[str, SubscriptionRow] | None = None,
    resolve: Callable[[MaybeSecret], str] | None = None,
) -> RouteTable:
    """Routes for every flow of `config`, enabled or not (a disabled flow answers 503).

    `rows` (the store's subscriptions by id) provides the signing secret hookd recorded
    for a subscription and marks those being deleted; `resolve` turns a flow's
    `verify_secret` reference into its value (`hookd.secrets.resolve_value`).
    """
    rows = rows or {}
    routes: dict[str, Route] = {}
    for flow in config.flows.values():
        connector = config.connectors.get(flow.trigger.connector)
        if connector is None:
            continue
        desired = desired_for_flow(flow, connector, config.settings.public_url, server_secret)
        if desired is None:
            continue
        row = rows.get(desired.id)
        routes[desired.id] = _route(flow, connector, desired, row, resolve)
    return RouteTable(routes=routes, server_secret=server_secret, config=config, resolve=resolve)


def route_for_row(table: RouteTable, row: SubscriptionRow) -> Route:
    """The route of a subscription hookd holds that the current config no longer asks for."""
    config = table.config
    flow = config.flows.get(row.flow) if config is not None else None
    connector = config.connectors.get(row.connector) if config is not None else None
    if row.status == "deleting":
        return Route(row.id, row.flow, "gone", reason="subscription is being deleted")
    if flow is None or connector is None:
        return Route(row.id, row.flow, "gone", reason="flow no longer configured")
    return _route(flow, connector, None, row, table.resolve, sub_id=row.id)


def lookup(
    table: RouteTable,
    subscription_id: str,
    token: str,
    find_row: Callable[[str], SubscriptionRow | None],
) -> Route:
    """The active route for a request, or raise `NotFound`, `Gone` or `Unavailable`."""
    try:
        token_ok = tokens.verify_token(table.server_secret, subscription_id, token)
    except UnicodeError:  # lone surrogates: not an id hookd could have minted
        token_ok = False
    route = table.routes.get(subscription_id)
    if route is None and token_ok:
        # Only a correctly signed URL costs a store read, so guessing cannot load the store.
        row = find_row(subscription_id)
        route = route_for_row(table, row) if row is not None else None
    if route is None or not token_ok:
        raise NotFound("unknown subscription")
    if route.state == "gone":
        raise Gone(route.reason or "subscription deleted")
    if route.state == "disabled":
        raise Unavailable(route.reason or "flow disabled")
    return route


def _route(
    flow: Flow,
    connector: Connector,
    desired: DesiredSubscription | None,
    row: SubscriptionRow | None,
    resolve: Callable[[MaybeSecret], str] | None,
    *,
    sub_id: str | None = None,
) -> Route:
    sub_id = sub_id or (desired.id if desired is not None else "")
    if row is not None and row.status == "deleting":
        return Route(sub_id, flow.name, "gone", reason="subscription is being deleted")
    verification = connector.verification
    secret = row.secret if row is not None else (desired.secret if desired is not None else "")
    state: RouteState = "active" if flow.enabled else "disabled"
    reason = "" if flow.enabled else "flow disabled"
    if flow.verify_secret is not None:
        if verification.kind == "none":
            verification = DEFAULT_SIGNED
        try:
            secret = resolve(flow.verify_secret) if resolve is not None else (
                flow.verify_secret if isinstance(flow.verify_secret, str) else ""
            )
        except Exception:  # a missing secret must not accept unsigned deliveries
            state, reason, secret = "disabled", "verify_secret cannot be resolved", ""
    schema, batch = trigger_schema(flow, connector)
    validation: Policy = flow.payload_validation if schema is not None else "off"
    drop = {"authorization", "cookie", "proxy-authorization"}
    if verification.kind == "token" and verification.header:
        drop.add(verification.header.lower())  # the header *is* the secret
    return Route(
        subscription_id=sub_id,
        flow=flow.name,
        state=state,
        connector=connector.name,
        verification=verification,
        secret=secret,
        delivery_id_header=(connector.delivery_id_header or "").lower() or None,
        event_header=(connector.event_header or "").lower() or None,
        ping_event=connector.ping_event,
        schema=schema,
        validation=validation,
        batch=batch,
        drop_headers=frozenset(drop),
        reason=reason,
        validator=compile_schema(schema) if validation != "off" else None,
    )


def trigger_schema(flow: Flow, connector: Connector) -> tuple[Schema | None, bool]:
    """The notification schema of the flow's trigger, and whether it is a batch trigger.

    A webhook trigger's schema is its ``x-ms-notification-content``; a request trigger
    takes the flow's ``trigger.parameters.schema`` when given, else the operation's body.
    """
    op_id = flow.trigger.operation
    webhook = connector.webhooks.get(op_id)
    operation = connector.operations.get(op_id)
    batch = bool(
        (webhook is not None and webhook.batch)
        or (operation is not None and operation.trigger == "batch")
    )
    if webhook is not None:
        return webhook.notification_schema, batch
    given = flow.trigger.parameters.get("schema")
    if isinstance(given, Mapping):
        return given, batch
    return (operation.body_schema if operation is not None else None), batch


class SchemaCheck:
    """A compiled payload schema: fastjsonschema decides valid/invalid quickly (the
    common case, on every request); jsonschema explains the violations when there are."""

    def __init__(self, schema: Schema) -> None:
        import jsonschema

        # Swagger 2.0 schemas are JSON Schema draft 4 plus extensions (x-ms-*: ignored).
        self.full = jsonschema.Draft4Validator(dict(schema))
        self.fast: Callable[[Any], Any] | None
        try:
            import fastjsonschema

            self.fast = fastjsonschema.compile({"$schema": "http://json-schema.org/draft-04/schema#",
                                                **dict(schema)})
        except Exception:  # a schema fastjsonschema cannot compile: jsonschema alone
            self.fast = None

    def is_valid(self, value: Any) -> bool:
        if self.fast is not None:
            try:
                self.fast(value)
                return True
            except Exception:
                return False
        return bool(self.full.is_valid(value))

    def iter_errors(self, value: Any) -> Any:
        return self.full.iter_errors(value)


def compile_schema(schema: Schema | None) -> SchemaCheck | None:
    """A schema check, or None when the schema is absent or not usable."""
    if not schema:
        return None
    try:
        return SchemaCheck(schema)
    except Exception:
        return None


def violations(route: Route, value: Any, *, limit: int = 3) -> list[str]:
    """Up to `limit` schema violations of `value`, as ``path: message`` (empty when valid).

    A schema hookd cannot evaluate (broken ``$ref``, unknown format) reports nothing:
    payload validation is a help, it must not refuse deliveries because of a spec bug.
    """
    validator = route.validator
    if validator is None or route.validation == "off":
        return []
    out: list[str] = []
    try:
        if validator.is_valid(value):
            return []
        for error in validator.iter_errors(value):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            out.append(f"{where}: {_short(error.message)}")
            if len(out) >= limit:
                break
    except Exception:
        return []
    return out


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

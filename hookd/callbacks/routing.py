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

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from hookd.callbacks.schemes import SCHEMES
from hookd.config.model import Config, Flow, MaybeSecret
from hookd.connectors.model import Connector, Schema, Verification
from hookd.subscriptions import tokens
from hookd.subscriptions.desired import DesiredSubscription, desired_for_flow

if TYPE_CHECKING:  # the pure core names store rows in annotations only
    from hookd.store.records import SubscriptionRow

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
    # The check of `schema`, compiled once per config (None: nothing to check).
    validator: SchemaCheck | None = field(default=None, compare=False, repr=False)


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
    `verify_secret` reference into its value (`hookd.config.secrets.resolve_value`).
    """
    rows = rows or {}
    routes: dict[str, Route] = {}
    checks: dict[int, SchemaCheck | None] = {}  # by id(schema): flows share their connector's
    for flow in config.flows.values():
        connector = config.connectors.get(flow.trigger.connector)
        if connector is None:
            continue
        desired = desired_for_flow(flow, connector, config.settings.public_url, server_secret)
        if desired is None:
            continue
        row = rows.get(desired.id)
        routes[desired.id] = _route(flow, connector, desired, row, resolve, checks=checks)
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


def needs_row(table: RouteTable, subscription_id: str, token: str) -> bool:
    """Whether `lookup` would read the store for this request: an id the table does not
    route, in a correctly signed URL (so guessing cannot load the store)."""
    if subscription_id in table.routes:
        return False
    try:
        return tokens.verify_token(table.server_secret, subscription_id, token)
    except UnicodeError:
        return False


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
    if route is None and token_ok:
        # A URL this server minted (the token proves it) whose subscription no flow wants
        # and the store no longer holds: its flow was removed and its hook deleted. 410
        # tells a sender that honours it (Standard Webhooks) to stop, as docs/server.md says.
        raise Gone("subscription deleted")
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
    checks: dict[int, SchemaCheck | None] | None = None,
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
        delivery_id_header=(connector.delivery_id_header or _scheme_delivery_id(verification)
                            or "").lower() or None,
        event_header=(connector.event_header or "").lower() or None,
        ping_event=connector.ping_event,
        schema=schema,
        validation=validation,
        batch=batch,
        drop_headers=frozenset(drop),
        reason=reason,
        # A disabled route answers 503 before any payload is read: nothing to compile.
        validator=_check_for(schema, checks) if validation != "off" and state == "active" else None,
    )


def _scheme_delivery_id(verification: Verification) -> str | None:
    scheme = SCHEMES.get(verification.kind)
    return scheme.DELIVERY_ID if scheme is not None else None


def _check_for(schema: Schema | None, checks: dict[int, SchemaCheck | None] | None) -> SchemaCheck | None:
    """`compile_schema`, memoised by object identity for one `build` (where the config
    keeps every schema alive, so an id is not reused): the flows of one connector share
    its schema object, and dumping it once per flow would cost more than the lookup."""
    if checks is None or schema is None:
        return compile_schema(schema)
    key = id(schema)
    if key not in checks:
        checks[key] = compile_schema(schema)
    return checks[key]


def deferred_check(flow: Flow, config: Config) -> SchemaCheck | None:
    """The schema check the worker runs for a recorded delivery of `flow`: under ``warn``,
    for single bodies (`hookd.callbacks.payload.examine` left it out of the ingest path); None when
    there is nothing to check."""
    if flow.payload_validation != "warn":
        return None
    connector = config.connectors.get(flow.trigger.connector)
    if connector is None:
        return None
    schema, batch = trigger_schema(flow, connector)
    return None if batch else compile_schema(schema)


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
    common case, on every request); jsonschema explains the violations when there are.

    The fast validator is generated on the first payload, not here: generating it takes
    milliseconds per schema (docs/adr/0007), and a config whose flows have many distinct schemas (request
    triggers each with their own) should not pay that at every start and reload for
    flows that may never receive anything.
    """

    def __init__(self, schema: Schema) -> None:
        import jsonschema

        # Swagger 2.0 schemas are JSON Schema draft 4 plus extensions (x-ms-*: ignored;
        # x-nullable: translated).
        self.schema = json_schema(schema)
        self.full = jsonschema.Draft4Validator(self.schema)
        self._fast: Callable[[Any], Any] | None = None
        self._fast_failed = False

    @property
    def fast(self) -> Callable[[Any], Any] | None:
        """The fastjsonschema validator (None when it cannot compile this schema)."""
        if self._fast is None and not self._fast_failed:
            try:
                import fastjsonschema

                # Only valid/invalid is asked of it (jsonschema explains), so no detailed
                # exceptions: they embed each sub-schema's repr in the generated code and
                # make compiling several times slower (docs/adr/0007). No formats
                # (jsonschema ignores them without a format checker: both must agree) and
                # no defaults written into the payload.
                definition = {"$schema": "http://json-schema.org/draft-04/schema#", **self.schema}
                try:
                    self._fast = fastjsonschema.compile(
                        definition, use_default=False, use_formats=False, detailed_exceptions=False)
                except TypeError:  # fastjsonschema < 2.21 has no detailed_exceptions
                    self._fast = fastjsonschema.compile(
                        definition, use_default=False, use_formats=False)
            except Exception:  # a schema fastjsonschema cannot compile: jsonschema alone
                self._fast_failed = True
        return self._fast

    def is_valid(self, value: Any) -> bool:
        fast = self.fast
        if fast is not None:
            try:
                fast(value)
                return True
            except Exception:
                return False
        return bool(self.full.is_valid(value))

    def iter_errors(self, value: Any) -> Any:
        return self.full.iter_errors(value)


# Compiled checks by canonical schema text, shared by every route and every route table:
# 1,000 flows on one connector hold one check, and a reload that leaves a schema alone
# reuses its check. Bounded so that a long-running daemon whose configs keep changing
# schemas does not keep every old one.
SCHEMA_CACHE_SIZE = 256
_cache: OrderedDict[str, SchemaCheck | None] = OrderedDict()
_cache_lock = threading.Lock()  # routes are built on a thread while requests are served


def compile_schema(schema: Schema | None) -> SchemaCheck | None:
    """A schema check, or None when the schema is absent or not usable (shared, cached)."""
    if not schema:
        return None
    try:
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):  # not JSON (a YAML date, a cycle): compile, do not cache
        return _compile(schema)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    check = _compile(schema)
    with _cache_lock:
        check = _cache.setdefault(key, check)  # another thread may have been first
        _cache.move_to_end(key)
        while len(_cache) > SCHEMA_CACHE_SIZE:
            _cache.popitem(last=False)
    return check


def _compile(schema: Schema) -> SchemaCheck | None:
    try:
        return SchemaCheck(schema)
    except Exception:
        return None


# Keywords whose value is a schema, a list of schemas, or a map of name → schema (draft 4).
_SUB_SCHEMA = ("additionalProperties", "additionalItems", "not", "items")
_SUB_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "items")
_SUB_SCHEMA_MAPS = ("properties", "patternProperties", "definitions", "dependencies")
_APPLY_TO_ALL_TYPES = ("allOf", "anyOf", "oneOf", "not")


def json_schema(schema: Schema) -> dict[str, Any]:
    """`schema` (Swagger 2.0) as the JSON Schema draft 4 that means the same to a validator.

    Swagger 2.0 has no ``null`` type; it marks a value that may be null with the
    ``x-nullable: true`` extension (AutoRest, Power Platform connectors), which a JSON
    Schema validator ignores — so every null GitHub sends (``base_ref``, a repository
    without description) would be a violation. Translated here, where the schema becomes a
    validator, so that the connector model keeps the spec as written:

    - ``type: T`` becomes ``type: [T, "null"]`` and an ``enum`` gains ``null``;
    - a schema with ``allOf``/``anyOf``/``oneOf``/``not`` (which null must satisfy too)
      becomes ``anyOf: [{type: null}, <the schema>]``.

    The connector loader inlines ``$ref``s, sharing one object per definition. A sub-schema
    used in several places (GitHub's user object appears a dozen times in an event) goes
    back into ``definitions`` and is referenced, so that fastjsonschema generates its code
    once (inlined, the built-in GitHub schema compiled in twice the time), and a spec whose
    definitions reference each other several times cannot blow up exponentially.

    >>> json_schema({"type": "object", "properties": {"d": {"type": "string", "x-nullable": True}}})
    {'type': 'object', 'properties': {'d': {'type': ['string', 'null'], 'x-nullable': True}}}
    """
    uses: dict[int, int] = {}

    def count(node: Mapping[str, Any], depth: int) -> None:
        for sub in _sub_schemas(node):
            uses[id(sub)] = uses.get(id(sub), 0) + 1
            if uses[id(sub)] == 1 and depth < _MAX_DEPTH:
                count(sub, depth + 1)

    count(schema, 0)
    names: dict[int, str] = {}
    definitions: dict[str, Any] = {}

    def walk(node: Any, depth: int) -> Any:
        if not isinstance(node, Mapping) or depth > _MAX_DEPTH:
            return node
        if uses.get(id(node), 0) > 1 and _worth_sharing(node):
            name = names.get(id(node))
            if name is None:
                name = names[id(node)] = f"hookd-shared-{len(names)}"
                definitions[name] = translate(node, depth)
            return {"$ref": f"#/definitions/{name}"}
        return translate(node, depth)

    def translate(node: Mapping[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = dict(node)
        for key in _SUB_SCHEMA:
            if isinstance(out.get(key), Mapping):
                out[key] = walk(out[key], depth + 1)
        for key in _SUB_SCHEMA_LISTS:
            if isinstance(out.get(key), list):
                out[key] = [walk(v, depth + 1) for v in out[key]]
        for key in _SUB_SCHEMA_MAPS:
            value = out.get(key)
            if isinstance(value, Mapping):
                out[key] = {k: walk(v, depth + 1) for k, v in value.items()}
        return _nullable(out) if out.get("x-nullable") is True else out

    result = translate(schema, 0)
    if definitions:
        result["definitions"] = {**(result.get("definitions") or {}), **definitions}
    return result


_MAX_DEPTH = 64


def _sub_schemas(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out: list[Any] = [node.get(k) for k in _SUB_SCHEMA]
    for key in _SUB_SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            out.extend(node[key])
    for key in _SUB_SCHEMA_MAPS:
        if isinstance(node.get(key), Mapping):
            out.extend(node[key].values())
    return [sub for sub in out if isinstance(sub, Mapping)]


def _worth_sharing(node: Mapping[str, Any]) -> bool:
    """An object or array schema (a leaf is cheaper inline than as a function call)."""
    return any(k in node for k in ("properties", "items", "allOf", "anyOf", "oneOf"))


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    if any(k in node for k in _APPLY_TO_ALL_TYPES):
        return {"anyOf": [{"type": "null"}, node]}
    kind = node.get("type")
    if isinstance(kind, str) and kind != "null":
        node["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        node["type"] = [*kind, "null"]
    if isinstance(node.get("enum"), list) and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]
    return node


def violations(route: Route, value: Any, *, limit: int = 3) -> list[str]:
    """Up to `limit` violations of `value` against the route's payload schema (empty when
    valid or when the route checks nothing); see `check_violations`."""
    if route.validator is None or route.validation == "off":
        return []
    return check_violations(route.validator, value, limit=limit)


def check_violations(check: SchemaCheck, value: Any, *, limit: int = 3) -> list[str]:
    """Up to `limit` schema violations of `value`, as ``path: message`` (empty when valid).

    A schema hookd cannot evaluate (broken ``$ref``, unknown format) reports nothing:
    payload validation is a help, it must not refuse deliveries because of a spec bug.
    """
    out: list[str] = []
    try:
        if check.is_valid(value):
            return []
        for error in check.iter_errors(value):
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

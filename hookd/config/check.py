"""Semantic checks over a loaded config: what the JSON Schemas cannot see.

The schemas check each file on its own; these checks look across files and into the
connectors: does the flow's connector exist, is its operation a trigger hookd can
subscribe to, are the trigger's required parameters there and of the right type, does the
connection belong to the same connector, are names unique, do templates parse, and does
every ``trigger.body.…`` path a template reads exist in the trigger's notification schema
(the check no other tool does: a typo there otherwise shows up as an empty message at
run time). Secret references are resolved here too, so that a missing token is reported
with the connection and flows that need it, before the daemon ever starts.

Every check is a function of the typed model plus where each object was written
(`Located`); nothing here raises on bad input, everything is a `Diagnostic`. The checks of
a flow's steps that need no connector (ids, templates) are `hookd.config.steps`'s.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from hookd.config import secrets as secrets_mod
from hookd.config.actions.call import CallAction
from hookd.config.model import Connection, Flow, SecretRef, Settings
from hookd.config.schema import describe
from hookd.config.steps import check_steps, strings
from hookd.config.yamlpos import Document, KeyPath
from hookd.connectors.model import Connector, Operation, Schema
from hookd.diagnostics import Diagnostic
from hookd.templating.analysis import analyse, flatten_schema, known, literal_origin, suggest

T = TypeVar("T")


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)

# Step keys whose values are templates (everything but the step's own settings).
# Connection parameters hookd understands for every connector (static bearer token).
_COMMON_CONNECTION_PARAMETERS = frozenset({"token"})


@dataclass(frozen=True)
class Located(Generic[T]):
    """A model object with the document and key path it was built from."""

    item: T
    doc: Document
    prefix: KeyPath = ()

    def diag(
        self,
        path: KeyPath,
        message: str,
        *,
        severity: str = "error",
        hint: str = "",
        at_key: bool = False,
    ) -> Diagnostic:
        return self.doc.diagnostic(
            (*self.prefix, *path), message, severity=severity, hint=hint, at_key=at_key
        )

    def raw(self, path: KeyPath = ()) -> Any:
        """The YAML data at `path` (inside this object), or None."""
        node: Any = self.doc.data
        for part in (*self.prefix, *path):
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node

    @property
    def where(self) -> str:
        """``flows/a.yaml:3``: config files sit one directory deep, so the last two parts
        of the path are the name a user sees in `hookd check` output."""
        line, _ = self.doc.pos(self.prefix)
        return f"{Path(*self.doc.file.parts[-2:]).as_posix()}:{line}"


@dataclass(frozen=True)
class SecretContext:
    """How to resolve secret references (None in `check_config` = --offline-secrets)."""

    env: Mapping[str, str]
    base_dir: Path
    credentials_dir: str | None = None


def check_config(
    settings: Settings,
    connectors: Mapping[str, Connector],
    connections: Sequence[Located[Connection]],
    flows: Sequence[Located[Flow]],
    *,
    secrets: SecretContext | None = None,
) -> list[Diagnostic]:
    """All cross-file problems of a config; see the module docstring for the list."""
    out: list[Diagnostic] = []
    by_name: dict[str, Located[Connection]] = {}
    for conn in connections:
        duplicate = _duplicate(conn, "connection", by_name)
        if duplicate is not None:
            out.append(duplicate)  # the first definition is the one checked and used
            continue
        out.extend(check_connection(conn, connectors))
    seen_flows: dict[str, Located[Flow]] = {}
    for flow in flows:
        duplicate = _duplicate(flow, "flow", seen_flows)
        if duplicate is not None:
            out.append(duplicate)  # still checked: its own problems are worth showing
        out.extend(check_flow(flow, connectors, {n: c.item for n, c in by_name.items()},
                              env_allow=settings.env_allow, public_url=settings.public_url,
                              egress_allow=settings.egress.allow))
    if secrets is not None:
        out.extend(check_secrets(by_name, flows, secrets))
    return out


def _duplicate(located: Located[N], kind: str, seen: dict[str, Located[N]]) -> Diagnostic | None:
    """The error for a second `kind` of the same name; records a first one in `seen`."""
    name = located.item.name
    first = seen.setdefault(name, located)
    if first is located:
        return None
    return located.diag(("name",), f"duplicate {kind} name '{name}'",
                        hint=f"also defined at {first.where}")


# --------------------------------------------------------------------------- connections


def unknown_connection(name: str) -> str:
    """The message for a flow naming a connection that is not defined (the loader drops
    it for a connection that is defined but was refused for its own errors)."""
    return f"unknown connection '{name}'"


def check_connection(conn: Located[Connection], connectors: Mapping[str, Connector]) -> list[Diagnostic]:
    c = conn.item
    connector = connectors.get(c.connector)
    if connector is None:
        return [conn.diag(("connector",), f"unknown connector '{c.connector}'",
                          hint=suggest(c.connector, connectors) or known("connectors", connectors))]
    out: list[Diagnostic] = []
    declared = connector.connection_parameters
    if c.parameter_set is not None:
        chosen = next((s for s in connector.parameter_sets if s.name == c.parameter_set), None)
        names = [s.name for s in connector.parameter_sets]
        if chosen is None:
            out.append(conn.diag(
                ("parameter_set",), f"connector '{c.connector}' has no parameter set "
                f"'{c.parameter_set}'",
                hint=suggest(c.parameter_set, names) or (known("parameter sets", names) if names
                                                         else "it has only one way to connect; "
                                                              "remove parameter_set")))
            return out
        declared = chosen.parameters
    # Parameters a policy template reads (dynamichosturl, setheader…) without a default
    # must be given, declared or not: without them the request goes nowhere useful.
    by_policy: dict[str, str] = {}
    for policy in connector.policies:
        if policy.applied:
            for name, has_default in policy.connection_parameters().items():
                if not has_default:
                    by_policy.setdefault(name, policy.template)
    for name, value in c.parameters.items():
        param = declared.get(name)
        if param is None:
            if declared and name not in _COMMON_CONNECTION_PARAMETERS \
                    and name.lower() not in {n.lower() for n in by_policy}:
                out.append(conn.diag(
                    ("parameters", name), f"connector '{c.connector}' has no connection parameter '{name}'",
                    severity="warning", at_key=True,
                    hint=suggest(name, declared) or known("parameters", declared)))
        elif param.secret and not isinstance(value, SecretRef):
            out.append(conn.diag(
                ("parameters", name), f"'{name}' is a secret but is written in the file",
                severity="warning", hint=f"use a reference such as ${{env:{name.upper()}}}"))
    out.extend(_check_oauth(conn, connector))
    # With an oauth: block, hookd gets the token itself.
    by_oauth = {s.parameter for s in connector.oauth} | {connector.auth.parameter} \
        if c.oauth is not None else set()
    where = ("parameters",) if conn.raw(("parameters",)) is not None else ()
    for name, param in declared.items():
        # OAuth settings cannot be given statically; hookd uses the `token` parameter.
        if param.required and param.type != "oauthSetting" and name not in c.parameters \
                and name not in by_oauth:
            out.append(conn.diag(where,
                                 f"missing connection parameter '{name}' of connector '{c.connector}'",
                                 hint=param.description[:120]))
    given = {n.lower() for n in c.parameters}
    folded = {n.lower(): p for n, p in declared.items()}
    for name, template in by_policy.items():
        # As the policy reads it: the exact name, else one differing only in case.
        param = declared.get(name) or folded.get(name.lower())
        if name.lower() in given or (param is not None and (param.required or param.type == "oauthSetting")):
            continue
        out.append(conn.diag(where, f"missing connection parameter '{name}': connector "
                             f"'{c.connector}' uses it in its {template} policy",
                             hint=(param.description[:120] if param is not None else "")
                             or f"add parameters: {{{name}: …}}"))
    return out


def _check_oauth(conn: Located[Connection], connector: Connector) -> list[Diagnostic]:
    """An ``oauth:`` block needs a connector that does OAuth (or explicit endpoints);
    its secrets must be references. Which provider, and whether a token is stored, is
    `hookd.oauth.readiness` (``hookd check`` online, ``hookd status``)."""
    oauth = conn.item.oauth
    if oauth is None:
        return []
    out: list[Diagnostic] = []
    if not connector.oauth and connector.auth.kind != "oauth2" \
            and not (oauth.authorization_url and oauth.token_url):
        out.append(conn.diag(("oauth",), f"connector '{connector.name}' does not use OAuth 2.0",
                             hint="remove oauth:, or set oauth.authorization_url and "
                                  "oauth.token_url"))
    for key in ("client_secret", "refresh_token"):
        value = getattr(oauth, key)
        if value is not None and not isinstance(value, SecretRef):
            out.append(conn.diag(("oauth", key), f"oauth.{key} is a secret but is written in the file",
                                 severity="warning",
                                 hint=f"use a reference such as ${{env:{conn.item.name.upper()}_{key.upper()}}}"))
    return out


# --------------------------------------------------------------------------- flows


def check_flow(
    flow: Located[Flow],
    connectors: Mapping[str, Connector],
    connections: Mapping[str, Connection],
    *,
    env_allow: Collection[str] | None = None,
    public_url: str = "",
    egress_allow: Collection[str] = (),
) -> list[Diagnostic]:
    f = flow.item
    out: list[Diagnostic] = []
    connector = connectors.get(f.trigger.connector)
    trigger_schema: Schema | None = None
    if connector is None:
        out.append(flow.diag(("trigger", "connector"), f"unknown connector '{f.trigger.connector}'",
                             hint=suggest(f.trigger.connector, connectors) or known("connectors", connectors)))
    else:
        problems, trigger_schema = _check_trigger(flow, connector, connections)
        out.extend(problems)
        connection = connections.get(f.trigger.connection or "")
        local_upstream = connection is not None and bool(connection.base_url) and \
            is_loopback_url(str(connection.base_url))  # a local Gitea, a test fake
        if (f.enabled and f.trigger.operation in connector.webhooks and connector.host
                and is_loopback_url(public_url) and not local_upstream):
            out.append(flow.diag(
                ("trigger",), f"public_url {public_url} is a local address: {connector.host} cannot deliver to it",
                severity="warning", at_key=True,
                hint="set public_url in hookd.yaml to the address the upstream reaches (a reverse proxy or tunnel)"))
    allow = None if env_allow is None else frozenset(env_allow)
    out.extend(check_steps(flow, trigger_schema, allow))
    for i, step in enumerate(f.steps):
        if isinstance(step.action, CallAction):
            out.extend(_check_call(flow, ("steps", i, "call"), step.action, connectors, connections))
        url = getattr(step.action, "url", None) if step.kind in ("http", "notify") else None
        if (isinstance(url, str) and ("{{" in url or "{%" in url) and not egress_allow
                and literal_origin(url) is None and not analyse(url, False).error):
            out.append(flow.diag(
                ("steps", i, step.kind, "url"),
                "the host of this url comes from a template: the step is refused unless the "
                "host matches egress.allow in hookd.yaml", severity="warning",
                hint="write the host in the url (https://api.example.com/{{ … }}), or list "
                     "the hosts it may be in egress.allow (docs/pipeline.md, \"Egress\")"))
    return out


def is_loopback_url(url: str) -> bool:
    """True when `url` points at this machine only (no upstream can reach it).

    >>> is_loopback_url("http://127.0.0.1:8080"), is_loopback_url("https://hooks.example.net")
    (True, False)
    """
    return is_loopback_host(urlsplit(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` names and loopback addresses (``0.0.0.0`` is every address).

    >>> is_loopback_host("127.0.0.1"), is_loopback_host("::1"), is_loopback_host("0.0.0.0")
    (True, True, False)
    """
    host = host.lower().strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_exposure(settings: Settings) -> str | None:
    """The warning for an admin listener bound beyond this machine, or None."""
    if is_loopback_host(settings.admin.host):
        return None
    return (f"the admin listener binds {settings.admin.host}, beyond this machine: anyone who "
            "can reach it and has the admin token can read run history and replay flows")


def _check_trigger(
    flow: Located[Flow], connector: Connector, connections: Mapping[str, Connection]
) -> tuple[list[Diagnostic], Schema | None]:
    t = flow.item.trigger
    out: list[Diagnostic] = []
    triggers = sorted(op.operation_id for op in connector.operations.values() if op.is_trigger)
    if not t.operation:
        if len(triggers) == 1:  # pragma: no cover - the loader fills the only trigger in
            return out, None
        out.append(flow.diag(("trigger",), f"connector '{connector.name}' has {len(triggers)} triggers: say which with 'operation'",
                             hint=known("triggers", triggers)))
        return out, None
    op = connector.operations.get(t.operation)
    if op is None:
        out.append(flow.diag(("trigger", "operation"), f"connector '{connector.name}' has no operation '{t.operation}'",
                             hint=suggest(t.operation, triggers or connector.operations)
                             or known("triggers", triggers)))
        return out, None
    kind = connector.trigger_kind(t.operation)
    if kind is None:
        out.append(flow.diag(("trigger", "operation"), f"operation '{t.operation}' of '{connector.name}' is not a trigger",
                             hint=known("triggers", triggers) if triggers else f"connector '{connector.name}' has no triggers"))
        return out, None
    if kind == "polling":
        out.append(flow.diag(("trigger", "operation"),
                             f"'{t.operation}' of '{connector.name}' is a polling trigger: polling triggers are not yet supported",
                             hint="use a webhook trigger (x-ms-notification-url)"))
        return out, None
    out.extend(_check_trigger_connection(flow, connector, kind, connections))
    webhook = connector.webhooks.get(t.operation)
    filled: set[tuple[str, ...]] = set()
    if webhook is not None:
        filled.add(webhook.notification_url)
        if webhook.secret_path:
            filled.add(webhook.secret_path)
    out.extend(_check_parameters(flow, ("trigger", "parameters"), op, t.parameters, filled, connector.name))
    if op.body_schema is not None:
        # The subscribe body: required properties without defaults, except those hookd fills.
        body_filled = {p[1:] for p in filled if p and p[0] == "body"}
        out.extend(_check_body(flow, ("trigger", "body"), op.body_schema, t.body, (), body_filled))
    schema: Schema | None = None
    if webhook is not None:
        schema = webhook.notification_schema
    elif kind == "request":
        # As hookd.callbacks.routing.trigger_schema: the flow's own schema, else the operation body.
        declared = t.parameters.get("schema")
        schema = declared if isinstance(declared, Mapping) else op.body_schema
    return out, schema


def _check_trigger_connection(
    flow: Located[Flow], connector: Connector, kind: str, connections: Mapping[str, Connection]
) -> list[Diagnostic]:
    t = flow.item.trigger
    candidates = sorted(n for n, c in connections.items() if c.connector == connector.name)
    if t.connection is None:
        if kind == "webhook" and connector.auth.kind != "none":
            hint = (known("connections for it", candidates) if candidates
                    else f"add connections/{connector.name}.yaml with 'connector: {connector.name}'")
            return [flow.diag(("trigger",), f"trigger on '{connector.name}' needs a connection",
                              hint=hint, at_key=True)]
        return []
    conn = connections.get(t.connection)
    if conn is None:
        return [flow.diag(("trigger", "connection"), unknown_connection(t.connection),
                          hint=suggest(t.connection, connections) or known("connections for it", candidates))]
    if conn.connector != connector.name:
        return [flow.diag(("trigger", "connection"),
                          f"connection '{t.connection}' is for connector '{conn.connector}', not '{connector.name}'",
                          hint=known("connections for it", candidates) if candidates else "")]
    return []


def _check_parameters(
    flow: Located[Flow],
    where: KeyPath,
    op: Operation,
    given: Mapping[str, Any],
    filled: set[tuple[str, ...]],
    connector: str,
) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    params = {p.name: p for p in op.parameters if p.location in ("path", "query", "header")}
    for p in params.values():
        if (p.location, p.name) in filled:
            continue
        if p.name not in given:
            if p.required and p.default is None:
                out.append(flow.diag(where if flow.raw(where) is not None else where[:-1],
                                     f"missing required {p.location} parameter '{p.name}' of {connector}/{op.operation_id}",
                                     hint=_set_it(where, (p.name,), p.description)))
            continue
        problem = type_problem(given[p.name], {"type": p.type} if p.type else {})
        if problem:
            out.append(flow.diag((*where, p.name), f"parameter '{p.name}' {problem}"))
    for name in given:
        if name not in params and not (op.body_schema is None and name == "schema"):
            out.append(flow.diag((*where, name), f"{connector}/{op.operation_id} has no parameter '{name}'",
                                 severity="warning", at_key=True,
                                 hint=suggest(name, params) or known("parameters", params)))
    return out


def _set_it(where: KeyPath, path: tuple[str, ...], description: str) -> str:
    """Where a missing value goes, written as the key path a user types into the flow
    (``trigger.body.events``), then what the connector says about it."""
    key = ".".join(str(k) for k in (*where, *path))
    return f"set {key} in the flow" + (f" ({description[:100]})" if description else "")


def _check_body(
    flow: Located[Flow],
    where: KeyPath,
    schema: Schema,
    given: Any,
    path: tuple[str, ...],
    filled: set[tuple[str, ...]],
) -> list[Diagnostic]:
    """Required properties (recursively) present, and given leaves of the right type."""
    out: list[Diagnostic] = []
    schema = flatten_schema(schema)
    props: Mapping[str, Any] = schema.get("properties") or {}
    given_map = given if isinstance(given, Mapping) else {}
    for name in schema.get("required") or ():
        sub = (*path, name)
        if name in given_map:
            continue
        sub_schema = props.get(name) or {}
        if sub in filled:
            continue
        if any(f[: len(sub)] == sub for f in filled) or "default" in sub_schema:
            # Filled in by hookd further down (config.url) or by a default: check the rest.
            out.extend(_check_body(flow, where, sub_schema, sub_schema.get("default"), sub, filled))
            continue
        out.append(flow.diag((*where, *path) if flow.raw((*where, *path)) is not None else where[:1],
                             f"missing required body property '{'.'.join(sub)}' of the trigger",
                             hint=_set_it(where, sub, str(sub_schema.get("description", "")))))
    for name, value in given_map.items():
        sub_schema = props.get(name)
        if sub_schema is None:
            continue
        problem = type_problem(value, flatten_schema(sub_schema))
        if problem:
            out.append(flow.diag((*where, *path, name), f"body property '{'.'.join((*path, name))}' {problem}"))
        elif isinstance(value, Mapping):
            out.extend(_check_body(flow, where, sub_schema, value, (*path, name), filled))
    return out


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (Mapping,),
}


def type_problem(value: Any, schema: Schema) -> str:
    """"" when `value` fits the schema's ``type`` (templates always fit), else why not.

    >>> type_problem("x", {"type": "integer"})
    "should be an integer, not the string 'x'"
    >>> type_problem("{{ trigger.body.id }}", {"type": "integer"}), type_problem(3, {"type": "number"})
    ('', '')
    """
    wanted = schema.get("type")
    if not isinstance(wanted, str) or wanted not in _JSON_TYPES:
        return ""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return ""
    if value is None:
        return ""  # an explicit null leaves the default in place
    ok = isinstance(value, _JSON_TYPES[wanted])
    if isinstance(value, bool) and wanted in ("integer", "number"):
        ok = False
    if ok and isinstance(value, str) and "enum" in schema and value not in schema["enum"]:
        return f"should be one of {', '.join(map(str, schema['enum']))}, not '{value}'"
    if ok:
        return ""
    article = "an" if wanted[0] in "aeiou" else "a"
    return f"should be {article} {wanted}, not {describe(value)}"


# --------------------------------------------------------------------------- call steps


def _check_call(
    flow: Located[Flow], where: KeyPath, action: CallAction,
    connectors: Mapping[str, Connector], connections: Mapping[str, Connection],
) -> list[Diagnostic]:
    connector = connectors.get(action.connector)
    if connector is None:
        return [flow.diag((*where, "connector"), f"unknown connector '{action.connector}'",
                          hint=suggest(action.connector, connectors))]
    out: list[Diagnostic] = []
    op = connector.operations.get(action.operation)
    if op is None:
        out.append(flow.diag((*where, "operation"), f"connector '{connector.name}' has no operation '{action.operation}'",
                             hint=suggest(action.operation, connector.operations)))
    if action.connection is not None:
        conn = connections.get(action.connection)
        if conn is None:
            out.append(flow.diag((*where, "connection"), unknown_connection(action.connection),
                                 hint=suggest(action.connection, connections)))
        elif conn.connector != connector.name:
            out.append(flow.diag((*where, "connection"),
                                 f"connection '{action.connection}' is for connector '{conn.connector}', not '{connector.name}'"))
    if op is not None:
        out.extend(_check_parameters(flow, (*where, "parameters"), op, action.parameters, set(), connector.name))
    return out


# --------------------------------------------------------------------------- secrets


def check_secrets(
    connections: Mapping[str, Located[Connection]],
    flows: Sequence[Located[Flow]],
    ctx: SecretContext,
) -> list[Diagnostic]:
    """Resolve every secret an *enabled* flow needs; name who needs it, never the value.

    A disabled flow will never use its secrets, so they are not resolved: this is how the
    shipped example keeps a GitHub flow that checks clean without ``GITHUB_TOKEN``.
    """
    out: list[Diagnostic] = []
    users: dict[str, list[str]] = defaultdict(list)
    for flow in flows:
        if not flow.item.enabled:
            continue
        names = {flow.item.trigger.connection}
        names.update(getattr(s.action, "connection", None) for s in flow.item.steps)
        for name in sorted(n for n in names if n):
            users[name].append(flow.item.name)
        if isinstance(flow.item.verify_secret, SecretRef):
            out.extend(_resolve(flow, ("verify_secret",), flow.item.verify_secret, ctx,
                                f"flow '{flow.item.name}'"))
        for i, _step in enumerate(flow.item.steps):
            for path, text in strings(flow.raw(("steps", i)), ("steps", i)):
                ref = secrets_mod.parse_ref(text)
                if ref is not None:
                    out.extend(_resolve(flow, path, _anchor(ref, ctx), ctx, f"flow '{flow.item.name}'"))
    for name, flow_names in users.items():
        conn = connections.get(name)
        if conn is None:
            continue
        who = f"connection '{name}', used by flow{'s' if len(flow_names) > 1 else ''} " + ", ".join(
            f"'{n}'" for n in flow_names)
        for param, value in conn.item.parameters.items():
            if isinstance(value, SecretRef):
                out.extend(_resolve(conn, ("parameters", param), value, ctx, who))
        oauth = conn.item.oauth
        for key in ("client_id", "client_secret", "refresh_token"):
            ref = getattr(oauth, key, None)
            if isinstance(ref, SecretRef):
                out.extend(_resolve(conn, ("oauth", key), ref, ctx, who))
    return out


def _anchor(ref: SecretRef, ctx: SecretContext) -> SecretRef:
    if ref.kind == "file" and not Path(ref.name).expanduser().is_absolute():
        return SecretRef("file", str(ctx.base_dir / ref.name))
    return ref


def _resolve(
    where: Located[Any], path: KeyPath, ref: SecretRef, ctx: SecretContext, who: str
) -> list[Diagnostic]:
    try:
        secrets_mod.resolve(ref, env=ctx.env, credentials_dir=ctx.credentials_dir, base_dir=ctx.base_dir)
    except secrets_mod.SecretError as exc:
        hint = {
            "env": f"set {ref.name} in the environment (systemd: Environment= or EnvironmentFile=)",
            "credential": f"add LoadCredential={ref.name}:/path/to/secret to the unit",
            "file": "create the file, readable by the hookd user",
        }[ref.kind]
        return [where.diag(path, f"secret {exc.ref}: {exc.reason} (needed by {who})", hint=hint)]
    return []

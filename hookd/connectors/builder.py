"""Build a `hookd.connectors.model.Connector` from a read spec and its apiProperties.json.

The facts hookd acts on sit deep and indirect in real specs: the callback-URL property
(``x-ms-notification-url``) is found by walking the trigger's *own* request — its
parameters and body schema through ``$ref`` and ``allOf`` — never by property name; the
notification schema (``x-ms-notification-content``) is read from the path item and the
operation; the DELETE comes from ``x-hookd-delete`` or a best match by path. Bad input
never raises: every problem becomes a `Diagnostic` and the builder keeps going.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from hookd.connectors import auth, policies
from hookd.connectors import extensions as ext
from hookd.connectors import refs as swagger
from hookd.connectors.auth import Credential
from hookd.connectors.documents import SPEC_FILE, Document
from hookd.connectors.model import (
    Auth,
    ConnectionParameter,
    Connector,
    DeleteStrategy,
    ListStrategy,
    Operation,
    Parameter,
    ParameterSet,
    RequestPath,
    Schema,
    UpdateStrategy,
    Verification,
    WebhookTrigger,
)
from hookd.connectors.oauth import oauth_settings
from hookd.connectors.policies import Policy
from hookd.diagnostics import Diagnostic, Severity, did_you_mean

METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
PARAMETER_LOCATIONS = ("path", "query", "header", "body", "formData")
NOTIFICATION_URL = "x-ms-notification-url"
NOTIFICATION_CONTENT = "x-ms-notification-content"
KeyPath = tuple[str | int, ...]
_Location = Literal["path", "query", "header", "body", "formData"]



def build_connector(
    name: str, spec: Document, properties: Document | None = None, *, builtin: bool = False
) -> tuple[Connector | None, list[Diagnostic]]:
    """The `Connector` of a parsed spec (and apiProperties.json); pure apart from logging
    nothing — all problems come back as diagnostics."""
    builder = _Builder(name, spec, properties, builtin)
    try:
        return builder.build()
    finally:
        builder.release()


def _ignore_bad_ref(ref: str, message: str, hint: str) -> None:
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class _Builder:
    def __init__(self, name: str, spec: Document, properties: Document | None, builtin: bool) -> None:
        self.name = name
        self.spec = spec
        self.file = spec.file
        self.properties = properties
        self.builtin = builtin
        self.diags: list[Diagnostic] = []
        self.resolver = swagger.Resolver(spec.value, self._bad_ref)
        self.raw_ops: dict[str, tuple[KeyPath, dict[str, Any], dict[str, Any]]] = {}
        self.set_paths: dict[str, KeyPath] = {}  # parameter set name → its parameters' path

    def release(self) -> None:
        """Break the builder -> resolver -> builder cycle (the resolver reports through a
        bound method): without it, each connector's whole raw spec stays alive until the
        next GC run, and loading pauses the GC: 70 MB more for the corpus, and the page
        faults and cache misses that go with it."""
        self.resolver.report = _ignore_bad_ref

    # ------------------------------------------------------------------ reporting

    def _bad_ref(self, ref: str, message: str, hint: str) -> None:
        line, col = self.spec.find(f'"{ref}"')
        if not line:  # YAML: the reference may be unquoted or single-quoted
            line, col = self.spec.find(ref)
        self.diags.append(Diagnostic(self.file, line, col, "warning", message, hint=hint))

    def diag(self, severity: Severity, message: str, path: KeyPath, hint: str = "",
             doc: Document | None = None) -> None:
        doc = doc or self.spec
        line, col = doc.locate(path) if path else (0, 0)
        self.diags.append(Diagnostic(doc.file, line, col, severity, message, swagger.key_path(path), hint))

    def report(self, problems: ext.Problems, where: KeyPath) -> None:
        for sub, message, hint in problems:
            self.diag("error", message, (*where, *sub), hint)
        problems.clear()

    # ------------------------------------------------------------------ whole spec

    def build(self) -> tuple[Connector | None, list[Diagnostic]]:
        spec = self.spec.value
        if not isinstance(spec, dict):
            self.diag("error", "not an OpenAPI document (the top level is not an object)", ())
            return None, self.diags
        if "swagger" not in spec:
            if "openapi" in spec:
                self.diag("error", f"OpenAPI {spec['openapi']} is not supported: hookd reads "
                          "Swagger 2.0 (the Power Platform connector format)", ("openapi",))
            else:
                self.diag("error", "not a Swagger 2.0 document (no 'swagger' key)", (),
                          hint="a connector file starts with \"swagger\": \"2.0\"")
            return None, self.diags
        if str(spec["swagger"]) != "2.0":
            self.diag("warning", f"swagger version '{spec['swagger']}', expected '2.0'", ("swagger",))

        problems: ext.Problems = []
        ext.unknown_extensions(spec, problems)
        self.report(problems, ())
        operations = self._operations(spec)
        top = self._hookd_settings(spec, ())
        webhooks: dict[str, WebhookTrigger] = {}
        polling: list[str] = []
        request_trigger = False
        for op_id, op in operations.items():
            where, raw, path_item = self.raw_ops[op_id]
            if not op.is_trigger:
                if ext.REQUEST_TRIGGER in raw:
                    self.diag("error", f"{ext.REQUEST_TRIGGER} on an operation without x-ms-trigger",
                              (*where, ext.REQUEST_TRIGGER))
                self._unused_settings(raw, where, "it is not a trigger")
                continue
            if ext.REQUEST_TRIGGER in raw and ext.parse_flag(raw[ext.REQUEST_TRIGGER], problems):
                request_trigger = True
                self.report(problems, (*where, ext.REQUEST_TRIGGER))
                self._unused_settings(raw, where, "a request trigger registers nothing upstream")
                continue
            self.report(problems, (*where, ext.REQUEST_TRIGGER))
            webhook = self._webhook(op, where, raw, path_item, operations, top)
            if webhook is None:
                polling.append(op_id)
                self._unused_settings(raw, where, "it is a polling trigger")
            else:
                webhooks[op_id] = webhook

        sets = self._parameter_sets(spec)
        compiled = self._policies(sets, operations)
        schemes = _list(spec.get("schemes"))
        scheme = "https" if not schemes or "https" in schemes else str(schemes[0])
        info = _dict(spec.get("info"))
        return Connector(
            name=self.name,
            title=str(info.get("title") or self.name),
            source=self.file if self.file.name.lower() != SPEC_FILE.lower() else self.file.parent,
            builtin=self.builtin,
            scheme=scheme,
            host=str(spec.get("host") or ""),
            base_path=str(spec.get("basePath") or "/"),
            operations=operations,
            webhooks=webhooks,
            polling=tuple(polling),
            auth=_main_auth(sets[0].credentials),
            connection_parameters=sets[0].parameters,
            parameter_sets=sets,
            policies=compiled,
            produces=_media_types(spec.get("produces")),
            verification=top.verification or Verification(),
            delivery_id_header=top.delivery_id,
            event_header=top.event_header,
            ping_event=top.ping_event,
            request_trigger=request_trigger,
            oauth=oauth_settings(self.properties.value) if self.properties is not None else (),
        ), self.diags

    # ------------------------------------------------------------------ operations

    def _operations(self, spec: dict[str, Any]) -> dict[str, Operation]:
        operations: dict[str, Operation] = {}
        paths = spec.get("paths")
        if not isinstance(paths, dict):
            if paths is not None:
                self.diag("error", "'paths' must be an object", ("paths",))
            return operations
        for path, item in paths.items():
            if not isinstance(item, dict):
                continue
            common = _list(item.get("parameters"))
            for method in METHODS:
                raw = item.get(method)
                if not isinstance(raw, dict):
                    continue
                where: KeyPath = ("paths", path, method)
                op_id = raw.get("operationId")
                if not isinstance(op_id, str) or not op_id:
                    op_id = f"{method.upper()} {path}"
                    self.diag("warning", "operation has no operationId; flows refer to it as "
                              f"'{op_id}'", where)
                if op_id in operations:
                    self.diag("warning", f"duplicate operationId '{op_id}': this one is ignored",
                              (*where, "operationId"))
                    continue
                problems: ext.Problems = []
                ext.unknown_extensions(raw, problems)
                self.report(problems, where)
                operations[op_id] = self._operation(op_id, method, path, raw, common, where)
                self.raw_ops[op_id] = (where, raw, item)
        return operations

    def _operation(self, op_id: str, method: str, path: str, raw: dict[str, Any],
                   common: list[Any], where: KeyPath) -> Operation:
        params: dict[tuple[str, str], Parameter] = {}
        own = _list(raw.get("parameters"))
        for index, node in [*((i, p) for i, p in enumerate(common)), *enumerate(own)]:
            param = self._parameter(self.resolver.resolve(node), (*where, "parameters", index))
            if param is not None:
                params[(param.name, param.location)] = param
        body = next((p.schema for p in params.values() if p.location == "body"), None)
        trigger = raw.get("x-ms-trigger")
        kind: Literal["single", "batch"] | None = None
        if trigger is not None:
            text = str(trigger).lower()
            if text not in ("single", "batch"):
                self.diag("warning", f"x-ms-trigger '{trigger}' is neither 'single' nor 'batch'; "
                          "read as 'single'", (*where, "x-ms-trigger"))
            kind = "batch" if text == "batch" else "single"
        responses: dict[str, Schema] = {}
        location_header = False
        raw_responses = raw.get("responses")
        if isinstance(raw_responses, dict):
            for status, response in raw_responses.items():
                # Only success responses matter to hookd (ids, step outputs); error
                # schemas are skipped, which halves the loading time of big specs.
                if not str(status).startswith("2"):
                    continue
                response = self.resolver.resolve(response)
                if not isinstance(response, dict):
                    continue
                if isinstance(response.get("schema"), dict):
                    responses[str(status)] = response["schema"]
                headers = response.get("headers")
                if isinstance(headers, dict) and any(str(h).lower() == "location" for h in headers):
                    location_header = True
        return Operation(
            operation_id=op_id,
            method=method.upper(),
            path=path,
            summary=str(raw.get("summary") or raw.get("description") or ""),
            parameters=tuple(params.values()),
            body_schema=body,
            trigger=kind,
            visibility=raw.get("x-ms-visibility") if isinstance(raw.get("x-ms-visibility"), str) else None,
            responses=responses,
            location_header=location_header,
            produces=_media_types(raw.get("produces")),
        )

    def _parameter(self, node: Any, where: KeyPath) -> Parameter | None:
        if not isinstance(node, dict) or not node:  # {}: an unresolved $ref, already reported
            return None
        name, location = node.get("name"), node.get("in")
        if not isinstance(name, str) or location not in PARAMETER_LOCATIONS:
            self.diag("warning", "parameter without a valid 'name' and 'in'; ignored", where,
                      hint=f"'in' is one of {', '.join(PARAMETER_LOCATIONS)}")
            return None
        schema = node.get("schema") if isinstance(node.get("schema"), dict) else None
        visibility = node.get("x-ms-visibility")
        return Parameter(
            name=name,
            location=cast(_Location, location),
            required=swagger.truthy(node.get("required")) or location == "path",
            type=node.get("type") if isinstance(node.get("type"), str) else None,
            default=node.get("default"),
            schema=schema if location == "body" else node.get("schema"),
            description=str(node.get("description") or node.get("x-ms-summary") or ""),
            visibility=visibility if isinstance(visibility, str) else None,
        )

    # ------------------------------------------------------------------ triggers

    def _hookd_settings(self, node: dict[str, Any], where: KeyPath) -> _Settings:
        """The x-hookd-* keys of the top level or one operation, validated."""
        settings = _Settings()
        problems: ext.Problems = []
        parsers: list[tuple[str, Callable[[Any], None]]] = [
            (ext.VERIFY, lambda v: setattr(settings, "verification", ext.parse_verify(v, problems))),
            (ext.DELIVERY_ID, lambda v: setattr(settings, "delivery_id", ext.parse_delivery_id(v, problems))),
            (ext.EVENT, lambda v: settings.set_event(*ext.parse_event(v, problems))),
            (ext.LIST, lambda v: setattr(settings, "list", ext.parse_list(v, problems))),
            (ext.DELETE, lambda v: setattr(settings, "delete", ext.parse_delete(v, problems))),
            (ext.UPDATE, lambda v: setattr(settings, "update", ext.parse_update(v, problems))),
            (ext.SECRET, lambda v: setattr(settings, "secret", ext.parse_secret_path(v, problems))),
        ]
        for key, parse in parsers:
            if key in node:
                settings.origin[key] = (*where, key)
                parse(node[key])
                self.report(problems, (*where, key))
        return settings

    def _unused_settings(self, raw: dict[str, Any], where: KeyPath, why: str) -> None:
        for key in ext.KNOWN:
            if key in raw and key != ext.REQUEST_TRIGGER:
                self.diag("warning", f"{key} has no effect on this operation: {why}", (*where, key))

    def _webhook(self, op: Operation, where: KeyPath, raw: dict[str, Any], path_item: dict[str, Any],
                 operations: dict[str, Operation], top: _Settings) -> WebhookTrigger | None:
        urls: list[RequestPath] = [
            (p.location, p.name) for p in op.parameters
            if p.location != "body" and swagger.truthy(self._raw_param_flag(raw, path_item, p, NOTIFICATION_URL))
        ]
        urls += swagger.marked_paths(op.body_schema, NOTIFICATION_URL)
        if not urls:
            return None
        if len(urls) > 1:
            self.diag("warning", f"{len(urls)} properties are marked {NOTIFICATION_URL}; hookd "
                      f"fills the first, {'.'.join(urls[0])}", where)
        if any(part == "0" for part in urls[0][1:]):
            self.diag("warning", f"the notification URL is inside an array "
                      f"({'.'.join(urls[0])}): hookd puts it in the first item", where)
        mine = self._hookd_settings(raw, where)
        settings = mine.over(top)

        secret = settings.secret
        if secret is None:
            marked = swagger.marked_paths(op.body_schema, ext.SECRET)
            secret = marked[0] if marked else None

        return WebhookTrigger(
            operation_id=op.operation_id,
            notification_url=urls[0],
            notification_schema=self._notification_schema(raw, path_item, where),
            secret_path=secret,
            delete=self._delete(op, where, settings, operations),
            list=self._list(where, settings, operations),
            update=self._update(op, settings, operations),
            batch=op.trigger == "batch",
            verification=settings.verification or Verification(),
            delivery_id_header=settings.delivery_id,
            event_header=settings.event_header,
            ping_event=settings.ping_event,
        )

    def _raw_param_flag(self, raw: dict[str, Any], path_item: dict[str, Any], param: Parameter,
                        flag: str) -> Any:
        for node in [*(path_item.get("parameters") or ()), *(raw.get("parameters") or ())]:
            node = self.resolver.resolve(node)
            if isinstance(node, dict) and node.get("name") == param.name and node.get("in") == param.location:
                return node.get(flag)
        return None

    def _notification_schema(self, raw: dict[str, Any], path_item: dict[str, Any],
                             where: KeyPath) -> Schema | None:
        content = raw.get(NOTIFICATION_CONTENT, path_item.get(NOTIFICATION_CONTENT))
        if content is None:
            return None
        content = self.resolver.resolve(content)
        if not isinstance(content, dict):
            self.diag("warning", f"{NOTIFICATION_CONTENT} must be an object with 'schema'",
                      (*where[:2], NOTIFICATION_CONTENT))
            return None
        schema = content.get("schema")
        if isinstance(schema, dict):
            return schema
        # Some files put the schema itself there, without the {"schema": …} wrapper.
        return content if ("type" in content or "properties" in content) else None

    def _delete(self, op: Operation, where: KeyPath, settings: _Settings,
                operations: dict[str, Operation]) -> DeleteStrategy:
        spec = settings.delete
        if spec is not None:
            if spec.kind != "operation":
                return DeleteStrategy(spec.kind, source=ext.DELETE)
            target = operations.get(spec.operation or "")
            if target is None:
                self.diag("error", f"{ext.DELETE}: no operation '{spec.operation}'",
                          settings.where(ext.DELETE),
                          hint=did_you_mean(spec.operation or "", operations))
                return DeleteStrategy("location")
            if target.method != "DELETE":
                self.diag("warning", f"{ext.DELETE}: '{spec.operation}' is a {target.method}, "
                          "not a DELETE", settings.where(ext.DELETE))
            id_param = spec.id_param or self._new_path_param(op, target)
            if id_param and target.parameter(id_param) is None:
                self.diag("error", f"{ext.DELETE}: '{spec.operation}' has no parameter '{id_param}'",
                          settings.where(ext.DELETE),
                          hint=did_you_mean(id_param, [p.name for p in target.parameters]))
            return DeleteStrategy("operation", target.operation_id, id_param,
                                  spec.id_field or self._id_field(op, id_param), ext.DELETE)
        trigger_names = {p.name.lower() for p in op.parameters}
        deletes = [
            swagger.DeleteCandidate(o.operation_id, o.path, tuple(
                p.name for p in o.parameters
                if p.location in ("query", "header") and p.required and p.name.lower() not in trigger_names))
            for o in operations.values() if o.method == "DELETE"
        ]
        match = swagger.match_delete(op.path, deletes)
        if match is None:
            return DeleteStrategy("location")
        op_id, source, id_param = match
        return DeleteStrategy("operation", op_id, id_param, self._id_field(op, id_param), source)

    @staticmethod
    def _new_path_param(op: Operation, target: Operation) -> str | None:
        mine = {p.name.lower() for p in op.parameters}
        fresh = [p.name for p in target.parameters if p.location == "path" and p.name.lower() not in mine]
        return fresh[-1] if fresh else None

    @staticmethod
    def _id_field(op: Operation, id_param: str | None) -> str:
        """Where the upstream id sits in the create response: the field named like the
        DELETE's id parameter, else ``id``, else a field ending in ``id``."""
        names: list[str] = []
        for status in sorted(op.responses):
            if status.startswith("2"):
                props = op.responses[status].get("properties")
                if isinstance(props, Mapping):
                    names.extend(str(k) for k in props)
        lowered = {n.lower(): n for n in names}
        for wanted in (id_param or "", "id"):
            if wanted.lower() in lowered:
                return lowered[wanted.lower()]
        return next((n for n in names if n.lower().endswith("id")), "id")

    def _target(self, key: str, name: str | None, settings: _Settings,
                operations: dict[str, Operation]) -> Operation | None:
        """The operation an extension (`key`) names; an error when there is none."""
        if name is None:
            return None
        target = operations.get(name)
        if target is None:
            self.diag("error", f"{key}: no operation '{name}'", settings.where(key),
                      hint=did_you_mean(name, operations))
        return target

    def _update(self, op: Operation, settings: _Settings,
                operations: dict[str, Operation]) -> UpdateStrategy | None:
        spec = settings.update
        target = self._target(ext.UPDATE, spec.operation if spec else None, settings, operations)
        if spec is None or target is None:
            return None
        id_param = spec.id_param or self._new_path_param(op, target)
        if not id_param or target.parameter(id_param) is None:
            self.diag("error", f"{ext.UPDATE}: '{spec.operation}' has no parameter "
                      f"'{id_param or '?'}' for the hook's id", settings.where(ext.UPDATE),
                      hint="give id_param: the parameter that takes the upstream id")
            return None
        return UpdateStrategy(target.operation_id, id_param)

    def _list(self, where: KeyPath, settings: _Settings,
              operations: dict[str, Operation]) -> ListStrategy | None:
        spec = settings.list
        target = self._target(ext.LIST, spec.operation if spec else None, settings, operations)
        if spec is None or target is None:
            return None
        if target.method != "GET":
            self.diag("warning", f"{ext.LIST}: '{spec.operation}' is a {target.method}, not a GET",
                      settings.where(ext.LIST))
        return ListStrategy(spec.operation, spec.url_field, spec.id_field, spec.items_field)

    # ------------------------------------------------------------------ auth

    def _parameter_sets(self, spec: dict[str, Any]) -> tuple[ParameterSet, ...]:
        """One `ParameterSet` per apiProperties.json way to connect (see
        `hookd.connectors.auth`); derived from ``securityDefinitions`` without one."""
        definitions = spec.get("securityDefinitions")
        for name, definition in _dict(definitions).items():
            kind = definition.get("type") if isinstance(definition, dict) else None
            if kind not in ("basic", "apiKey", "oauth2"):
                self.diag("warning", f"security definition type '{kind}' is not supported; "
                          "requests will not authenticate with it",
                          ("securityDefinitions", name, "type"))
        out: list[ParameterSet] = []
        for set_name, title, raw in self._raw_parameter_sets():
            params = self._connection_parameters(raw)
            found = auth.credentials(definitions, {n: p.type for n, p in params.items()}, set_name)
            for problem in found.problems:
                self.diag("warning", problem, ("securityDefinitions",))
            if not params:
                params = {n: ConnectionParameter(n, kind, True, text)
                          for n, (kind, text) in auth.derived_parameters(found.credentials).items()}
            out.append(ParameterSet(set_name, params, found.credentials, title))
        return tuple(out)

    def _raw_parameter_sets(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(name, title, raw parameters) of each connectionParameterSets entry (multi-auth
        wins, as in Power Platform), else of connectionParameters; one empty set without
        apiProperties.json."""
        inner = self._properties()
        params = inner.get("connectionParameters")
        sets = _dict(inner.get("connectionParameterSets")).get("values")
        if isinstance(params, dict) and not (isinstance(sets, list) and sets):
            self.set_paths[""] = ("properties", "connectionParameters")
            return [("", "", params)]
        out: list[tuple[str, str, dict[str, Any]]] = []
        for index, entry in enumerate(_list(sets)):
            if isinstance(entry, dict) and isinstance(entry.get("parameters"), dict):
                ui = _dict(entry.get("uiDefinition"))
                name = str(entry.get("name") or index)
                self.set_paths[name] = ("properties", "connectionParameterSets", "values", index,
                                        "parameters")
                out.append((name, str(ui.get("displayName") or ""), entry["parameters"]))
        return out or [("", "", {})]

    def _properties(self) -> dict[str, Any]:
        props = self.properties.value if self.properties is not None else None
        return _dict(props.get("properties")) if isinstance(props, dict) else {}

    def _connection_parameters(self, params: dict[str, Any]) -> dict[str, ConnectionParameter]:
        out: dict[str, ConnectionParameter] = {}
        for name, raw in params.items():
            if not isinstance(raw, dict):
                continue
            ui = _dict(raw.get("uiDefinition"))
            constraints = _dict(ui.get("constraints"))
            kind = str(raw.get("type") or "string")
            if kind.lower() == "oauthsetting":
                kind = "oauthSetting"
            out[name] = ConnectionParameter(
                name=name,
                type=kind,
                required=swagger.truthy(constraints.get("required")),
                description=str(ui.get("description") or ui.get("displayName") or ""),
            )
        return out

    # ------------------------------------------------------------------ policies

    def _policies(self, sets: tuple[ParameterSet, ...],
                  operations: Mapping[str, Operation]) -> tuple[Policy, ...]:
        """apiProperties.json policyTemplateInstances, compiled; what hookd does not apply
        and connection parameters nothing uses are warnings."""
        where: KeyPath = ("properties", "policyTemplateInstances")
        compiled, problems = policies.compile_policies(
            self._properties().get("policyTemplateInstances"))
        for sub, message, hint in problems:
            self.diag("warning", message, (*where, *sub), hint, doc=self.properties)
        for p in compiled:
            unknown = [o for o in p.operations if o.lower() not in
                       {k.lower() for k in operations}]
            if unknown:
                self.diag("warning", f"policy {p.template} names unknown operation(s) "
                          f"{', '.join(unknown)}", (*where, p.index), doc=self.properties)
            if p.applied:
                continue
            changes = ", ".join(p.operations) if p.operations else "every operation"
            self.diag("warning", f"policy template '{p.template}'"
                      f"{' (' + repr(p.title) + ')' if p.title else ''} is not applied by "
                      f"hookd: {p.reason}; it changes {changes}", (*where, p.index),
                      doc=self.properties)
        used: set[str] = set()
        for p in compiled:
            if p.applied:
                used.update(n.lower() for n in p.connection_parameters())
        for s in sets:
            mine = used | {c.parameter.lower() for c in s.credentials}
            if any(c.kind == "basic" for c in s.credentials):
                mine |= {"username", "password"}
            for name, param in s.parameters.items():
                if name.lower() not in mine and param.type != "oauthSetting" \
                        and not name.startswith("token:"):
                    self.diag("warning", f"connection parameter '{name}'"
                              f"{' of set ' + repr(s.name) if s.name else ''} is used by no "
                              "credential or policy hookd applies: its value is never sent",
                              (*self.set_paths.get(s.name, ("properties",)), name),
                              doc=self.properties)
        return compiled


def _main_auth(credentials: tuple[Credential, ...]) -> Auth:
    """The `Auth` summary of a set's first credential."""
    if not credentials:
        return Auth("none")
    c = credentials[0]
    return Auth(c.kind, c.name, c.location, c.parameter)


def _media_types(value: Any) -> tuple[str, ...]:
    return tuple(v for v in _list(value) if isinstance(v, str))


@dataclass
class _Settings:
    """The x-hookd-* settings of one level (top level or operation)."""

    verification: Verification | None = None
    delivery_id: str | None = None
    event_header: str | None = None
    ping_event: str | None = None
    list: ext.ListSpec | None = None
    delete: ext.DeleteSpec | None = None
    update: ext.UpdateSpec | None = None
    secret: RequestPath | None = None
    origin: dict[str, KeyPath] = field(default_factory=dict)  # key → where it was declared

    def set_event(self, header: str | None, ping: str | None) -> None:
        self.event_header, self.ping_event = header, ping

    def over(self, top: _Settings) -> _Settings:
        """These settings, with `top`'s filling whatever this level does not declare."""
        merged = _Settings()
        for name in ("verification", "delivery_id", "event_header", "ping_event", "list",
                     "delete", "update", "secret"):
            mine = getattr(self, name)
            setattr(merged, name, mine if mine is not None else getattr(top, name))
        merged.origin = {**top.origin, **self.origin}
        return merged

    def where(self, key: str) -> KeyPath:
        return self.origin.get(key, (key,))

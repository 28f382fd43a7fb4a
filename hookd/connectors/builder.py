"""Build a `hookd.connectors.model.Connector` from a read spec and its apiProperties.json.

This module reads the whole spec and its operations and parameters, and puts the
connector together; its parts read the rest: `hookd.connectors.triggers` (webhook
triggers, the callback-URL property), `hookd.connectors.strategies` (delete, list,
update), `hookd.connectors.apiproperties` (parameter sets, credentials, policies), all
on `hookd.connectors.reader.SpecReader` (documents, `$ref`s, diagnostics). Bad input
never raises: every problem becomes a `Diagnostic` and the builder keeps going.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from hookd.connectors import extensions as ext
from hookd.connectors import refs as swagger
from hookd.connectors.apiproperties import ApiProperties, main_auth
from hookd.connectors.documents import SPEC_FILE, Document
from hookd.connectors.model import (
    Connector,
    Operation,
    Parameter,
    Schema,
    Verification,
    WebhookTrigger,
)
from hookd.connectors.oauth import oauth_settings
from hookd.connectors.reader import KeyPath, as_dict, as_list
from hookd.connectors.triggers import Triggers
from hookd.diagnostics import Diagnostic

METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
PARAMETER_LOCATIONS = ("path", "query", "header", "body", "formData")
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


class _Builder(Triggers, ApiProperties):
    """Reads one connector: the whole spec and its operations here, the rest in its parts."""

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
        schemes = as_list(spec.get("schemes"))
        scheme = "https" if not schemes or "https" in schemes else str(schemes[0])
        info = as_dict(spec.get("info"))
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
            auth=main_auth(sets[0].credentials),
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
            common = as_list(item.get("parameters"))
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
        own = as_list(raw.get("parameters"))
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


def _media_types(value: Any) -> tuple[str, ...]:
    return tuple(v for v in as_list(value) if isinstance(v, str))

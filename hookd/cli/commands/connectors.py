"""`hookd connectors [DIR]`: what hookd understood of each connector spec.

A connector author's first question is "did hookd find my callback-URL property, and how
will it delete the hook?"; an operator's is "which triggers can my flows use?". This
prints, per connector, its triggers (webhook, polling — not yet supported — or request),
where hookd puts the callback URL, how it deletes a hook when the upstream sent no
``Location``, and the actions. ``--format json`` is a stable, documented document
(docs/connectors.md) for scripts; diagnostics go to stderr (and into the JSON).

DIR is a config directory (built-ins plus its ``connectors/``), or any directory of
connectors (each subdirectory or file is one, nothing built-in added); without DIR:
``$HOOKD_CONFIG`` or the current directory when it is a config directory, else the
built-ins alone. Exit codes: 0 listed, 1 some connector had errors, 2 DIR missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hookd.cli.commands._common import (
    EXIT_ERRORS,
    EXIT_OK,
    EXIT_USAGE,
    add_config_args,
    add_format_arg,
    given_config_dir,
)

if TYPE_CHECKING:
    from hookd.connectors.model import Connector, DeleteStrategy, Operation
    from hookd.diagnostics import Diagnostic

JSON_VERSION = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "connectors",
        help="list connectors with their triggers, callback-URL location and delete strategy",
        description="List connectors: triggers (webhook/polling/request), actions, where the "
        "callback URL goes and how hooks are deleted. Exit 0 when all loaded, 1 when some "
        "had errors, 2 when DIR is missing.",
    )
    add_config_args(
        parser,
        help="a config directory, or a directory of connectors (default: $HOOKD_CONFIG or "
        "the current directory when it is a config directory, else only the built-ins)",
    )
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help="show only this connector, with its parameter sets and the policy "
                        "templates of each operation (`hookd connectors NAME` alone looks in "
                        "$HOOKD_CONFIG, the current directory or the built-ins)")
    add_format_arg(parser)
    parser.set_defaults(func=run)


def is_config_dir(directory: Path, *, explicit: bool = True) -> bool:
    """A config directory has hookd.yaml; a DIR given explicitly may also be one that only
    holds ``connectors/`` (a config in the making)."""
    if (directory / "hookd.yaml").is_file():
        return True
    return explicit and (directory / "connectors").is_dir() and find_spec(directory) is None


def find_spec(directory: Path) -> Path | None:
    from hookd.connectors import loader as openapi

    return openapi.find_file(directory, openapi.SPEC_FILE)


def collect(directory: Path | None) -> tuple[dict[str, Connector], list[Diagnostic], Path | None]:
    """The connectors to list, their diagnostics, and the root that sources are relative to."""
    from hookd.connectors import loader as openapi

    if directory is None:
        connectors, diags = openapi.load_connector_dir(openapi.builtin_dir(), builtin=True)
        return connectors, diags, None
    if is_config_dir(directory):
        connectors, diags = openapi.load_connectors(directory)
        return connectors, diags, directory / "connectors"
    if find_spec(directory) is not None:  # DIR is one connector (apiDefinition + apiProperties)
        connector, diags = openapi.load_connector(directory)
        return ({connector.name: connector} if connector else {}), diags, directory.parent
    connectors, diags = openapi.load_connector_dir(directory)
    return connectors, diags, directory


def run(args: argparse.Namespace) -> int:
    name = getattr(args, "name", None)
    if (name is None and getattr(args, "directory", None) is not None
            and getattr(args, "config", None) is None and "/" not in args.directory
            and not Path(args.directory).exists()):
        name, args.directory = args.directory, None  # `hookd connectors calendly`
    directory = given_config_dir(args)
    if directory is not None:
        if not directory.is_dir():
            what = "does not exist" if not directory.exists() else "is not a directory"
            print(f"hookd connectors: {directory} {what}", file=sys.stderr)
            return EXIT_USAGE
    else:
        candidate = Path(os.environ.get("HOOKD_CONFIG") or ".")
        directory = candidate if is_config_dir(candidate, explicit=False) else None
    connectors, diags, root = collect(directory)
    if name is not None:
        from hookd.templating.analysis import suggest

        if name not in connectors:
            print(f"hookd connectors: no connector '{name}'"
                  + (f"; {suggest(name, connectors)}" if suggest(name, connectors) else ""),
                  file=sys.stderr)
            return EXIT_USAGE
        connectors = {name: connectors[name]}
        source = connectors[name].source
        diags = [d for d in diags if source is not None and (d.file == source or source in d.file.parents)]
    diags.sort()
    base = directory.absolute() if directory is not None else None
    for d in diags:
        print(d.format(relative_to=base), file=sys.stderr)
    if args.format == "json":
        print(json.dumps(to_json(connectors, diags, root), indent=2, sort_keys=True))
    else:
        print(to_text(connectors, root, detail=name is not None), end="")
    return EXIT_ERRORS if any(d.is_error for d in diags) else EXIT_OK


# --------------------------------------------------------------------------- rendering


def _source(connector: Connector, root: Path | None) -> str:
    if connector.source is None:
        return ""
    if connector.builtin:
        return f"<builtin>/{connector.source.name}"
    if root is not None:
        try:
            return connector.source.relative_to(root).as_posix()
        except ValueError:
            pass
    return connector.source.as_posix()


def _delete_json(strategy: DeleteStrategy) -> dict[str, Any]:
    return {
        "kind": strategy.kind,
        "operation_id": strategy.operation_id,
        "id_param": strategy.id_param,
        "id_field": strategy.id_field if strategy.kind == "operation" else None,
        "source": strategy.source,
    }


def _trigger_json(connector: Connector, op: Operation) -> dict[str, Any]:
    kind = connector.trigger_kind(op.operation_id) or "polling"
    out: dict[str, Any] = {
        "operation_id": op.operation_id,
        "kind": kind,
        "supported": kind != "polling",
        "method": op.method,
        "path": op.path,
        "summary": op.summary,
        "batch": op.trigger == "batch",
        "location_header": op.location_header,
        "notification_url": None,
        "notification_schema": False,
        "secret": None,
        "delete": None,
        "list": None,
        "update": None,
    }
    webhook = connector.webhooks.get(op.operation_id)
    if webhook is not None:
        out["notification_url"] = ".".join(webhook.notification_url)
        out["notification_schema"] = webhook.notification_schema is not None
        out["secret"] = ".".join(webhook.secret_path) if webhook.secret_path else None
        out["delete"] = _delete_json(webhook.delete)
        if webhook.update is not None:
            out["update"] = {"operation_id": webhook.update.operation_id,
                             "id_param": webhook.update.id_param}
        if webhook.list is not None:
            out["list"] = {
                "operation_id": webhook.list.operation_id,
                "url_field": webhook.list.url_field,
                "id_field": webhook.list.id_field,
                "items_field": webhook.list.items_field,
            }
    return out


def connector_json(connector: Connector, root: Path | None) -> dict[str, Any]:
    ops = sorted(connector.operations.values(), key=lambda o: o.operation_id)
    v = connector.verification
    return {
        "name": connector.name,
        "title": connector.title,
        "source": _source(connector, root),
        "origin": "builtin" if connector.builtin else "config",
        "base_url": connector.base_url,
        "auth": {
            "kind": connector.auth.kind,
            "name": connector.auth.name,
            "location": connector.auth.location,
            "parameter": connector.auth.parameter,
        },
        "connection_parameters": [
            {"name": p.name, "type": p.type, "required": p.required, "secret": p.secret}
            for p in sorted(connector.connection_parameters.values(), key=lambda p: p.name)
        ],
        "parameter_sets": [
            {"name": ps.name, "title": ps.title, "parameters": sorted(ps.parameters),
             "credentials": [c.describe() for c in ps.credentials]}
            for ps in connector.parameter_sets
        ],
        "policies": [
            {"template": p.template, "title": p.title, "operations": list(p.operations),
             "applied": p.applied, "reason": p.reason, "description": p.describe()}
            for p in connector.policies
        ],
        "verification": {"kind": v.kind, "header": v.header, "prefix": v.prefix,
                         "encoding": v.encoding},
        "delivery_id_header": connector.delivery_id_header,
        "event_header": connector.event_header,
        "ping_event": connector.ping_event,
        "triggers": [{**_trigger_json(connector, op), **_policies_json(connector, op)}
                     for op in ops if op.is_trigger],
        "actions": [
            {"operation_id": op.operation_id, "method": op.method, "path": op.path,
             "summary": op.summary, **_policies_json(connector, op)}
            for op in ops if not op.is_trigger
        ],
    }


def _policies_json(connector: Connector, op: Operation) -> dict[str, Any]:
    from hookd.connectors.policies import for_operation

    mine = for_operation(connector.policies, op.operation_id)
    return {"policies": [p.describe() for p in mine if p.applied],
            "policies_not_applied": [f"{p.describe()}: {p.reason}" for p in mine if not p.applied]}


def to_json(connectors: dict[str, Connector], diags: list[Diagnostic],
            root: Path | None) -> dict[str, Any]:
    return {
        "version": JSON_VERSION,
        "connectors": [connector_json(connectors[n], root) for n in sorted(connectors)],
        "diagnostics": [d.to_json() for d in diags],
    }


def _delete_text(strategy: DeleteStrategy) -> str:
    if strategy.kind == "operation":
        how = f" ({strategy.source})" if strategy.source else ""
        return (f"Location header, else {strategy.operation_id}{how} with "
                f"{strategy.id_param} = response.{strategy.id_field}")
    if strategy.kind == "none":
        return "cannot delete (x-hookd-delete: none)"
    return "Location header only (no DELETE operation matches)"


def to_text(connectors: dict[str, Connector], root: Path | None, *, detail: bool = False) -> str:
    """One block per connector; `detail` adds the parameter sets and, per operation,
    the policy templates that change its requests."""
    lines: list[str] = []
    for name in sorted(connectors):
        c = connectors[name]
        origin = "builtin" if c.builtin else "config"
        lines.append(f"{name}  [{origin}]  {c.title}  ({_source(c, root)})")
        auth = c.auth
        where = f" ({auth.location} {auth.name})" if auth.name else ""
        lines.append(f"  auth: {auth.kind}{where}" + (f", credential from '{auth.parameter}'" if auth.parameter else ""))
        if detail or len(c.parameter_sets) > 1:
            for i, ps in enumerate(c.parameter_sets):
                label = f"parameter set '{ps.name}'" if ps.name else "parameters"
                default = " (default)" if i == 0 and len(c.parameter_sets) > 1 else ""
                creds = "; ".join(cr.describe() for cr in ps.credentials) or "no credentials"
                lines.append(f"  {label}{default}: {', '.join(ps.parameters) or '(none)'} — {creds}")
        if c.policies:
            skipped = sum(not p.applied for p in c.policies)
            lines.append(f"  policies: {len(c.policies)}"
                         + (f" ({skipped} not applied by hookd)" if skipped else ""))
        ops = sorted(c.operations.values(), key=lambda o: o.operation_id)
        triggers = [op for op in ops if op.is_trigger]
        if not triggers:
            lines.append("  triggers: none")
        for op in triggers:
            kind = c.trigger_kind(op.operation_id) or "polling"
            note = " — not yet supported" if kind == "polling" else ""
            lines.append(f"  trigger {op.operation_id}: {kind}{note}  {op.method} {op.path}")
            webhook = c.webhooks.get(op.operation_id)
            if webhook is not None:
                lines.append(f"    callback URL: {'.'.join(webhook.notification_url)}")
                lines.append(f"    delete: {_delete_text(webhook.delete)}")
                if webhook.list is not None:
                    lines.append(f"    list: {webhook.list.operation_id} (url at {webhook.list.url_field})")
                if webhook.update is not None:
                    lines.append(f"    update (settings drift): {webhook.update.operation_id} "
                                 f"with {webhook.update.id_param} = the hook's id")
            if detail:
                lines.extend(_policy_lines(c, op))
        actions = [op for op in ops if not op.is_trigger]
        if actions and detail:
            for op in actions:
                lines.append(f"  action {op.operation_id}: {op.method} {op.path}")
                lines.extend(_policy_lines(c, op))
        elif actions:
            names = [op.operation_id for op in actions]
            shown = ", ".join(names[:8]) + (f", … (+{len(names) - 8})" if len(names) > 8 else "")
            lines.append(f"  actions ({len(names)}): {shown}")
        lines.append("")
    return "\n".join(lines)


def _policy_lines(connector: Connector, op: Operation) -> list[str]:
    from hookd.connectors.policies import for_operation

    out = []
    for p in for_operation(connector.policies, op.operation_id):
        note = "" if p.applied else f"  [not applied: {p.reason}]"
        out.append(f"    policy: {p.describe()}{note}")
    return out

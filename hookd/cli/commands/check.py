"""`hookd check [DIR]`: validate a config directory, for CI and pre-commit hooks.

Prints every problem at once, sorted by file and line, as
``file:line:col: error|warning: message (key path); hint: …`` (paths relative to DIR),
or a stable JSON document with ``--format json``. Exit codes: 0 no errors (warnings
allowed), 1 errors (warnings too with ``--strict``), 2 usage or I/O error (DIR missing,
a file unreadable).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hookd.cli.commands._common import (
    EXIT_ERRORS,
    EXIT_OK,
    EXIT_USAGE,
    add_config_args,
    add_format_arg,
    config_dir,
)

if TYPE_CHECKING:
    from hookd.config.model import Config
    from hookd.diagnostics import Diagnostic

JSON_VERSION = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate a config directory (schemas, references, templates, secrets)",
        description="Validate a config directory and report all problems at once. "
        "Exit 0 when there are no errors, 1 when there are, 2 on a usage or I/O error.",
    )
    add_config_args(parser)
    add_format_arg(parser)
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    parser.add_argument("--offline-secrets", action="store_true",
                        help="check the form of secret references but do not resolve them")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hookd.config import loader as config

    directory = config_dir(args)
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is not a directory"
        print(f"hookd check: {directory} {what}", file=sys.stderr)
        return EXIT_USAGE
    result = config.load(directory, resolve_secrets=not args.offline_secrets)
    diagnostics = result.diagnostics
    if result.config is not None and not args.offline_secrets:
        diagnostics = sorted([*diagnostics, *token_diagnostics(result.config)])
    if args.strict:
        diagnostics = [d.promoted() for d in diagnostics]
    base = directory.absolute()
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    if args.format == "json":
        print(json.dumps(to_json(diagnostics, base), indent=2))
    else:
        for d in diagnostics:
            print(d.format(relative_to=base))
        summary = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
        print(f"{directory}: {'ok' if not errors else 'failed'} ({summary})", file=sys.stderr)
    if result.io_error:
        return EXIT_USAGE
    return EXIT_ERRORS if errors else EXIT_OK


def token_diagnostics(config: Config) -> list[Diagnostic]:
    """Online only: an ``oauth:`` connection an enabled flow uses without a usable token
    (none stored, refused at the last refresh) is an error naming `hookd connect NAME`."""
    import time

    from hookd.diagnostics import Diagnostic
    from hookd.oauth.readiness import unready, used_connections
    from hookd.store.tokens import open_tokens

    store = open_tokens(config.settings)
    out = []
    for item in unready(config, store.get, time.time(), used_connections(config)):
        pos = item.connection.pos
        out.append(Diagnostic(pos.file if pos else config.directory, pos.line if pos else 0,
                              pos.col if pos else 0, "error",
                              f"connection '{item.connection.name}': {item.problem}",
                              key="oauth", hint=item.hint))
    return out


def to_json(diagnostics: list[Diagnostic], base: Path) -> dict[str, Any]:
    """The documented, stable JSON form (docs/check.md); file paths relative to DIR."""
    errors = sum(d.is_error for d in diagnostics)
    items = []
    for d in diagnostics:
        try:
            file = d.file.relative_to(base).as_posix()
        except ValueError:
            file = str(d.file)
        items.append({"file": file, "line": d.line, "col": d.col, "severity": d.severity,
                      "message": d.message, "key": d.key, "hint": d.hint})
    return {"version": JSON_VERSION, "ok": errors == 0, "errors": errors,
            "warnings": len(diagnostics) - errors, "diagnostics": items}

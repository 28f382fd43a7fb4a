"""`hookd plan [DIR]`: show what the next reconcile would change upstream, change nothing.

It runs the very code `hookd apply` and the daemon run — load and validate the config,
compute desired subscriptions, read the store, list each repository/scope upstream, then
`hookd.plan.plan()` — and prints the Plan instead of executing it. Output is grouped by
action (coloured on a TTY unless ``NO_COLOR`` is set) or a stable JSON document with
``--format json``. Secrets and callback URLs (their tokens are credentials) never appear.

Exit codes: 0 no changes, 3 changes pending, 1 error (invalid config, state unreadable),
2 usage error.

The helpers here (`load_valid_config`, `open_state`, `render_plan`) are shared by
`hookd apply`, `hookd subscriptions` and `hookd teardown`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hookd.model import Config

JSON_VERSION = 1
EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_CHANGES = 0, 1, 2, 3

SYMBOLS = {"create": "+", "replace": "~", "adopt": "=", "delete": "-", "forget": ".",
           "blocked": "!", "keep": " "}
COLORS = {"create": "32", "replace": "33", "adopt": "36", "delete": "31", "forget": "2",
          "blocked": "35", "keep": "0"}
TITLES = {"create": "to create", "replace": "to replace (create new, then delete old)",
          "adopt": "to adopt (found upstream, not recorded)", "delete": "to delete",
          "forget": "records to drop (nothing upstream)",
          "blocked": "deletes blocked by max_deletes", "keep": "unchanged"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="show what a reconcile would change upstream (changes nothing)",
        description="Compare the flows' subscriptions with what hookd recorded and what the "
        "upstreams list, and print what `hookd apply` would do. Exit 0 no changes, "
        "3 changes pending, 1 error, 2 usage error.",
    )
    add_common_arguments(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="output format (default text)")
    parser.set_defaults(func=run)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", nargs="?", metavar="DIR",
                        help="config directory (default: $HOOKD_CONFIG, else the current directory)")
    parser.add_argument("--state-dir", type=Path, metavar="DIR", default=None,
                        help="state directory, overriding state_dir in hookd.yaml")


# ---------------------------------------------------------------------- shared helpers


def config_dir(args: argparse.Namespace) -> Path:
    return Path(args.directory or os.environ.get("HOOKD_CONFIG") or ".")


def load_valid_config(args: argparse.Namespace, command: str,
                      *, resolve_secrets: bool = True) -> Config | None:
    """The loaded config, or None after printing every error (nothing may then be changed)."""
    import dataclasses

    from hookd.config import load_config

    directory = config_dir(args)
    config, diagnostics = load_config(directory, resolve_secrets=resolve_secrets)
    if config is None:
        base = directory.absolute()
        for d in diagnostics:
            if d.is_error:
                print(d.format(relative_to=base), file=sys.stderr)
        print(f"hookd {command}: {directory}: invalid config; nothing was planned or changed",
              file=sys.stderr)
        return None
    if args.state_dir is not None:
        settings = dataclasses.replace(config.settings, state_dir=args.state_dir.absolute())
        config = dataclasses.replace(config, settings=settings)
    return config


def open_state(config: Config, *, create: bool) -> tuple[Any, bytes]:
    """(SubscriptionStore, server secret) for `config`.

    With ``create=False`` (plan) nothing is created: a missing state directory reads as
    empty (an in-memory store) and an ephemeral secret stands in — with no secret file,
    no callback URL upstream can be ours.
    """
    import secrets as pysecrets
    import sqlite3

    from hookd import tokens
    from hookd.store import db
    from hookd.store.subscriptions import SubscriptionStore

    state = config.settings.state_dir
    if create:
        return SubscriptionStore(db.open_db(state)), tokens.load_or_create_server_secret(state)
    secret_file = state / tokens.SECRET_FILE
    secret = (tokens.load_or_create_server_secret(state) if secret_file.exists()
              else pysecrets.token_bytes(32))
    if (state / db.DB_NAME).exists():
        conn = db.open_db(state)
    else:
        conn = sqlite3.connect(":memory:")
        conn.row_factory = sqlite3.Row
        db.migrate(conn)
    return SubscriptionStore(conn), secret


def make_upstream(config: Config) -> Any:
    from hookd.upstream import RetryPolicy, Upstream

    policy = config.settings.reconcile
    return Upstream(timeout=policy.timeout, retry=RetryPolicy(retries=policy.retries))


def use_color(stream: IO[str]) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def paint(text: str, action: str, color: bool) -> str:
    return f"\033[{COLORS[action]}m{text}\033[0m" if color and COLORS[action] != "0" else text


def item_json(item: Any) -> dict[str, Any]:
    from hookd.plan import scope_text

    scope = (item.desired.scope if item.desired is not None
             else item.row.scope if item.row is not None
             else item.hook.scope if item.hook is not None else None)
    return {
        "action": item.action,
        "subscription": item.sub_id,
        "flow": item.flow,
        "connector": item.connector,
        "where": scope_text(scope) if scope else "",
        "reason": item.reason,
        "replaces": item.old_id,
        "upstream_id": (item.hook.upstream_id if item.hook is not None
                        else item.row.upstream_id if item.row is not None else None),
    }


def render_plan(the_plan: Any, *, color: bool, heading: str = "") -> str:
    """Grouped text, one line per item; a summary line last."""
    from hookd.plan import ACTIONS

    lines: list[str] = []
    if heading:
        lines.append(heading)
    for action in ACTIONS:
        if action == "keep":
            continue
        items = the_plan.by_action(action)
        if not items:
            continue
        lines.append("")
        lines.append(paint(f"{TITLES[action]} ({len(items)}):", action, color))
        for item in items:
            data = item_json(item)
            where = f" [{data['where']}]" if data["where"] else ""
            if data["upstream_id"] and action in ("delete", "blocked", "adopt", "replace"):
                where += f" hook {data['upstream_id']}"
            flow = item.flow or "(no flow)"
            lines.append(paint(f"  {SYMBOLS[action]} {flow}  {item.sub_id}{where}", action, color)
                         + f"\n      {item.reason}")
    for warning in the_plan.warnings:
        lines.append(f"warning: {warning}")
    lines.append("")
    lines.append(summary_line(the_plan))
    return "\n".join(lines)


def summary_line(the_plan: Any) -> str:
    counts = the_plan.counts()
    if not the_plan.has_changes:
        return f"No changes. {counts['keep']} subscription(s) up to date."
    parts = [f"{counts[a]} to {a}" for a in ("create", "replace", "adopt", "delete")
             if counts[a]]
    if counts["forget"]:
        parts.append(f"{counts['forget']} record(s) to drop")
    if counts["blocked"]:
        parts.append(f"{counts['blocked']} delete(s) blocked")
    parts.append(f"{counts['keep']} unchanged")
    return "Plan: " + ", ".join(parts) + "."


def plan_json(the_plan: Any) -> dict[str, Any]:
    return {
        "version": JSON_VERSION,
        "changes": len(the_plan.changes),
        "counts": the_plan.counts(),
        "max_deletes": the_plan.max_deletes,
        "items": [item_json(i) for i in the_plan.items],
        "warnings": list(the_plan.warnings),
    }


# ---------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sqlite3

    config = load_valid_config(args, "plan")
    if config is None:
        return EXIT_ERRORS
    try:
        store, secret = open_state(config, create=False)
    except (OSError, ValueError, sqlite3.Error) as exc:
        print(f"hookd plan: cannot read the state: {exc}", file=sys.stderr)
        return EXIT_ERRORS
    the_plan = asyncio.run(_plan(config, store, secret))
    if args.format == "json":
        print(json.dumps(plan_json(the_plan), indent=2))
    else:
        print(render_plan(the_plan, color=use_color(sys.stdout),
                          heading=f"hookd plan: {config_dir(args)}"))
    return EXIT_CHANGES if the_plan.has_changes else EXIT_OK


async def _plan(config: Config, store: Any, secret: bytes) -> Any:
    from hookd.reconcile import Reconciler

    async with make_upstream(config) as upstream:
        return await Reconciler(config, store, upstream, secret).plan()

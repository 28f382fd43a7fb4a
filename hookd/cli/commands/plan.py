"""`hookd plan [DIR]`: show what the next reconcile would change upstream, change nothing.

It runs the very code `hookd apply` and the daemon run — load and validate the config,
compute desired subscriptions, read the store, list each repository/scope upstream, then
`hookd.subscriptions.plan.plan()` — and prints the Plan instead of executing it. Output is grouped by
action (coloured on a TTY unless ``NO_COLOR`` is set) or a stable JSON document with
``--format json``. Under each create, replace and delete: the exact requests apply would
send — method, full URL, headers, JSON body, the connector's policies applied — with
every secret, the callback URL's token and the signing secret as ``***``.

Exit codes: 0 no changes, 3 changes pending, 1 error (invalid config, state unreadable),
2 usage error.

The helpers here (`open_state`, `make_upstream`, `render_plan`) are shared by `hookd
apply` and `hookd teardown`; what every command shares is in `hookd.cli.commands._common`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import IO, TYPE_CHECKING, Any

from hookd.cli.commands._common import (
    EXIT_CHANGES,
    EXIT_ERRORS,
    EXIT_OK,
    add_config_args,
    add_format_arg,
    add_state_arg,
    config_dir,
    load_valid_config,
    open_existing_store,
    run_on,
    server_secret_for,
)

if TYPE_CHECKING:
    from hookd.config.model import Config
    from hookd.store.interface import Store, Subscriptions

JSON_VERSION = 1

SYMBOLS = {"create": "+", "replace": "~", "update": "*", "adopt": "=", "delete": "-", "forget": ".",
           "blocked": "!", "keep": " "}
COLORS = {"create": "32", "replace": "33", "update": "33", "adopt": "36", "delete": "31", "forget": "2",
          "blocked": "35", "keep": "0"}
TITLES = {"create": "to create", "replace": "to replace (create new, then delete old)",
          "update": "to update (settings changed upstream)",
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
    add_config_args(parser)
    add_state_arg(parser)
    add_format_arg(parser)
    parser.set_defaults(func=run)


# ---------------------------------------------------------------------- shared helpers


def open_state(config: Config, *, create: bool) -> tuple[Store, bytes]:
    """(the store, server secret) for `config`; the caller closes the store.

    With ``create=False`` (plan) nothing is created: a missing state directory reads as
    empty (an ephemeral store) and an ephemeral secret stands in — with no secret file,
    no callback URL upstream can be ours.
    """
    import secrets as pysecrets

    from hookd import store as stores

    state = config.settings.state_dir
    if create:
        made = server_secret_for(config.settings, create=True)
        assert made is not None  # create=True always returns one
        secret = made
        store = stores.open(config.settings, role="cli")
    else:
        secret = server_secret_for(config.settings, create=False) or pysecrets.token_bytes(32)
        store = (open_existing_store(config.settings)
                 or stores.open(state, role="cli", mode="ephemeral"))
    return store, secret


def config_and_state(args: argparse.Namespace, command: str,
                     *, create: bool) -> tuple[Config, Store, bytes] | None:
    """(config, the store, server secret) for plan, apply and teardown, or None after
    saying why not (an invalid config, an unreadable state); the caller closes the store."""
    from hookd.store.errors import StoreError

    config = load_valid_config(args, command)
    if config is None:
        return None
    try:
        store, secret = open_state(config, create=create)
    except (OSError, ValueError, StoreError) as exc:
        print(f"hookd {command}: cannot {'open' if create else 'read'} the state: {exc}",
              file=sys.stderr)
        return None
    return config, store, secret


def make_upstream(config: Config) -> Any:
    from hookd.reconcile.reconciler import with_tokens
    from hookd.upstream.client import RetryPolicy, Upstream

    policy = config.settings.reconcile
    return with_tokens(Upstream(timeout=policy.timeout, retry=RetryPolicy(retries=policy.retries)),
                       config.settings)


def use_color(stream: IO[str]) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def paint(text: str, action: str, color: bool) -> str:
    return f"\033[{COLORS[action]}m{text}\033[0m" if color and COLORS[action] != "0" else text


def item_json(item: Any) -> dict[str, Any]:
    from hookd.subscriptions.plan import scope_text

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


def render_plan(the_plan: Any, *, color: bool, heading: str = "",
                requests: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """Grouped text, one line per item (and, given `requests`, the exact requests under
    it); a summary line last."""
    from hookd.subscriptions.plan import ACTIONS

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
            if data["upstream_id"] and action in ("delete", "blocked", "adopt", "replace",
                                                  "update"):
                where += f" hook {data['upstream_id']}"
            flow = item.flow or "(no flow)"
            lines.append(paint(f"  {SYMBOLS[action]} {flow}  {item.sub_id}{where}", action, color)
                         + f"\n      {item.reason}")
            for request in (requests or {}).get(item.sub_id, ()):
                lines.extend(request_lines(request))
    for warning in the_plan.warnings:
        lines.append(f"warning: {warning}")
    lines.append("")
    lines.append(summary_line(the_plan))
    return "\n".join(lines)


def request_lines(request: dict[str, Any]) -> list[str]:
    """One previewed request (`Reconciler.preview`) as indented text."""
    if "error" in request:
        return [f"      (cannot build the request: {request['error']})"]
    lines = [f"      {request['method']} {request['url']}"]
    lines += [f"        {name}: {value}" for name, value in request["headers"].items()]
    if "body" in request:
        lines.append(f"        body: {json.dumps(request['body'], sort_keys=True)}")
    if "form" in request:
        lines.append(f"        form: {json.dumps(request['form'], sort_keys=True)}")
    lines += [f"        policy: {p}" for p in request.get("policies", ())]
    return lines


def summary_line(the_plan: Any) -> str:
    counts = the_plan.counts()
    if not the_plan.has_changes:
        return f"No changes. {counts['keep']} subscription(s) up to date."
    parts = [f"{counts[a]} to {a}" for a in ("create", "replace", "update", "adopt", "delete")
             if counts[a]]
    if counts["forget"]:
        parts.append(f"{counts['forget']} record(s) to drop")
    if counts["blocked"]:
        parts.append(f"{counts['blocked']} delete(s) blocked")
    parts.append(f"{counts['keep']} unchanged")
    return "Plan: " + ", ".join(parts) + "."


def plan_json(the_plan: Any,
              requests: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    items = []
    for i in the_plan.items:
        data = item_json(i)
        if requests is not None:
            data["requests"] = requests.get(i.sub_id, [])
        items.append(data)
    return {
        "version": JSON_VERSION,
        "changes": len(the_plan.changes),
        "counts": the_plan.counts(),
        "max_deletes": the_plan.max_deletes,
        "items": items,
        "warnings": list(the_plan.warnings),
    }


# ---------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:

    loaded = config_and_state(args, "plan", create=False)
    if loaded is None:
        return EXIT_ERRORS
    config, store, secret = loaded
    the_plan, requests = run_on(store, lambda s: _plan(config, s.subscriptions, secret))
    if args.format == "json":
        print(json.dumps(plan_json(the_plan, requests), indent=2))
    else:
        print(render_plan(the_plan, color=use_color(sys.stdout),
                          heading=f"hookd plan: {config_dir(args)}", requests=requests))
    return EXIT_CHANGES if the_plan.has_changes else EXIT_OK


async def _plan(config: Config, store: Subscriptions, secret: bytes) -> Any:
    from hookd.reconcile.reconciler import Reconciler

    async with make_upstream(config) as upstream:
        reconciler = Reconciler(config, store, upstream, secret)
        the_plan = await reconciler.plan()
        return the_plan, reconciler.preview(the_plan)

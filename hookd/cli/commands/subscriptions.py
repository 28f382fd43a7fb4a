"""`hookd subscriptions [DIR]`: what the state store holds — each subscription hookd created
upstream with its status and last error — and the callback routes of request-trigger flows.

Never prints a signing secret. Callback URLs of upstream subscriptions are not printed
either (their token is a credential); those of request-trigger flows (the ``http``
connector) are, because the operator has to hand that URL to whoever calls it.

Exit codes: 0 listed, 1 invalid config or unreadable state, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hookd.cli.commands._common import (
    EXIT_ERRORS,
    EXIT_OK,
    add_config_args,
    add_format_arg,
    add_state_arg,
    existing_server_secret,
    load_valid_config,
    open_existing_store,
    table_lines,
    utc_time,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "subscriptions",
        help="list the subscriptions hookd created upstream, with status and last error",
        description="List the state store's subscriptions (status, upstream id, last error) "
        "and the callback URLs of request-trigger flows.",
    )
    add_config_args(parser)
    add_state_arg(parser)
    add_format_arg(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from hookd.store.errors import StoreError
    from hookd.subscriptions import desired

    config = load_valid_config(args, "subscriptions", resolve_secrets=False)
    if config is None:
        return EXIT_ERRORS
    state = config.settings.state_dir
    try:
        store = open_existing_store(state)
        rows = []
        if store is not None:
            try:
                rows = asyncio.run(store.subscriptions.all())
            finally:
                store.close()
        secret = existing_server_secret(state)
    except (OSError, ValueError, StoreError) as exc:
        print(f"hookd subscriptions: cannot read the state: {exc}", file=sys.stderr)
        return EXIT_ERRORS
    routes = []
    if secret is not None:
        routes = [d for d in desired.desired_subscriptions(config, secret) if not d.upstream]
    if args.format == "json":
        print(json.dumps({
            "version": 1,
            "subscriptions": [r.public_dict() for r in rows],
            "request_triggers": [{"subscription": d.id, "flow": d.flow,
                                  "callback_url": d.callback_url} for d in routes],
        }, indent=2))
        return EXIT_OK
    if not rows:
        print("No upstream subscriptions recorded.")
    else:
        header = ("FLOW", "SUBSCRIPTION", "STATUS", "CONNECTOR", "UPSTREAM ID", "VERIFIED")
        table = [header] + [
            (r.flow, r.id, r.status, r.connector, r.upstream_id or "-", utc_time(r.verified_at))
            for r in rows]
        for n, line in enumerate(table_lines(table)):
            print(line)
            if n and rows[n - 1].last_error:
                print(f"    last error: {rows[n - 1].last_error}")
    if routes:
        print("\nRequest-trigger flows (give this URL to the caller; it is a credential):")
        for d in routes:
            print(f"  {d.flow}  {d.callback_url}")
    elif secret is None and any(not f.trigger.connector or f.trigger.connector == "http"
                                for f in config.flows.values()):
        print("\n(no state yet: callback URLs are minted when hookd first runs or applies)")
    return EXIT_OK

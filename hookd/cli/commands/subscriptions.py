"""`hookd subscriptions [DIR]`: what the state store holds — each subscription hookd created
upstream with its status and last error — and the callback routes of request-trigger flows.

Never prints a signing secret. Callback URLs of upstream subscriptions are not printed
either (their token is a credential); those of request-trigger flows (the ``http``
connector) are, because the operator has to hand that URL to whoever calls it.

`hookd subscriptions forget ID [--force]` drops one record without contacting the
upstream: the way out for a record hookd cannot delete by itself (a connector without a
delete operation). It reads only hookd.yaml's ``state_dir`` (or ``--state-dir``), so it
works while the config is broken.

Exit codes: 0 listed (or forgotten), 1 invalid config, unreadable state, unknown id or a
refused forget, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from hookd.cli.commands._common import (
    EXIT_ERRORS,
    EXIT_OK,
    EXIT_USAGE,
    add_config_args,
    add_dir_or_subcommands,
    add_format_arg,
    add_state_arg,
    load_valid_config,
    open_existing_store,
    run_on,
    server_secret_for,
    table_lines,
    unvalidated_state_dir,
    unvalidated_store,
    utc_time,
)

if TYPE_CHECKING:
    from hookd.store.interface import Store
    from hookd.store.records import SubscriptionRow


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "subscriptions",
        help="list the subscriptions hookd created upstream, with status and last error",
        description="List the state store's subscriptions (status, upstream id, last error) "
        "and the callback URLs of request-trigger flows.",
    )
    add_config_args(parser, positional=False)
    add_state_arg(parser)
    add_format_arg(parser)
    parser.set_defaults(func=run)
    sub = add_dir_or_subcommands(parser, dest="subscriptions_command",
                                 metavar="DIR | forget ID")
    forget = sub.add_parser(
        "forget", help="drop a subscription's record (no upstream call)",
        description="Drop the state store's record of subscription ID without contacting "
        "the upstream: for a record hookd cannot delete by itself. Refused while the "
        "record says a hook exists upstream, unless --force.")
    forget.add_argument("id", metavar="ID", help="subscription id (hookd subscriptions lists them)")
    forget.add_argument("--force", action="store_true",
                        help="forget it even though the record names an upstream hook "
                        "(that hook is left as it is)")
    add_config_args(forget, positional=False, nested=True)
    add_state_arg(forget, nested=True)
    forget.set_defaults(func=run_forget)


def run(args: argparse.Namespace) -> int:

    from hookd.store.errors import StoreError
    from hookd.subscriptions import desired

    config = load_valid_config(args, "subscriptions", resolve_secrets=False)
    if config is None:
        return EXIT_ERRORS
    try:
        store = open_existing_store(config.settings)
        rows = run_on(store, lambda s: s.subscriptions.all()) if store is not None else []
        secret = server_secret_for(config.settings, create=False)
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


def run_forget(args: argparse.Namespace) -> int:
    from hookd.store.errors import StoreError

    where = unvalidated_store(args, "subscriptions forget")
    if where is None:
        return EXIT_USAGE
    store = open_existing_store(where)
    if store is None:
        print(f"hookd subscriptions forget: no store in {unvalidated_state_dir(args)} "
              "(has hookd run with this config?)", file=sys.stderr)
        return EXIT_USAGE

    async def forget(store: Store) -> tuple[int, SubscriptionRow | None, str]:
        row = await store.subscriptions.get(args.id)
        if row is None:
            print(f"hookd subscriptions forget: no subscription {args.id!r} is recorded "
                  "(`hookd subscriptions` lists them)", file=sys.stderr)
            return EXIT_ERRORS, None, ""
        upstream = ", ".join(p for p in (
            f"upstream id {row.upstream_id}" if row.upstream_id else "",
            f"Location {row.location}" if row.location else "") if p)
        if upstream and not args.force:
            print(f"hookd subscriptions forget: {row.id} (flow {row.flow}) still has a hook "
                  f"upstream as far as hookd knows ({upstream}); forgetting the record would "
                  "leave that hook delivering to a callback URL that no longer answers. "
                  "Remove its flow and run `hookd apply` to delete it upstream, or delete "
                  "it upstream by hand and then pass --force.", file=sys.stderr)
            return EXIT_ERRORS, None, ""
        await store.subscriptions.remove(row.id)
        return EXIT_OK, row, upstream

    try:
        code, row, upstream = run_on(store, forget)
    except StoreError as exc:
        print(f"hookd subscriptions forget: {exc}", file=sys.stderr)
        return EXIT_ERRORS
    if row is None:
        return code
    print(f"forgot subscription {row.id}: flow {row.flow}, {row.connector}, status "
          f"{row.status}" + (f", {upstream} (left upstream as it is)" if upstream else ""))
    if row.last_error:
        print(f"  last error was: {row.last_error}")
    print(f"  if flow {row.flow!r} still asks for it, the next reconcile creates it again")
    return EXIT_OK

"""`hookd teardown [DIR]`: delete every upstream subscription hookd owns.

For decommissioning an installation: recorded subscriptions and any unrecorded hook that
carries a callback URL this server minted are deleted (hooks of other owners are never
touched). It prints the plan and asks for confirmation, unless ``--yes``; without a
terminal it refuses to proceed without ``--yes``. ``max_deletes`` does not apply: the
confirmation is the safety.

It runs only as the leader, as `hookd apply` does: while a daemon (a replica) runs and
leads it refuses, since the leader would create the hooks again.

Exit codes: 0 everything deleted (or nothing to delete), 1 invalid config, a delete
failed or another process holds the reconcile lock, 2 usage error or not confirmed.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from hookd.cli.commands._common import (
    EXIT_ERRORS,
    EXIT_OK,
    EXIT_USAGE,
    add_config_args,
    add_state_arg,
    run_on,
)
from hookd.cli.commands._reconcile_lock import add_wait_arg, as_leader
from hookd.cli.commands.apply import render_report
from hookd.cli.commands.plan import config_and_state, make_upstream, render_plan, use_color

if TYPE_CHECKING:
    from hookd.config.model import Config
    from hookd.store.interface import Subscriptions

UNLIMITED = 1_000_000


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "teardown",
        help="delete every upstream subscription hookd owns (asks first)",
        description="Delete every subscription hookd created upstream. Prints what will be "
        "deleted and asks for confirmation unless --yes.",
    )
    add_config_args(parser)
    add_state_arg(parser)
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    add_wait_arg(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    loaded = config_and_state(args, "teardown", create=True)
    if loaded is None:
        return EXIT_ERRORS
    config, store, secret = loaded
    empty = dataclasses.replace(config, flows={}, empty_flow_files=())
    code = run_on(store, lambda s: as_leader(
        s, "teardown", args.wait, lambda: _teardown(empty, s.subscriptions, secret, args.yes)))
    return EXIT_ERRORS if code is None else code


async def _teardown(config: Config, store: Subscriptions, secret: bytes, yes: bool) -> int:
    from hookd.reconcile.reconciler import Reconciler

    color = use_color(sys.stdout)
    async with make_upstream(config) as upstream:
        reconciler = Reconciler(config, store, upstream, secret)
        the_plan = await reconciler.plan(allow_deletes=UNLIMITED)
        if not the_plan.has_changes:
            print("Nothing to tear down: hookd owns no upstream subscriptions.")
            return EXIT_OK
        print(render_plan(the_plan, color=color, heading="hookd teardown"))
        if not yes:
            if not sys.stdin.isatty():
                print("hookd teardown: not confirmed (no terminal); pass --yes", file=sys.stderr)
                return EXIT_USAGE
            n = len(the_plan.by_action("delete"))
            answer = input(f"Delete {n} upstream subscription(s)? Type 'yes' to confirm: ")
            if answer.strip().lower() != "yes":
                print("Aborted; nothing was deleted.")
                return EXIT_USAGE
        report = await reconciler.apply(the_plan)
    print(render_report(report, color=color))
    return EXIT_ERRORS if report.failed() else EXIT_OK

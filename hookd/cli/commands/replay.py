"""`hookd replay RUN|DELIVERY`: run a recorded delivery's flow again.

The delivery goes back into the durable queue and the worker (the running daemon, or the
next one to start) creates a new run for it — the next attempt — on the current config;
the earlier runs stay in the history. Works on the store hookd.yaml's ``store:`` names
directly (the state directory's SQLite file, or the shared PostgreSQL database, where any
replica's worker picks it up), so no daemon is needed to queue it. Exit codes: 0 queued; 1 unknown, still queued/running, or
pruned; 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
from typing import Any

from hookd.cli.commands._common import EXIT_OK
from hookd.cli.commands.runs import add_location_args, with_store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay", help="run a recorded delivery again (by run or delivery id)",
        description="Queue the delivery of RUN (or DELIVERY) again; the daemon's worker "
        "creates a new run for it. Use after fixing what made a run fail.",
    )
    parser.add_argument("target", metavar="RUN|DELIVERY", help="a run id (or unique prefix) "
                        "or a delivery id")
    add_location_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Every refusal (unknown, still queued or running, pruned: the store's NotFound,
    # Conflict, Gone) is exit 1 with the store's reason; no store is exit 2.
    delivery_id = with_store(args, lambda s: s.runs.replay(args.target))
    if isinstance(delivery_id, int):
        return delivery_id
    print(f"queued delivery {delivery_id} for a new run")
    return EXIT_OK

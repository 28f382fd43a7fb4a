"""`hookd run`: the daemon in the foreground (what the systemd unit starts).

Exit codes: 0 after a graceful stop (SIGTERM/SIGINT), 1 the config is invalid (the
`hookd check` report is printed), 2 an I/O problem (config directory missing, state
store cannot be opened, a listener cannot bind).
"""

from __future__ import annotations

import argparse
from typing import Any

from hookd.cli.commands._common import add_config_args, add_state_arg, config_dir, listener_arg


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the daemon: listeners, hot reload, scheduled reconcile",
        description="Run hookd in the foreground. SIGHUP reloads the config; SIGTERM or "
        "SIGINT stops gracefully (upstream hooks are kept).",
    )
    add_config_args(parser)
    add_state_arg(parser, help="state directory, overriding state_dir in hookd.yaml (the "
                  "systemd unit passes $STATE_DIRECTORY)")
    # Replicas sharing one config directory (and, on one machine, one host) each need
    # their own ports: docs/scale-out.md.
    parser.add_argument("--public", type=listener_arg, metavar="HOST:PORT",
                        help="callback listener, overriding listen.public in hookd.yaml")
    parser.add_argument("--admin", type=listener_arg, metavar="HOST:PORT",
                        help="admin listener, overriding listen.admin in hookd.yaml")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hookd.daemon import lifecycle as daemon

    return daemon.main(config_dir(args), state_dir=args.state_dir, public=args.public,
                       admin=args.admin)

"""`hookd run`: the daemon in the foreground (what the systemd unit starts).

Exit codes: 0 after a graceful stop (SIGTERM/SIGINT), 1 the config is invalid (the
`hookd check` report is printed), 2 an I/O problem (config directory missing, state
store cannot be opened, a listener cannot bind).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the daemon: listeners, hot reload, scheduled reconcile",
        description="Run hookd in the foreground. SIGHUP reloads the config; SIGTERM or "
        "SIGINT stops gracefully (upstream hooks are kept).",
    )
    parser.add_argument(
        "--config", "-c", type=Path, metavar="DIR",
        default=Path(os.environ.get("HOOKD_CONFIG", ".")),
        help="config directory (default: $HOOKD_CONFIG, else the current directory)",
    )
    parser.add_argument(
        "--state-dir", type=Path, metavar="DIR", default=None,
        help="state directory, overriding state_dir in hookd.yaml (the systemd unit passes "
        "$STATE_DIRECTORY)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hookd import daemon

    return daemon.main(args.config, state_dir=args.state_dir)

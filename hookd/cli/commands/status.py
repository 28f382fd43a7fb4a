"""`hookd status`: ask the running daemon how it is doing (its admin listener).

Exit codes: 0 running and healthy, 1 running but needing attention (the newest config was
rejected, or subscriptions are failing), 2 the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hookd.cli.commands._common import (
    EXIT_USAGE,
    UsageError,
    add_config_args,
    add_format_arg,
    add_state_arg,
    config_dir,
    local_url,
    unvalidated_admin_listener,
    unvalidated_setting,
    unvalidated_state_dir,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show what the running daemon is doing",
        description="Query the admin listener of a running hookd: config revision, last "
        "reload, subscriptions by state, recent failures, inbox depth, runs in the last hour.",
    )
    where = parser.add_mutually_exclusive_group()
    add_config_args(where, help="find the admin listener in DIR/hookd.yaml (default: "
                    "$HOOKD_CONFIG, else the current directory)")
    where.add_argument("--admin", metavar="URL", help="admin listener URL, e.g. http://127.0.0.1:8081")
    add_state_arg(parser, help="where the admin token is (<DIR>/admin.token) when hookd.yaml "
                  "sets no admin.token (default: the config's state directory)")
    add_format_arg(parser)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    parser.set_defaults(func=run)


def admin_url(args: argparse.Namespace) -> str:
    """The admin listener's URL: ``--admin``, else ``listen.admin`` of hookd.yaml read on
    its own (the rest of the config may be broken: that is when status is needed).
    Raises UsageError when hookd.yaml does not say."""
    if args.admin:
        return str(args.admin).rstrip("/")
    listener = unvalidated_admin_listener(args)
    if isinstance(listener, str):
        raise UsageError(f"cannot find the admin listener: {listener}; use --admin URL")
    return local_url(listener)


def admin_headers(args: argparse.Namespace) -> dict[str, str]:
    """``Authorization`` for the admin API (`hookd.admin.auth`): ``$HOOKD_ADMIN_TOKEN``,
    else hookd.yaml's ``admin.token`` reference, else ``admin.token`` in the state
    directory — all read without validating the config, as `admin_url` does."""
    import os

    from hookd.admin.auth import client_token
    from hookd.config import secrets

    token = os.environ.get("HOOKD_ADMIN_TOKEN")
    if not token:
        root = config_dir(args)
        token = client_token(
            unvalidated_setting(args, "admin", "token"), unvalidated_state_dir(args),
            lambda text: secrets.resolve_value(secrets.parse_ref(text) or text, base_dir=root))
    return {"Authorization": f"Bearer {token}"} if token else {}


def run(args: argparse.Namespace) -> int:
    import httpx

    from hookd.daemon import status

    base = admin_url(args)
    try:
        response = httpx.get(f"{base}/api/status", timeout=args.timeout,
                             headers=admin_headers(args))
        if response.status_code == 401:
            print("hookd status: the admin listener wants its token: give -c DIR or "
                  "--state-dir DIR (it reads admin.token there), or set HOOKD_ADMIN_TOKEN",
                  file=sys.stderr)
            return EXIT_USAGE
        response.raise_for_status()
        doc = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"hookd status: no hookd answering at {base}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "json":
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(status.format_text(doc))
    return status.exit_code(doc)

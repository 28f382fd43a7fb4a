"""`hookd status`: ask the running daemon how it is doing (its admin listener).

Exit codes: 0 running and healthy, 1 running but needing attention (the newest config was
rejected, or subscriptions are failing), 2 the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from hookd.cli.commands._common import (
    EXIT_USAGE,
    add_config_args,
    add_format_arg,
    add_state_arg,
    load_valid_config,
    local_url,
)

if TYPE_CHECKING:
    from hookd.config.model import Config


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
    add_state_arg(parser, help="where the admin token is (<DIR>/admin.token) when the "
                  "config does not say (default: the config's state directory)")
    add_format_arg(parser)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    parser.set_defaults(func=run)


def admin_url(args: argparse.Namespace) -> tuple[str | None, Config | None]:
    """The admin listener's URL, and the config it came from (None with ``--admin``)."""
    if args.admin:
        return str(args.admin).rstrip("/"), None
    config = load_valid_config(args, "status", resolve_secrets=False,
                               consequence="cannot find the admin listener")
    return (None, None) if config is None else (local_url(config.settings.admin), config)


def admin_headers(args: argparse.Namespace, config: Config | None) -> dict[str, str]:
    """``Authorization`` for the admin API (`hookd.admin.auth`): ``$HOOKD_ADMIN_TOKEN``,
    else the config's ``admin.token``, else ``admin.token`` in the state directory."""
    import os

    from hookd.admin.auth import client_token
    from hookd.config import secrets

    token = os.environ.get("HOOKD_ADMIN_TOKEN") or client_token(
        config.settings if config is not None else None, getattr(args, "state_dir", None),
        lambda ref: secrets.resolve_value(
            ref, base_dir=config.directory if config is not None else None))
    return {"Authorization": f"Bearer {token}"} if token else {}


def run(args: argparse.Namespace) -> int:
    import httpx

    from hookd.daemon import status

    base, config = admin_url(args)
    if base is None:
        print("hookd status: cannot read the admin listener address; use --admin URL",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        response = httpx.get(f"{base}/api/status", timeout=args.timeout,
                             headers=admin_headers(args, config))
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

"""`hookd migrate [DIR]`: bring the PostgreSQL store's schema up to this hookd's version.

Every replica migrates at start anyway (under a lock); this is for doing it ahead of a
rolling upgrade (docs/scale-out.md). With the SQLite store there is nothing to do ahead:
the file is migrated when hookd opens it.

Exit codes: 0 migrated or up to date, 1 invalid config or the database is newer than
this hookd, 2 the database cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hookd.cli.commands._common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, add_config_args


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="apply the PostgreSQL store's schema migrations (also done at start)",
        description="Apply the schema migrations the PostgreSQL database of hookd.yaml's "
        "store: lacks. Replicas do this at start; run it ahead of a rolling upgrade.",
    )
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from hookd.cli.commands._common import load_valid_config
    from hookd.config.secrets import SecretError
    from hookd.store.postgres import connection, schema
    from hookd.store.postgres.store import resolve_url

    config = load_valid_config(args, "migrate", consequence="nothing was migrated")
    if config is None:
        return EXIT_ERRORS
    store = config.settings.store
    if store.kind == "sqlite" or store.url is None:
        print("hookd migrate: the store is SQLite: hookd migrates its file when it opens it; "
              "nothing to do")
        return EXIT_OK
    try:
        url = resolve_url(store.url)
    except (SecretError, ValueError) as e:
        print(f"hookd migrate: {e}", file=sys.stderr)
        return EXIT_ERRORS

    async def migrate() -> list[int]:
        async with await connection.connect(url) as conn:
            return await schema.migrate(conn)

    try:
        applied = asyncio.run(migrate())
    except schema.SchemaTooNew as e:
        print(f"hookd migrate: {e}", file=sys.stderr)
        return EXIT_ERRORS
    except connection.StoreUnavailable as e:
        print(f"hookd migrate: {e}", file=sys.stderr)
        return EXIT_USAGE
    where = connection.redact(url)
    if applied:
        print(f"{where}: applied migrations {', '.join(map(str, applied))} "
              f"(schema version {applied[-1]})")
    else:
        print(f"{where}: up to date (schema version {schema.LATEST})")
    return EXIT_OK

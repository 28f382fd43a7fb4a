"""`hookd store copy --from sqlite:DIR --to postgresql://…`: move an install's state.

Copies a SQLite state directory into an empty PostgreSQL database in one transaction
(`hookd.store.postgres.importer`): subscriptions, deliveries, runs, the dedup window and
the server secret, so callback URLs stay valid and no upstream hook is re-created.

Exit codes: 0 copied, 1 refused (no source, a target in use; nothing changed), 2 usage
or the database cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hookd.cli.commands._common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, UsageError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "store", help="move state between stores (store copy)",
        description="Operations on the store itself.")
    sub = parser.add_subparsers(dest="store_command", metavar="COMMAND", required=True)
    copy = sub.add_parser(
        "copy", help="copy a SQLite state directory into an empty PostgreSQL database",
        description="Copy subscriptions, deliveries, runs, the dedup window and the server "
        "secret from a SQLite state directory into an empty PostgreSQL database (one "
        "transaction; the source is only read). Stop the SQLite hookd first.")
    copy.add_argument("--from", dest="source", required=True, metavar="sqlite:DIR",
                      help="the SQLite state directory (where hookd.db and server.secret are)")
    copy.add_argument("--to", dest="target", required=True, metavar="URL",
                      help="postgresql://USER@HOST/DB, or a secret reference to one "
                      "(${env:NAME}, ${file:PATH}, ${credential:NAME})")
    copy.set_defaults(func=run_copy)


def run_copy(args: argparse.Namespace) -> int:
    import asyncio

    from hookd.config.secrets import SecretError, parse_ref
    from hookd.store.postgres import connection, schema
    from hookd.store.postgres.importer import CopyRefused, copy_sqlite
    from hookd.store.postgres.store import resolve_url

    kind, sep, path = str(args.source).partition(":")
    if not sep or kind != "sqlite" or not path:
        raise UsageError(f"--from {args.source!r}: expected sqlite:DIR (a state directory)")
    ref = parse_ref(args.target)
    try:
        url = resolve_url(ref if ref is not None else args.target)
    except (SecretError, ValueError) as e:
        raise UsageError(f"--to: {e}") from None
    try:
        copied = asyncio.run(copy_sqlite(Path(path).expanduser(), url))
    except (CopyRefused, schema.SchemaTooNew) as e:
        print(f"hookd store copy: {e}; nothing was copied", file=sys.stderr)
        return EXIT_ERRORS
    except connection.StoreUnavailable as e:
        print(f"hookd store copy: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"copied into {connection.redact(url)}: {copied.summary()}")
    return EXIT_OK

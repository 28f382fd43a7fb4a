"""`hookd store copy`: move a SQLite install into PostgreSQL without touching any upstream.

Everything that makes the install what it is goes over in one transaction: the
subscriptions (with their signing secrets), the deliveries (queued ones stay queued;
``running`` ones, left by a stopped daemon, become queued), the runs with their steps,
the delivery ids of the dedup window, and the server secret. With the same secret and
the same rows the callback URLs are the same, so the next reconcile keeps every hook.

The OAuth tokens of ``STATE/oauth/`` go too.

The target must be migrated and empty (no subscriptions, deliveries or runs) and may
hold only the same server secret: copying into a database in use would mix two installs.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hookd.store.postgres import meta, schema
from hookd.store.postgres.connection import Conn, StoreUnavailable, connect, describe
from hookd.store.postgres.runs import RUN_COLUMNS, STEP_COLUMNS
from hookd.store.postgres.subscriptions import COLUMNS as SUBSCRIPTION_COLUMNS

SQLITE_DB = "hookd.db"  # hookd.store.sqlite.db.DB_NAME
SECRET_FILE = "server.secret"  # hookd.subscriptions.tokens.SECRET_FILE

_DELIVERY_COLUMNS = (
    "id, subscription_id, flow, received_at, headers, body, event, dedup_key, item,"
    " status, attempts, flags, error, updated_at"
)


class CopyRefused(Exception):
    """The copy cannot be done as asked (no source, a target in use); nothing changed."""


@dataclass(frozen=True)
class Copied:
    subscriptions: int
    deliveries: int
    runs: int
    steps: int
    dedup_keys: int
    tokens: int = 0

    def summary(self) -> str:
        return (f"{self.subscriptions} subscriptions, {self.deliveries} deliveries, "
                f"{self.runs} runs ({self.steps} steps), {self.dedup_keys} delivery ids, "
                f"{self.tokens} connections' OAuth tokens, the server secret")


def _source(state_dir: Path) -> tuple[sqlite3.Connection, bytes]:
    db, secret_file = state_dir / SQLITE_DB, state_dir / SECRET_FILE
    if not db.is_file():
        raise CopyRefused(f"{db}: no hookd state here (expected the SQLite file hookd.db)")
    try:
        secret = secret_file.read_bytes()
    except FileNotFoundError:
        raise CopyRefused(f"{secret_file}: missing; without it every callback URL would "
                          "change") from None
    if len(secret) != meta.SECRET_BYTES:
        raise CopyRefused(f"{secret_file}: {len(secret)} bytes, expected {meta.SECRET_BYTES}")
    # Read-only: the copy never changes the source (keep it until PostgreSQL runs well).
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    return conn, secret


async def copy_sqlite(state_dir: Path, url: str) -> Copied:
    """Copy the SQLite state in `state_dir` into the PostgreSQL database at `url`."""
    source, secret = _source(Path(state_dir))
    try:
        async with await connect(url) as conn:
            await schema.migrate(conn)
            try:
                async with conn.transaction():
                    await _check_empty(conn, secret)
                    copied = await _copy(source, conn, secret)
                    tokens = await _copy_tokens(Path(state_dir), conn)
                    return dataclasses.replace(copied, tokens=tokens)
            except CopyRefused:
                raise
            except Exception as e:
                raise StoreUnavailable(f"copying into the database failed (nothing was "
                                       f"copied): {describe(e)}") from None
    finally:
        source.close()


async def _check_empty(conn: Conn, secret: bytes) -> None:
    for table in ("subscriptions", "deliveries", "runs"):
        r = await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone()
        if r and r[0]:
            raise CopyRefused(f"the target database already has {r[0]} {table}: copy only "
                              "into a database no hookd has used")
    r = await (await conn.execute("SELECT value FROM hookd_meta WHERE key = %s",
                                  (meta.SECRET_KEY,))).fetchone()
    if r is not None and bytes(r[0]) != secret:
        raise CopyRefused("the target database has another server secret (a replica "
                          "started on it already): copy only into a database no hookd has used")


async def _copy(source: sqlite3.Connection, conn: Conn, secret: bytes) -> Copied:
    await meta.put_server_secret(conn, secret, replace=True)
    counts = []
    for table, columns, select in (
        ("subscriptions", SUBSCRIPTION_COLUMNS, SUBSCRIPTION_COLUMNS),
        # A delivery left running by the stopped daemon runs again (resuming its run).
        ("deliveries", _DELIVERY_COLUMNS, _DELIVERY_COLUMNS.replace(
            " status,", " CASE status WHEN 'running' THEN 'queued' ELSE status END,")),
        ("runs", RUN_COLUMNS, RUN_COLUMNS),
        ("run_steps", "run_id, " + STEP_COLUMNS, "run_id, " + STEP_COLUMNS),
    ):
        counts.append(await _copy_table(source, conn, table, columns,
                                        f"SELECT {select} FROM {table}"))
    # The dedup window: each delivery id once, with its first delivery.
    keys = await _copy_table(
        source, conn, "dedup_keys", "key, delivery_id, seen_at",
        "SELECT dedup_key, min(id), min(received_at) FROM deliveries"
        " WHERE dedup_key IS NOT NULL GROUP BY dedup_key")
    return Copied(counts[0], counts[1], counts[2], counts[3], keys)


async def _copy_tokens(state_dir: Path, conn: Conn) -> int:
    """The OAuth tokens `hookd connect` stored in ``STATE/oauth/`` (one JSON per connection)."""
    from hookd.store.tokens import FileTokenStore

    files = FileTokenStore(state_dir)
    n = 0
    for path in sorted(files.directory.glob("*.json")) if files.directory.is_dir() else []:
        tokens = files.get(path.stem)
        if tokens is not None:
            await conn.execute("INSERT INTO oauth_tokens (connection, tokens) VALUES (%s, %s)",
                               (path.stem, json.dumps(tokens.to_json())))
            n += 1
    return n


async def _copy_table(source: sqlite3.Connection, conn: Conn, table: str, columns: str,
                      select: str) -> int:
    n = 0
    cur = conn.cursor()
    async with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in source.execute(select):
            await copy.write_row(tuple(bytes(v) if isinstance(v, memoryview) else v
                                       for v in row))
            n += 1
    return n

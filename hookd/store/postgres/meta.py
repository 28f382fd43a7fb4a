"""The server secret, in the database: every replica derives the same callback tokens.

With SQLite the secret is a file in the state directory; replicas each have their own
state directory, so here it is a row that the first replica to start creates (``ON
CONFLICT DO NOTHING``: replicas starting together agree on one) and the others read.
"""

from __future__ import annotations

import secrets

from hookd.store.postgres.connection import Conn

SECRET_KEY = "server_secret"
SECRET_BYTES = 32  # as hookd.subscriptions.tokens makes them


class SecretMismatch(Exception):
    """The database already holds a different server secret."""


async def load_or_create_server_secret(conn: Conn) -> bytes:
    """The database's server secret, created once (atomically) if it has none."""
    return await put_server_secret(conn, secrets.token_bytes(SECRET_BYTES), replace=False)


async def put_server_secret(conn: Conn, value: bytes, *, replace: bool) -> bytes:
    """Store `value` unless a secret is there already; returns the secret now stored.

    With ``replace=False`` an existing secret wins (a second replica's start); `hookd store
    copy` passes ``replace=True`` only into a database that has no subscriptions yet.
    """
    if len(value) != SECRET_BYTES:
        raise ValueError(f"a server secret has {SECRET_BYTES} bytes, not {len(value)}")
    conflict = "DO UPDATE SET value = EXCLUDED.value" if replace else "DO NOTHING"
    await conn.execute(
        f"INSERT INTO hookd_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) {conflict}",
        (SECRET_KEY, value))
    row = await (await conn.execute(
        "SELECT value FROM hookd_meta WHERE key = %s", (SECRET_KEY,))).fetchone()
    assert row is not None  # just written, in this transaction or a committed one
    return bytes(row[0])

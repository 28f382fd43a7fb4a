"""OAuth tokens in PostgreSQL: `hookd connect` on any host makes them every replica's.

`hookd.store.tokens.TokenStore` is synchronous and called rarely (the upstream client
caches tokens and comes here to load or to store a refresh), so each call is one short
connection and one statement; a put commits (``synchronous_commit = on``) before it
returns, so a rotated refresh token is never only in memory.
"""

from __future__ import annotations

import json

import psycopg

from hookd.oauth.tokens import TokenSet
from hookd.store.postgres.connection import SESSION_SETTINGS, StoreUnavailable, describe


class PgTokenStore:
    """`TokenStore` in the ``oauth_tokens`` table (schema version 2)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            raise StoreUnavailable(f"reading OAuth tokens: {describe(e)}") from None
        for name, value in SESSION_SETTINGS.items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        return conn

    def get(self, connection: str) -> TokenSet | None:
        with self._connect() as conn:
            row = conn.execute("SELECT tokens FROM oauth_tokens WHERE connection = %s",
                               (connection,)).fetchone()
        if row is None:
            return None
        data = json.loads(str(row[0]))
        return TokenSet.from_json(data) if isinstance(data, dict) else None

    def put(self, connection: str, tokens: TokenSet) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO oauth_tokens (connection, tokens) VALUES (%s, %s)"
                " ON CONFLICT (connection) DO UPDATE SET tokens = EXCLUDED.tokens,"
                " updated_at = now()", (connection, json.dumps(tokens.to_json())))

    def delete(self, connection: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM oauth_tokens WHERE connection = %s", (connection,))

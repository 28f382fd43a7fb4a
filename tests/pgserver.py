"""The PostgreSQL server the store tests use: `HOOKD_TEST_POSTGRES_URL` (`.ci/run` starts
one and exports it). Without it those tests skip, saying why; under ``CI=true`` the run
fails instead (`tests/conftest.py`), so CI cannot pass by skipping them."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ENV = "HOOKD_TEST_POSTGRES_URL"


def server_problem(env: Mapping[str, str]) -> str | None:
    """Why the tests cannot use a PostgreSQL server, or None when they can."""
    url = env.get(ENV, "")
    if not url:
        return f"{ENV} is not set (.ci/run starts PostgreSQL and sets it)"
    try:
        with psycopg.connect(url, connect_timeout=5):
            return None
    except psycopg.Error as e:
        # The message names host and port, never the password.
        return f"{ENV} is set but PostgreSQL does not answer: {str(e).strip()}"


def with_database(url: str, name: str) -> str:
    """`url` with its database replaced by `name`."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def create_database(url: str) -> str:
    """A new, empty database on `url`'s server; returns its URL."""
    name = f"hookd_t_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(url, name)


def drop_database(url: str, database_url: str) -> None:
    """Drop the database of `database_url` (disconnecting whoever is still on it)."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

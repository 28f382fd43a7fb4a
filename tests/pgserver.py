"""The PostgreSQL server the store tests use: `HOOKD_TEST_POSTGRES_URL` (`.ci/run` starts
one and exports it). Without it those tests skip, saying why; under ``CI=true`` the run
fails instead (`tests/conftest.py`), so CI cannot pass by skipping them. The benchmarks
(bench/bench_ingest.py, bench/bench_pipeline.py ``--store postgresql``) use it too: a
fresh database per run, and the server's CPU for it (`ServerCpu`)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
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


def drop_database(url: str, database_url: str, *, within: float = 30.0) -> None:
    """Drop the database of `database_url` (disconnecting whoever is still on it).

    PostgreSQL 15 refuses ``WITH (FORCE)`` to a role without ``pg_signal_backend`` while
    an autovacuum worker is on the database (the worker has no role the caller is a
    member of); the worker leaves within moments, so the drop is tried again until
    `within` seconds have passed. `.ci/postgres` grants the role ``pg_signal_backend``.
    """
    name = urlsplit(database_url).path.lstrip("/")
    deadline = time.monotonic() + within
    while True:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(name)))
            return
        except psycopg.errors.InsufficientPrivilege:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # polling for the autovacuum worker to leave


def server_pids(url: str, database_url: str) -> list[int]:
    """The server processes that work for `database_url`'s database: its sessions, the
    shared background processes (WAL writer, checkpointer, ...) and the postmaster; not
    the sessions of other databases (other tests on the same server)."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(url, autocommit=True) as conn:  # `url`'s database: not counted
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s OR datname IS NULL",
            (name,)).fetchall()
    pids = [int(r[0]) for r in rows]
    if pids:
        parent = _stat(pids[0])
        if parent is not None:
            pids.append(int(parent[1]))  # the postmaster
    return pids


def _stat(pid: int) -> list[str] | None:
    """/proc/`pid`/stat's fields after the command (state, ppid, ...), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process of `pids`."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


class ServerCpu:
    """CPU seconds the PostgreSQL server spent for one database between `start` and
    `stop`: sessions opened in between count whole; one that ended in between is lost
    (a pool keeps its sessions, so a benchmark loses none)."""

    def __init__(self, url: str, database_url: str, *, exclude: Iterable[int] = ()) -> None:
        self.url, self.database_url = url, database_url
        self.exclude = set(exclude)  # the benchmark's own sessions (its progress polls)
        self._before: dict[int, float] = {}

    def _pids(self) -> list[int]:
        return [p for p in server_pids(self.url, self.database_url) if p not in self.exclude]

    def start(self) -> None:
        self._before = cpu_seconds(self._pids())

    def stop(self) -> float:
        after = cpu_seconds(self._pids())
        return sum(cpu - self._before.get(pid, 0.0) for pid, cpu in after.items())

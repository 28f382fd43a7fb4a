"""Open the SQLite state file and keep its schema current.

Each store module declares ``MIGRATIONS: list[Migration]`` for its own tables, numbered
per component; `open_db` applies those not yet recorded in ``schema_migrations``, each in
its own transaction. Migrations are append-only: never edit one that has shipped, add the
next version instead.

The file is created with mode 0600 (it holds per-subscription signing secrets), in WAL
mode with ``synchronous=FULL`` so that a committed transaction survives power loss.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "hookd.db"


@dataclass(frozen=True)
class Migration:
    component: str  # e.g. "subscriptions"
    version: int  # 1, 2, … within the component
    sql: str  # one or more statements


def _all_migrations() -> list[Migration]:
    # Imported here, not at module level: the store modules import this one.
    from hookd.store.sqlite import deliveries, runs, subscriptions

    out: list[Migration] = []
    for module in (subscriptions, deliveries, runs):
        out.extend(getattr(module, "MIGRATIONS", []))
    return out


def wal_path(path: Path) -> Path:
    """The write-ahead log SQLite keeps beside the database file `path`."""
    return path.with_name(path.name + "-wal")


def wal_bytes(path: Path) -> int:
    """The size of `path`'s write-ahead log (0 when there is none)."""
    try:
        return wal_path(path).stat().st_size
    except FileNotFoundError:
        return 0


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection with hookd's pragmas; creates the file 0600 if missing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    conn = sqlite3.connect(
        path, timeout=30.0, isolation_level=None, check_same_thread=check_same_thread
    )
    conn.row_factory = sqlite3.Row
    _wal_mode(conn)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _wal_mode(conn: sqlite3.Connection) -> None:
    """``journal_mode=WAL``, retried: on a new file opened by several processes at once
    (the daemon and its worker child) SQLite answers "locked" at once, without waiting."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


_migrate_lock = threading.Lock()


def migrate(conn: sqlite3.Connection, migrations: Iterable[Migration] | None = None) -> None:
    with _migrate_lock:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " component TEXT NOT NULL, version INTEGER NOT NULL, applied_at REAL NOT NULL,"
            " PRIMARY KEY (component, version))"
        )
        done = {(r[0], r[1]) for r in conn.execute("SELECT component, version FROM schema_migrations")}
        todo = sorted(
            (m for m in (migrations if migrations is not None else _all_migrations())
             if (m.component, m.version) not in done),
            key=lambda m: (m.component, m.version),
        )
        for m in todo:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have applied it since the look above (two starting
                # at once: the daemon and its worker child): the write lock decides.
                if conn.execute("SELECT 1 FROM schema_migrations WHERE component = ? AND"
                                " version = ?", (m.component, m.version)).fetchone():
                    conn.execute("ROLLBACK")
                    continue
                for statement in _split(m.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (m.component, m.version, time.time()),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise


def where_equal(pairs: Iterable[tuple[str, object]]) -> tuple[str, list[object]]:
    """A ``WHERE col = ? AND …`` clause for the pairs whose value is not None, and its args.

    >>> where_equal([("flow", "a"), ("status", None)])
    ('WHERE flow = ?', ['a'])
    """
    clauses: list[str] = []
    args: list[object] = []
    for column, value in pairs:
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args


class immediate_transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection.

    IMMEDIATE takes the write lock up front, so a read-then-update (a claim) cannot
    interleave with another writer's.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _split(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to an existing file (`hookd send` reads the subscriptions
    of a store a running daemon owns, and must never write to it)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


def open_db(state_dir: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) ``state_dir/hookd.db`` with every migration applied."""
    conn = connect(state_dir / DB_NAME, check_same_thread=check_same_thread)
    migrate(conn)
    return conn

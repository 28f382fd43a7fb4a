"""The PostgreSQL schema: numbered migrations, applied once, under a lock, by any replica.

`migrate` runs at every start (and as `hookd migrate`): in one transaction it takes a
transaction-scoped advisory lock, so replicas starting together apply each migration once
and the others wait, then see it done. Migrations are append-only: never edit one that
has shipped, add the next version. A new version only adds (tables, columns with
defaults, indexes), so the replicas still running the previous code keep working during a
rolling upgrade (docs/scale-out.md); but a replica whose code is *older* than the
database's schema refuses to start (`SchemaTooNew`): it would not know what the newer
columns mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from hookd import __version__
from hookd.store.postgres.connection import Conn, StoreUnavailable, describe

# The first key of every advisory lock hookd takes ('hook'); the second says which lock.
LOCK_NAMESPACE = 0x686F6F6B
LOCK_MIGRATIONS = 1
LOCK_LEADER = 2
LOCK_FLOW = 3  # with the flow's hash: claims of a flow with a concurrency limit


@dataclass(frozen=True)
class Migration:
    version: int
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        """
        CREATE TABLE hookd_meta (
            key TEXT PRIMARY KEY,
            value BYTEA NOT NULL
        );
        CREATE TABLE subscriptions (
            id TEXT PRIMARY KEY,
            flow TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            connector TEXT NOT NULL,
            operation TEXT NOT NULL,
            connection TEXT,
            scope TEXT,
            parameters TEXT NOT NULL DEFAULT '{}',
            location TEXT,
            upstream_id TEXT,
            secret TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN
                ('pending', 'active', 'failed', 'deleting', 'orphaned')),
            last_error TEXT,
            verified_at DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX subscriptions_flow ON subscriptions (flow);
        CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            subscription_id TEXT NOT NULL,
            flow TEXT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            headers TEXT NOT NULL,
            body BYTEA NOT NULL,
            event TEXT,
            dedup_key TEXT,
            item INTEGER,
            status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN
                ('queued', 'running', 'done', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            flags TEXT NOT NULL DEFAULT '[]',
            error TEXT,
            updated_at DOUBLE PRECISION NOT NULL,
            lease_owner TEXT,
            lease_until TIMESTAMPTZ
        );
        CREATE INDEX deliveries_queued ON deliveries (flow, id) WHERE status = 'queued';
        CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'running';
        CREATE INDEX deliveries_received ON deliveries (received_at);
        CREATE INDEX deliveries_flow ON deliveries (flow, id);
        -- One row per upstream delivery id (per subscription): the unique key is the
        -- dedup, so two replicas receiving the same redelivery record it once.
        CREATE TABLE dedup_keys (
            key TEXT PRIMARY KEY,
            delivery_id TEXT NOT NULL,
            seen_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX dedup_keys_seen ON dedup_keys (seen_at);
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            delivery_id TEXT NOT NULL,
            flow TEXT NOT NULL,
            status TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 1,
            config_revision TEXT NOT NULL DEFAULT '',
            created_at DOUBLE PRECISION NOT NULL,
            started_at DOUBLE PRECISION,
            finished_at DOUBLE PRECISION,
            error TEXT
        );
        CREATE INDEX runs_delivery ON runs (delivery_id, attempt);
        CREATE INDEX runs_flow ON runs (flow, id);
        CREATE INDEX runs_status ON runs (status, id);
        CREATE INDEX runs_created ON runs (created_at);
        CREATE TABLE run_steps (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            step_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            kind TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 1,
            started_at DOUBLE PRECISION NOT NULL,
            ended_at DOUBLE PRECISION,
            input TEXT,
            output TEXT,
            error TEXT,
            PRIMARY KEY (run_id, step_id)
        );
        CREATE TABLE replicas (
            name TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            version TEXT NOT NULL,
            started_at TIMESTAMPTZ NOT NULL,
            heartbeat_at TIMESTAMPTZ NOT NULL
        )
        """,
    ),
    # OAuth tokens (hookd.store.postgres.tokens): one JSON document per connection.
    Migration(
        2,
        """
        CREATE TABLE oauth_tokens (
            connection TEXT PRIMARY KEY,
            tokens TEXT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """,
    ),
    # Claims read the queue in id order (oldest first) through this index: through the
    # primary key they stepped over every finished delivery kept for retention, each
    # claim (hookd.store.postgres.deliveries, docs/adr/0010-pg-worker-round-trips.md).
    Migration(
        3,
        """
        CREATE INDEX deliveries_claimable ON deliveries (id) WHERE status = 'queued'
        """,
    ),
    # The status page's history reads (hookd.store.postgres.activity): the failed
    # deliveries newest first (queued and running ones have their partial indexes, done
    # ones are most rows), and the failed runs' times for the per-minute chart as an
    # index-only scan. Partial: only a delivery or run that fails pays for them on writes.
    Migration(
        4,
        """
        CREATE INDEX deliveries_failed ON deliveries (id) WHERE status = 'failed';
        CREATE INDEX runs_failed ON runs (id) INCLUDE (created_at) WHERE status = 'failed'
        """,
    ),
)

LATEST = MIGRATIONS[-1].version


class SchemaTooNew(Exception):
    """The database was migrated by a newer hookd than this one."""

    def __init__(self, found: int, known: int, by: str) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"the database's schema is version {found} (migrated by hookd {by}), but this "
            f"hookd {__version__} knows versions up to {known}: upgrade hookd on this replica "
            "before starting it (docs/scale-out.md, \"Rolling upgrades\")"
        )


_CREATE_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY,
        hookd_version TEXT NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
"""


async def migrate(
    conn: Conn,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> list[int]:
    """Apply the migrations the database lacks; returns their versions (none: up to date).

    Raises `SchemaTooNew` when the database is ahead of `migrations`, `StoreUnavailable`
    when the database fails.
    """
    known = migrations[-1].version if migrations else 0
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                               (LOCK_NAMESPACE, LOCK_MIGRATIONS))
            await conn.execute(_CREATE_TABLE)
            found, by = await _current(conn)
            if found > known:
                raise SchemaTooNew(found, known, by)
            applied = []
            for m in migrations:
                if m.version <= found:
                    continue
                await conn.execute(m.sql.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, hookd_version) VALUES (%s, %s)",
                    (m.version, __version__),
                )
                applied.append(m.version)
            return applied
    except psycopg.Error as e:
        raise StoreUnavailable(f"migrating the database failed: {describe(e)}") from None


async def check(
    conn: Conn, migrations: tuple[Migration, ...] = MIGRATIONS
) -> int:
    """The database's schema version, when this code can use it.

    Raises `SchemaTooNew` when the database is ahead, `StoreUnavailable` when it is behind
    (run `hookd migrate`) or unreachable.
    """
    known = migrations[-1].version if migrations else 0
    try:
        exists = await (await conn.execute(
            "SELECT to_regclass('schema_migrations') IS NOT NULL")).fetchone()
        found, by = await _current(conn) if exists and exists[0] else (0, "")
    except psycopg.Error as e:
        raise StoreUnavailable(f"reading the schema version failed: {describe(e)}") from None
    if found > known:
        raise SchemaTooNew(found, known, by)
    if found < known:
        raise StoreUnavailable(
            f"the database's schema is version {found}, this hookd needs {known}: "
            "run `hookd migrate` (or start hookd, which migrates)"
        )
    return found


async def _current(conn: Conn) -> tuple[int, str]:
    row = await (await conn.execute(
        "SELECT version, hookd_version FROM schema_migrations ORDER BY version DESC LIMIT 1"
    )).fetchone()
    return (int(row[0]), str(row[1])) if row else (0, "")

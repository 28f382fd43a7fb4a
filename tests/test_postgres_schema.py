"""The PostgreSQL schema: migrations apply once under concurrency, and code older than the
database refuses to run (hookd.store.postgres.schema)."""

from __future__ import annotations

import asyncio

import pytest

from hookd.store.postgres import connection, schema
from hookd.store.postgres.connection import StoreUnavailable


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_migrate_creates_the_tables_once(postgres_url: str) -> None:
    async def go() -> tuple[list[int], list[int], int]:
        async with await connection.connect(postgres_url) as conn:
            first = await schema.migrate(conn)
            second = await schema.migrate(conn)
            version = await schema.check(conn)
            return first, second, version

    first, second, version = run(go())
    assert first == [m.version for m in schema.MIGRATIONS]
    assert second == []
    assert version == schema.LATEST


def test_replicas_migrating_together_apply_each_migration_once(postgres_url: str) -> None:
    async def one() -> list[int]:
        async with await connection.connect(postgres_url) as conn:
            return await schema.migrate(conn)

    async def go() -> list[list[int]]:
        return list(await asyncio.gather(*(one() for _ in range(5))))

    results = run(go())
    # Exactly one of them applied the migrations; the others waited for its lock and
    # found nothing left to do (without the lock, CREATE TABLE fails in the others).
    assert sorted(map(len, results)) == [0, 0, 0, 0, len(schema.MIGRATIONS)]


def test_code_older_than_the_schema_refuses_with_a_clear_message(postgres_url: str) -> None:
    newer = (*schema.MIGRATIONS, schema.Migration(schema.LATEST + 1, "CREATE TABLE later (x int)"))

    async def go() -> None:
        async with await connection.connect(postgres_url) as conn:
            await schema.migrate(conn, newer)
            with pytest.raises(schema.SchemaTooNew) as info:
                await schema.check(conn)
            message = str(info.value)
            assert f"version {schema.LATEST + 1}" in message
            assert "upgrade hookd on this replica" in message
            with pytest.raises(schema.SchemaTooNew):
                await schema.migrate(conn)

    run(go())


def test_a_database_not_migrated_yet_says_to_run_migrate(postgres_url: str) -> None:
    async def go() -> None:
        async with await connection.connect(postgres_url) as conn:
            with pytest.raises(StoreUnavailable, match="hookd migrate"):
                await schema.check(conn)

    run(go())


def test_sessions_commit_synchronously_whatever_the_server_default(postgres_url: str) -> None:
    async def go() -> str:
        async with await connection.connect(postgres_url) as conn:
            await conn.execute("ALTER DATABASE " + postgres_url.rsplit("/", 1)[1]
                               + " SET synchronous_commit = off")
        async with await connection.connect(postgres_url) as conn:
            row = await (await conn.execute("SHOW synchronous_commit")).fetchone()
            assert row is not None
            return str(row[0])

    assert run(go()) == "on"


def test_an_unreachable_server_is_unavailable_without_the_password() -> None:
    async def go() -> None:
        await connection.connect("postgresql://hookd:topsecret@127.0.0.1:1/hookd")

    with pytest.raises(StoreUnavailable) as info:
        run(go())
    assert "topsecret" not in str(info.value)
    assert "127.0.0.1" in str(info.value)

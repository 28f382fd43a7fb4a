"""OAuth tokens in PostgreSQL: stored by one process (hookd connect), read by every
replica; `open_tokens` picks the store hookd.yaml names (hookd.store.postgres.tokens)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from hookd.config.model import Settings, StoreSetting
from hookd.oauth.tokens import TokenSet
from hookd.store.postgres import connection, schema
from hookd.store.tokens import FileTokenStore, open_tokens


def test_tokens_put_on_one_replica_are_read_on_another(postgres_url: str, tmp_path: Path) -> None:
    async def migrate() -> None:
        async with await connection.connect(postgres_url) as conn:
            await schema.migrate(conn)

    asyncio.run(migrate())
    settings = dataclasses.replace(Settings(public_url="https://h", state_dir=tmp_path / "a"),
                                   store=StoreSetting("postgresql", postgres_url))
    here = open_tokens(settings)
    there = open_tokens(dataclasses.replace(settings, state_dir=tmp_path / "b"))
    assert not isinstance(here, FileTokenStore)
    assert there.get("gh") is None
    here.put("gh", TokenSet(access_token="at-1", refresh_token="rt-1", expires_at=100.0))
    here.put("gh", TokenSet(access_token="at-2", refresh_token="rt-2", expires_at=200.0))
    got = there.get("gh")
    assert got is not None and (got.access_token, got.refresh_token) == ("at-2", "rt-2")
    assert "at-2" not in repr(got)
    there.delete("gh")
    assert here.get("gh") is None
    assert not list(tmp_path.glob("*/oauth"))  # nothing in the state directories
    # SQLite (the default): files in the state directory, as before.
    assert isinstance(open_tokens(Settings(public_url="https://h", state_dir=tmp_path)),
                      FileTokenStore)

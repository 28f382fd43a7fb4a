"""The CLI derives callback URLs from the same server secret as the daemon: the store's
under ``store: postgresql`` (shared by every replica), else the state directory's file.
Reading the state directory's file under PostgreSQL made `hookd plan` and `send` mint
other tokens than the replicas (and `apply` would have replaced every hook)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from hookd import store as stores
from hookd.cli.commands._common import server_secret_for
from hookd.config.model import Settings, StoreSetting
from hookd.subscriptions import tokens


def test_sqlite_reads_the_state_directory_and_creates_only_when_asked(tmp_path: Path) -> None:
    settings = Settings(public_url="https://h", state_dir=tmp_path / "state")
    assert server_secret_for(settings, create=False) is None
    made = server_secret_for(settings, create=True)
    assert made is not None and made == tokens.load_or_create_server_secret(tmp_path / "state")
    assert server_secret_for(settings, create=False) == made


def test_postgresql_uses_the_stores_secret_not_the_state_directorys(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = dataclasses.replace(Settings(public_url="https://h", state_dir=tmp_path / "state"),
                                   store=StoreSetting("postgresql", postgres_url))
    local = tokens.load_or_create_server_secret(tmp_path / "state")  # a replica's own file

    async def the_stores() -> bytes:
        store = stores.open(settings, role="cli")
        await store.start()
        try:
            return await store.server_secret()
        finally:
            await store.aclose()

    shared = asyncio.run(the_stores())
    assert shared != local
    assert server_secret_for(settings, create=False) == shared
    assert server_secret_for(settings, create=True) == shared

"""Durable state behind one interface: what hookd created upstream, what it received, what
it ran.

- `hookd.store.interface` — the Protocols every caller uses (`Store` and its parts:
  `Subscriptions`, `Inbox`, `DeliveryQueue`, `RunHistory`, `StoreHealth`, `Activity`);
- `hookd.store.records` — the dataclasses that cross it (rows, deliveries, runs);
- `hookd.store.activity` — the records of the history's summaries (the status page's
  ``store.activity``, `hookd.store.interface.Activity`) and what both backends' queries
  of them share (`id_at`, the summary's columns, the list filters);
- `hookd.store.errors` — the domain errors it raises (`NotFound`, `Conflict`, `Gone`,
  `Unavailable`, `Busy`); the HTTP layer and the CLI choose statuses and exit codes;
- `hookd.store.sqlite` — one WAL file in the state directory, the group-commit inbox and
  every PRAGMA (the default);
- `hookd.store.postgres` — one database that several replicas share (``store:
  postgresql://…``); the only package that imports psycopg.

Nothing outside this package imports ``sqlite3`` or holds SQL.

`open(settings)` is the one way in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hookd.store.interface import Mode, Role, Store

if TYPE_CHECKING:
    from hookd.config.model import Settings

__all__ = ["Mode", "Role", "Store", "open"]


def open(  # noqa: A001 - the module's verb: hookd.store.open(settings)
    settings: Settings | Path, *, role: Role = "daemon", mode: Mode = "create",
    clock: Callable[[], float] = time.time, inbox_options: dict[str, Any] | None = None,
) -> Store:
    """The store `settings` name (today: the SQLite file in its ``state_dir``; a bare
    path is a state directory, for commands that have no valid config). Nothing is
    opened before `Store.start` (which callers await first, on the loop that uses the
    store); `mode` ``existing``/``readonly`` raises `hookd.store.errors.NotFound` at once
    when there is no SQLite store yet.
    `inbox_options` tune the SQLite inbox (tests: ``datasync``, ``locked_give_up``)."""
    from hookd.store.sqlite.store import SqliteStore

    if isinstance(settings, Path):
        state_dir, dedup_window = settings, 7 * 86400.0
    else:
        if settings.store.kind == "postgresql":
            return _postgresql(settings, role=role, mode=mode, clock=clock)
        state_dir = Path(settings.state_dir)
        dedup_window = settings.retention.dedup_window
    return SqliteStore(state_dir, role=role, mode=mode, dedup_window=dedup_window,
                       clock=clock, inbox_options=inbox_options)


def _postgresql(settings: Settings, *, role: Role, mode: Mode,
                clock: Callable[[], float]) -> Store:
    """The PostgreSQL backend (`hookd.store.postgres.store.PgStore`, issue 17); the URL (a
    secret reference, usually) is resolved only here."""
    from hookd.store.postgres.store import PgStore, resolve_url

    assert settings.store.url is not None, "store: postgresql without a URL"
    store: Store = PgStore(resolve_url(settings.store.url), role=role, mode=mode,
                           state_dir=Path(settings.state_dir),
                           dedup_window=settings.retention.dedup_window, clock=clock)
    return store

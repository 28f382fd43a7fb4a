"""Store: subscriptions. (Being built; see hookd/store/__init__.py.)"""

from __future__ import annotations

from hookd.store.db import Migration

MIGRATIONS: list[Migration] = []

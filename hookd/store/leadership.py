"""Leadership for a store that only one daemon opens (SQLite): that daemon always leads.

A shared store (PostgreSQL) elects one of its replicas instead
(`hookd.store.postgres.leader`); both satisfy `hookd.store.interface.Leadership`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


class Solo:
    """Leads from `start` on; `on_elected` is called once, on the event loop."""

    def __init__(self, on_elected: Callable[[], Any] | None = None) -> None:
        self.on_elected = on_elected
        self.leading = False
        self.at_start = True

    def start(self) -> None:
        self.leading = True
        if self.on_elected is not None:
            result = self.on_elected()
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)

    async def aclose(self) -> None:
        self.leading = False

"""Group commit of the subscription store's updates during one apply.

A pass records one outcome per plan item; committing each alone would cost one fsync per
hook (1,000 creates, 1,000 fsyncs). Apart from the executor because it is the only part
that owns a task and a queue: the executor only `put`s.
"""

from __future__ import annotations

import asyncio

from hookd.store.interface import Subscriptions
from hookd.store.records import Update


class GroupWriter:
    """Commits store updates in batches: all that arrived while the last commit ran.

    The store runs each commit off the event loop, so the loop keeps sending requests
    meanwhile, and one commit (one fsync) covers every outcome that arrived during the
    last.
    """

    def __init__(self, store: Subscriptions) -> None:
        self.store = store
        self._queue: list[Update] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def put(self, update: Update) -> None:
        self._queue.append(update)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            if self._closing:
                return

    async def flush(self) -> None:
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        await self.store.apply_many(batch)
        self.commits += 1

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()


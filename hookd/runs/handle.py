"""What the daemon holds of a pipeline worker, wherever it runs.

`hookd.runs.worker.Worker` (in this process) and `hookd.runs.worker_process.ProcessWorker`
(a child process) both are one; the daemon starts, pokes and stops it through this
Protocol alone, and the store's wake-up hook (`DeliveryQueue.on_arrival`) calls `poke`.
"""

from __future__ import annotations

from typing import Protocol


class WorkerHandle(Protocol):
    async def start(self) -> None:
        """Open the worker's store and begin taking deliveries."""

    def poke(self) -> None:
        """Look for work now (safe from any thread): deliveries arrived, or the config
        changed."""

    async def stop(self, timeout: float | None = None) -> None:
        """Stop taking work; running steps get up to `timeout` seconds to finish."""

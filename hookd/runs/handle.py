"""What the daemon holds of a pipeline worker, wherever it runs.

`hookd.runs.worker.Worker` (in this process) and `hookd.runs.worker_process.ProcessWorker`
(a child process) both are one; the daemon starts, pokes and stops it through this
Protocol alone, and the store's wake-up hook (`DeliveryQueue.on_arrival`) calls `poke`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hookd.config.model import Config


class ConfigHolder(Protocol):
    """Where a worker reads the current config (the daemon's app state, swapped on reload)."""

    @property
    def config(self) -> Config: ...


# What a worker is given to find the config: a holder, or a callable (tests, the child).
ConfigSource = Callable[[], "Config | None"] | ConfigHolder


class WorkerHandle(Protocol):
    async def start(self) -> None:
        """Open the worker's store and begin taking deliveries."""

    def poke(self) -> None:
        """Look for work now (safe from any thread): deliveries arrived, or the config
        changed."""

    async def stop(self, timeout: float | None = None) -> None:
        """Stop taking work; running steps get up to `timeout` seconds to finish."""

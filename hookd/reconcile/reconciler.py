"""Reconcile: observe the upstreams, plan, and execute the plan — recording every step.

One pass is `Reconciler.reconcile()` = `observe()` → `hookd.subscriptions.plan.plan()` → `apply()`.
`hookd plan` runs the first two and prints; `hookd apply` and the daemon run all three, so
what plan shows is what apply does. This module is the orchestration: the parts are
`hookd.reconcile.observer` (listing), `hookd.reconcile.executor` (apply),
`hookd.reconcile.preview` (what plan shows), `hookd.reconcile.targets` (where a hook is
deleted), `hookd.reconcile.writer` (group commit) and `hookd.reconcile.report`.

Callers pass a loaded, valid `Config` (`load_config` returns None on error, and a broken
config is never reconciled against).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from hookd.config.model import Config, Settings
from hookd.reconcile.executor import Executor
from hookd.reconcile.preview import Preview
from hookd.reconcile.report import Progress, Report
from hookd.store.interface import Subscriptions
from hookd.subscriptions import plan as planning
from hookd.subscriptions.desired import desired_subscriptions
from hookd.upstream.client import Upstream


class Reconciler(Executor, Preview):
    """Reconciles one config against its upstreams; passes never overlap."""

    def __init__(
        self,
        config: Config,
        store: Subscriptions,
        upstream: Upstream,
        server_secret: bytes,
        *,
        concurrency: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.upstream = upstream
        self.server_secret = server_secret
        self.concurrency = max(1, concurrency or config.settings.reconcile.concurrency)
        self.progress = progress
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ entry points

    async def reconcile(self, *, allow_deletes: int | None = None) -> Report:
        async with self._lock:
            the_plan = await self.plan(allow_deletes=allow_deletes)
            return await self.apply(the_plan)

    async def plan(self, *, allow_deletes: int | None = None) -> planning.Plan:
        """Observe and decide; writes nothing."""
        desired = desired_subscriptions(self.config, self.server_secret)
        rows = await self.store.all()
        observed = await self.observe(desired, rows)
        limit = self.config.settings.reconcile.max_deletes if allow_deletes is None \
            else allow_deletes
        return planning.plan(desired, rows, observed, max_deletes=limit,
                             hold_deletes=empty_files_hold(self.config))


def empty_files_hold(config: Config) -> str:
    """Why deletes wait, when a flow file is empty: at start (or in `hookd apply`) there
    is no earlier config to compare with, and a truncated file must not read as "remove
    these flows" (the daemon refuses such a reload outright)."""
    if not config.empty_flow_files:
        return ""
    names = ", ".join(_relative(p, config.directory) for p in config.empty_flow_files)
    return (f"flow file {names} is empty; deletes wait until it has flows again or is "
            "deleted")


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)



async def reconcile_once(
    config: Config,
    store: Subscriptions,
    server_secret: bytes,
    *,
    upstream: Upstream | None = None,
    allow_deletes: int | None = None,
    progress: Progress | None = None,
) -> Report:
    """One pass with an upstream client built from the config's policy (for the daemon)."""
    from hookd.upstream.client import RetryPolicy

    policy = config.settings.reconcile
    own = upstream is None
    client = upstream or with_tokens(
        Upstream(timeout=policy.timeout, retry=RetryPolicy(retries=policy.retries)),
        config.settings)
    try:
        reconciler = Reconciler(config, store, client, server_secret, progress=progress)
        return await reconciler.reconcile(allow_deletes=allow_deletes)
    finally:
        if own:
            await client.aclose()


def with_tokens(upstream: Upstream, where: Settings | Path) -> Upstream:
    """`upstream` taking the access tokens of ``oauth:`` connections from the store of
    `where` (its settings, or a state directory; refreshing them there); the one way
    hookd's clients are given tokens."""
    from hookd.store.tokens import open_tokens
    from hookd.upstream.oauth import attach

    return attach(upstream, open_tokens(where))

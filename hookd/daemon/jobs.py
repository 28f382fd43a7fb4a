"""The daemon's scheduled work: reconcile passes, retries of failed subscriptions,
retention pruning — one at a time each, on the daemon's event loop, and only while this
daemon leads (`Store.leadership`: with SQLite always; with PostgreSQL the one replica
holding the leader lock, so replicas starting together create each hook once). A replica
elected after another's death reconciles at once.

- `Jobs.reconcile(reason)`: one pass at a time; a request during a pass runs one more
  pass after it (coalesced), so a burst of reloads costs two passes, not one each.
- `Jobs.retry_failed`: a failed subscription is retried after RETRY_BASE * 2**n seconds
  (n = failed passes in a row), at most RETRY_MAX, ±20 % (`retry_schedule`, pure); the
  periodic reconcile repairs everything else.
- `Jobs.prune`: retention (`retention.max_age`, `retention.max_runs`) through the store.
- `Jobs.start_scheduler`: apscheduler 3 runs the three, none overlapping itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hookd.daemon import pages, status
from hookd.telemetry import logs

if TYPE_CHECKING:
    from hookd.daemon.lifecycle import Daemon
    from hookd.store.interface import Leadership

log = logging.getLogger("hookd.daemon.lifecycle")

RETRY_BASE, RETRY_MAX = 30.0, 1800.0
PRUNE_EVERY = 3600.0  # seconds between run-history prunes (first one after a minute)


class Jobs:
    """The scheduled work of one daemon (see the module docstring)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.next_retry: dict[str, float] = {}  # failed subscription id → when to retry
        self._failed_passes: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._again = False
        self._leadership: Leadership | None = None
        self.last_pass: pages.ReconcilePass | None = None  # the status page shows it
        self.scheduler: Any = None  # once started: when the next pass is due

    # ------------------------------------------------------------------ leadership

    @property
    def leading(self) -> bool:
        return self._leadership is not None and self._leadership.leading

    def start_leading(self) -> None:
        """Campaign to lead; `_elected` runs each time this daemon becomes the leader."""
        assert self.daemon.store is not None
        self._leadership = self.daemon.store.leadership(on_elected=self._elected)
        self._leadership.start()

    async def stop_leading(self) -> None:
        if self._leadership is not None:
            with contextlib.suppress(Exception):
                await self._leadership.aclose()

    def _elected(self) -> None:
        # Elected as it starts (SQLite always is): `reconcile.on_start` says whether to
        # reconcile. Elected later, it takes over from a leader that died: at once.
        assert self._leadership is not None
        at_start = self._leadership.at_start
        if at_start and not self.daemon.config.settings.reconcile.on_start:
            return
        self.daemon._spawn(self.reconcile("start" if at_start else "elected"), "reconcile")

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, reason: str) -> None:
        """One pass at a time; a request during a pass runs one more pass after it.
        Only the leader reconciles."""
        if not self.leading:
            return
        if self._lock.locked():
            self._again = True
            return
        async with self._lock:
            while True:
                self._again = False
                await self._pass(reason)
                if not self._again:
                    break
                reason = "coalesced"

    async def _pass(self, reason: str) -> None:
        from hookd.reconcile import reconciler as reconcile

        d = self.daemon
        assert d.store is not None and d.state is not None
        config = d.config  # the pass works on one config from start to end
        try:
            report = await reconcile.reconcile_once(config, d.store.subscriptions,
                                                    d.server_secret)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("reconcile failed", extra={"reason": reason, "error": str(exc)},
                      exc_info=log.isEnabledFor(logging.DEBUG))
            d.state.metrics.reconcile_results.inc("pass", "error")
            changed = True  # it may have got part of the way
            self.last_pass = pages.ReconcilePass(time.time(), reason, False, error=str(exc))
        else:
            changed = any(o.action != "keep" or o.result != "ok" for o in report.outcomes)
            counts: dict[str, int] = {}
            for o in report.outcomes:
                counts[f"{o.action}:{o.result}"] = counts.get(f"{o.action}:{o.result}", 0) + 1
                d.state.metrics.reconcile_results.inc(str(o.action), str(o.result))
            self.last_pass = pages.ReconcilePass(time.time(), reason, report.ok,
                                                 pages.outcome_summary(counts))
            log.info("reconciled", extra={
                "reason": reason, "revision": d.revision, "ok": report.ok,
                "seconds": round(report.duration, 3), "outcomes": counts,
                **({"warnings": list(report.plan.warnings)} if report.plan.warnings else {}),
            })
        if changed:
            # Route callbacks of subscriptions created or removed. Rebuilding the routes
            # costs time per flow, so a pass that kept everything as it was skips it.
            await d.state.refresh()
        await self._schedule_retries()
        d.notifier.status(d.summary())

    async def _schedule_retries(self) -> None:
        from hookd.subscriptions import tokens

        d = self.daemon
        rows = await d.read_subscriptions()
        for row in rows:
            # Signing secrets and callback tokens end up in URLs and errors: mask them.
            logs.register_secret(row.secret)
            logs.register_secret(tokens.callback_token(d.server_secret, row.id))
        failing = [r.id for r in rows
                   if status.shown_state(r.status, r.last_error) in status.FAILING_STATES]
        self.next_retry, self._failed_passes = retry_schedule(
            failing, self._failed_passes, time.time(), lambda: random.uniform(0.8, 1.2))

    async def retry_failed(self) -> None:
        """Scheduled: reconcile when a failed subscription's backoff has elapsed."""
        now = time.time()
        if any(at <= now for at in self.next_retry.values()):
            await self.reconcile("retry")

    # ------------------------------------------------------------------ retention

    async def prune(self) -> None:
        """Scheduled, on the leader: drop finished runs and deliveries beyond ``retention``."""
        d = self.daemon
        assert d.store is not None
        if not self.leading:
            return
        retention = d.config.settings.retention
        try:
            pruned = await d.store.runs.prune(max_age=retention.max_age,
                                              max_runs=retention.max_runs)
        except Exception as exc:
            log.error("pruning run history failed", extra={"error": str(exc)})
            return
        if any(pruned.values()):
            log.info("pruned history", extra=pruned)

    # ------------------------------------------------------------------ scheduler

    async def start_scheduler(self) -> Any:
        # Imported on a thread: apscheduler takes ~0.1 s to import, and the listeners are
        # already answering on this loop.
        module = await asyncio.to_thread(importlib.import_module,
                                         "apscheduler.schedulers.asyncio")
        policy = self.daemon.config.settings.reconcile
        scheduler = module.AsyncIOScheduler(job_defaults={
            "max_instances": 1, "coalesce": True, "misfire_grace_time": None})
        scheduler.add_job(self.reconcile, "interval", args=["scheduled"], id="reconcile",
                          seconds=policy.interval, jitter=policy.interval * policy.jitter)
        scheduler.add_job(self.retry_failed, "interval", id="retry", seconds=15, jitter=5)
        first_prune = time.time() + 60
        scheduler.add_job(self.prune, "interval", id="prune", seconds=PRUNE_EVERY,
                          jitter=PRUNE_EVERY / 10,
                          next_run_time=datetime.fromtimestamp(first_prune, UTC))
        scheduler.start()
        self.scheduler = scheduler
        return scheduler


def retry_schedule(
    failing: list[str], passes: dict[str, int], now: float, jitter: Callable[[], float]
) -> tuple[dict[str, float], dict[str, int]]:
    """When to retry each failing subscription, after the pass that found it failing.

    `passes` counts the passes in a row each one has failed; the delay doubles with each
    (RETRY_BASE, at most RETRY_MAX) times `jitter()`. Subscriptions that recovered or are
    gone drop out.

    >>> retry_schedule(["a", "b"], {"b": 3, "gone": 1}, 100.0, lambda: 1.0)
    ({'a': 130.0, 'b': 340.0}, {'a': 1, 'b': 4})
    >>> retry_schedule(["a"], {"a": 20}, 0.0, lambda: 1.0)[0]
    {'a': 1800.0}
    """
    next_at: dict[str, float] = {}
    counts: dict[str, int] = {}
    for sub_id in failing:
        n = passes.get(sub_id, 0)
        counts[sub_id] = n + 1
        next_at[sub_id] = now + min(RETRY_MAX, RETRY_BASE * 2**n) * jitter()
    return next_at, counts

